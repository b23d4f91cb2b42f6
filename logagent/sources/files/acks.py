"""Ordered acknowledgements: the one place where "nothing lost" moves a file's offset.

A tailer sends a file's lines as batches, in order. Kafka answers for them in any order
(different partitions' requests, retries). The offset a restart may resume from is the
end of the longest prefix of batches that are all acknowledged: a later batch's success
never moves it past an earlier batch still in flight, or past one that failed.

After a failure the tailer rewinds: `rewind()` drops what is in flight and starts a new
generation; reports for batches of an older generation are stale and change nothing
(those lines are being read again). As Vector's OrderedFinalizer and Filebeat's cursor
updates do, this object only orders; reading and the registry are the tailer's.
"""

from __future__ import annotations

import collections
import enum

from logagent.pipeline.batch import Batch


class Ack(enum.Enum):
    STALE = "stale"  # a report from before a rewind
    FAILED = "failed"  # the first failure since the last rewind: the caller rewinds
    MOVED = "moved"  # the acknowledged offset advanced
    WAITING = "waiting"  # acknowledged, but an earlier batch is still in flight (or failed)


class AckTracker:
    """Batches in flight for one file, in the order they were sent."""

    __slots__ = ("acked", "generation", "failed", "_inflight")

    def __init__(self, acked: int = 0) -> None:
        self.acked = acked
        self.generation = 0
        self.failed: object | None = None  # the error of the first failed batch since the last rewind
        self._inflight: collections.deque[Batch] = collections.deque()

    def sent(self, batch: Batch) -> None:
        """Record a batch as sent (its `generation` must be this tracker's)."""
        self._inflight.append(batch)

    def done(self, batch: Batch) -> Ack:
        """A batch has all its reports (batch.remaining == 0, batch.error set on failure)."""
        if batch.generation != self.generation:
            return Ack.STALE
        if batch.error is not None:
            if self.failed is None:
                self.failed = batch.error
                return Ack.FAILED
            return Ack.WAITING
        inflight = self._inflight
        moved = False
        while inflight and inflight[0].remaining == 0 and inflight[0].error is None:
            self.acked = inflight.popleft().end_offset
            moved = True
        return Ack.MOVED if moved else Ack.WAITING

    def rewind(self, offset: int | None = None) -> int:
        """Forget what is in flight; a new generation starts at the acknowledged offset (or at
        `offset`, which becomes the acknowledged one: a truncated file starts again at 0).
        Returns where reading starts again."""
        self.generation += 1
        self.failed = None
        self._inflight.clear()
        if offset is not None:
            self.acked = offset
        return self.acked

    def holds(self, batch: Batch) -> bool:
        """The batch is still in flight here (not yet acknowledged in order, nor dropped by a rewind)."""
        return batch in self._inflight

    @property
    def pending(self) -> int:
        """Batches sent and not yet acknowledged in order."""
        return len(self._inflight)
