"""The bounded buffer between sources and the Kafka producer.

An asyncio.Queue of batches whose capacity is counted in messages (`[kafka]
chan_size`). Two full policies, named for who uses them:
- `put` (log lines): waits until there is room; the file on disk is the buffer.
- `offer` (metrics): never waits; returns False when full so the caller drops and counts.
"""

from __future__ import annotations

import asyncio

from logagent.pipeline.batch import Batch
from logagent.runtime import metrics


class BatchQueue:
    """Bounded by message count; a batch larger than the capacity still passes when the queue is empty."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: asyncio.Queue[Batch] = asyncio.Queue()
        self._depth = 0
        self._room = asyncio.Event()
        self._room.set()
        metrics.QUEUE_CAPACITY.set(capacity)
        metrics.QUEUE_DEPTH.set(0)

    @property
    def depth(self) -> int:
        """Messages waiting in the queue."""
        return self._depth

    def _fits(self, n: int) -> bool:
        return self._depth == 0 or self._depth + n <= self.capacity

    async def put(self, batch: Batch) -> None:
        """Queue a batch, waiting while the queue is full (backpressure)."""
        while not self._fits(len(batch)):
            self._room.clear()
            await self._room.wait()
        self._push(batch)

    def offer(self, batch: Batch) -> bool:
        """Queue a batch if it fits now; False (nothing queued) when full."""
        if self._depth + len(batch) > self.capacity:
            return False
        self._push(batch)
        return True

    def _push(self, batch: Batch) -> None:
        self._depth += len(batch)
        metrics.QUEUE_DEPTH.set(self._depth)
        self._items.put_nowait(batch)

    async def get(self) -> Batch:
        batch = await self._items.get()
        self._depth -= len(batch)
        metrics.QUEUE_DEPTH.set(self._depth)
        if self._fits(1):
            self._room.set()
        return batch

    def get_nowait(self) -> Batch | None:
        try:
            batch = self._items.get_nowait()
        except asyncio.QueueEmpty:
            return None
        self._depth -= len(batch)
        metrics.QUEUE_DEPTH.set(self._depth)
        self._room.set()
        return batch

    def empty(self) -> bool:
        return self._depth == 0 and self._items.empty()
