"""The bounded buffer between sources and the Kafka producer.

An asyncio.Queue of batches whose capacity is counted in messages (`[kafka]
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
        self._items: asyncio.Queue[Batch] = asyncio.Queue()
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
        n = len(batch)
        if not self._putters and self._fits(n):
            self._push(batch)
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
        self._push(batch)
        if self._depth < self.capacity:
            self._wake_putter()  # room for the next one, perhaps

    def _wake_putter(self) -> None:
        """Wake the first producer still waiting."""
        while self._putters:
            fut = self._putters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def has_room(self) -> bool:
        """A put now would not wait: nobody waits for room and the queue is not full."""
        return not self._putters and self._depth < self.capacity

    def put_nowait(self, batch: Batch) -> None:
        """Queue a batch now, after `has_room()` said so: taken whole, so the queue may pass its
        capacity by this one batch (a reader that checked for room before reading, see tailer.py)."""
        self._push(batch)

    def offer(self, batch: Batch) -> bool:
        """Queue a batch if it fits now; False (nothing queued) when full."""
        if self._depth + len(batch) > self.capacity:
            return False
        self._push(batch)
        return True

    def _push(self, batch: Batch) -> None:
        self._depth += len(batch)
        self._items.put_nowait(batch)

    def _taken(self, batch: Batch) -> None:
        self._depth -= len(batch)
        if self._putters and self._fits(1):
            self._wake_putter()

    async def get(self) -> Batch:
        batch = await self._items.get()
        self._taken(batch)
        return batch

    def get_nowait(self) -> Batch | None:
        try:
            batch = self._items.get_nowait()
        except asyncio.QueueEmpty:
            return None
        self._taken(batch)
        return batch

    def empty(self) -> bool:
        return self._depth == 0 and self._items.empty()
