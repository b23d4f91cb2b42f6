"""The bounded buffer between sources and the Kafka producer.

A FIFO of batches whose capacity is counted in messages (`[kafka]
chan_size`). Two full policies, named for who uses them:
- `put` (log lines): waits until there is room; the file on disk is the buffer.
- `offer` (metrics): never waits; returns False when full so the caller drops and counts.
"""

from __future__ import annotations

import asyncio
import collections
import weakref

from logagent.pipeline.batch import Batch
from logagent.runtime import metrics


class BatchQueue:
    """Bounded by message count; a batch larger than the capacity still passes when the queue is empty.

    Producers that wait for room wait in a FIFO, and a `get` wakes the first of them only (which,
    once its batch is in, wakes the next if there is room still): with 10,000 files behind a full
    queue, an Event woke all 10,000 tailers on every get for one of them to fit (O(files) per
    batch: issue 23's latency collapse once the agent fell behind). A new `put` does not overtake
    those already waiting."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: collections.deque[Batch] = collections.deque()
        self._getters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._depth = 0
        self._putters: collections.deque[asyncio.Future[None]] = collections.deque()
        metrics.QUEUE_CAPACITY.set(capacity)
        # Read when /metrics is rendered, not set at every put and get (a lock each, twice a batch).
        ref = weakref.ref(self)
        metrics.QUEUE_DEPTH.set_function(lambda: float(q._depth) if (q := ref()) is not None else 0.0)

    @property
    def depth(self) -> int:
        """Messages waiting in the queue."""
        return self._depth

    def _fits(self, n: int) -> bool:
        return self._depth == 0 or self._depth + n <= self.capacity

    async def put(self, batch: Batch) -> None:
        """Queue a batch, waiting while the queue is full (backpressure), in the order callers came."""
        n = batch.count
        if not self._putters and self._fits(n):
            self.put_nowait(batch)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._putters.append(fut)
        try:
            while True:
                await fut
                if self._fits(n):
                    break
                fut = loop.create_future()
                self._putters.appendleft(fut)  # still first in line
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._wake_putter()  # it was this one's turn: the next one's now
            else:
                try:
                    self._putters.remove(fut)
                except ValueError:
                    pass
            raise
        self.put_nowait(batch)
        if self._depth < self.capacity:
            self._wake_putter()  # room for the next one, perhaps

    def _wake_putter(self) -> None:
        """Wake the first producer still waiting."""
        _wake_first(self._putters)

    def has_room(self) -> bool:
        """A put now would not wait: nobody waits for room and the queue is not full."""
        return not self._putters and self._depth < self.capacity

    def put_nowait(self, batch: Batch) -> None:
        """Queue a batch now, whatever the depth: put() and offer() decide when; a reader that checked
        `has_room()` before reading calls it itself, its batch taken whole, so the queue may pass its
        capacity by this one batch (see tailer.py)."""
        self._depth += batch.count
        self._items.append(batch)
        if self._getters:
            _wake_first(self._getters)

    def offer(self, batch: Batch) -> bool:
        """Queue a batch if it fits now; False (nothing queued) when full."""
        if self._depth + batch.count > self.capacity:
            return False
        self.put_nowait(batch)
        return True

    def _taken(self, batch: Batch) -> None:
        self._depth -= batch.count
        if self._putters and self._fits(1):
            self._wake_putter()

    async def get(self) -> Batch:
        """The oldest batch, waiting for one (consumers waiting are served in the order they came)."""
        items = self._items
        while not items:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    if items:
                        _wake_first(self._getters)  # it was this one's turn: the next one's now
                else:
                    try:
                        self._getters.remove(fut)
                    except ValueError:
                        pass
                raise
        batch = items.popleft()
        self._taken(batch)
        if items and self._getters:
            _wake_first(self._getters)
        return batch

    def get_nowait(self) -> Batch | None:
        """The oldest batch, or None when there is none."""
        if not self._items:
            return None
        batch = self._items.popleft()
        self._taken(batch)
        return batch

    def empty(self) -> bool:
        return self._depth == 0 and not self._items


def _wake_first(waiters: collections.deque[asyncio.Future[None]]) -> None:
    """Wake the first of `waiters` still waiting (a deque with no asyncio.Queue around it: a put and
    a get are a few list operations, not a queue's futures and events each; issue 23)."""
    while waiters:
        fut = waiters.popleft()
        if not fut.done():
            fut.set_result(None)
            return
