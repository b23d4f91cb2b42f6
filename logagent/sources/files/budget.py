"""Descriptors and the stat tick: what keeps 10,000 collected files cheap.

- `FdBudget` caps open descriptors at `[agent] max_open_files`: when full, the least
  recently active caught-up file is closed (its tailer keeps identity and offsets and
  reopens it when it changes); when none is idle, a new file waits parked.
- `stat_tick` is the one timer behind inotify for every tailer: each `stat_interval` it
  asks each tailer whether its file changed, instead of a timer per tailer.
- `descriptor_budget` raises the soft RLIMIT_NOFILE so `max_open_files` fits, and
  says what budget really fits when the hard limit is lower.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import resource
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Protocol

from logagent.runtime import metrics

log = logging.getLogger("logagent.budget")


FD_HEADROOM = 256  # sockets, inotify, registry writes, librdkafka: descriptors besides log files


def descriptor_budget(max_open_files: int) -> int:
    """Raise the soft RLIMIT_NOFILE so max_open_files log files fit; the budget that really fits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_open_files + FD_HEADROOM
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit to %d: %s", target, exc)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        budget = max(8, soft - FD_HEADROOM)
        log.warning("open-files limit %d is below max_open_files=%d + %d; collecting with %d descriptors "
                    "(raise LimitNOFILE / ulimit -n)", soft, max_open_files, FD_HEADROOM, budget)
        return budget
    return max_open_files


class Budgeted(Protocol):
    """What FdBudget needs of a tailer."""

    @property
    def evictable(self) -> bool: ...

    def close_idle(self, why: str) -> None: ...


class FdBudget:
    """Caps open descriptors: when full, the least recently active idle tailer is closed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: collections.OrderedDict[int, Budgeted] = collections.OrderedDict()
        # Read when /metrics is rendered: under a descriptor limit every line may open and close a file.
        ref = weakref.ref(self)
        metrics.FILES_OPEN.set_function(lambda: float(len(b._open)) if (b := ref()) is not None else 0.0)

    def acquire(self, tailer: Budgeted) -> bool:
        """A descriptor slot for `tailer`, closing the least recently active caught-up file if
        all are taken; False when every open file still has something to read."""
        if id(tailer) in self._open:
            return True
        if len(self._open) >= self.limit:
            victim = next((t for t in self._open.values() if t is not tailer and t.evictable), None)
            if victim is None:
                return False
            victim.close_idle("max_open_files reached")
        self._open[id(tailer)] = tailer
        return True

    def touch(self, tailer: Budgeted) -> None:
        """`tailer` read bytes: the last its file will be closed for another. Kept in order only from
        half the limit up (below it nothing is closed soon; a move per line is then a cost for nothing)."""
        if len(self._open) * 2 >= self.limit:
            key = id(tailer)
            if key in self._open:
                self._open.move_to_end(key)

    def release(self, tailer: Budgeted) -> None:
        self._open.pop(id(tailer), None)

    @property
    def in_use(self) -> int:
        return len(self._open)


class Ticked(Protocol):
    """What the stat tick needs of a tailer."""

    # Not grown since `quiet_since`, or inotify told of it since `since` (and woke it).
    def tick_may_pass(self, quiet_since: float, since: float) -> bool: ...

    def needs_attention(self) -> bool: ...

    def wake(self) -> None: ...


# A file that has not grown for IDLE_AFTER seconds is stat-checked every IDLE_EVERY-th tick only.
IDLE_AFTER = 5.0
IDLE_EVERY = 5


async def stat_tick(tailers: Callable[[], Iterable[Ticked]], interval: float) -> None:
    """The stat check behind inotify: every `interval`, wake the tailers whose file changed.
    One task and two syscalls per file, instead of a timer per tailer.

    inotify wakes a tailer the moment its file is written; the tick is the net under it.
    Files quiet for IDLE_AFTER seconds are checked on every IDLE_EVERY-th tick (5 s by
    default), as Filebeat backs off on idle files: 1,000 idle files cost a fifth of the stat
    calls, and a change inotify missed is still seen within IDLE_EVERY ticks.

    A file inotify told of since the previous tick was woken for it then: it is checked on
    every IDLE_EVERY-th tick only too (10,000 files written every second cost 2,000 stat
    pairs a second here, not 10,000; issue 23). What inotify cannot tell of a busy file, its
    folder renamed away under it, is still seen within IDLE_EVERY ticks."""
    tick = 0
    last = time.monotonic()
    while True:
        await asyncio.sleep(interval)
        tick += 1
        everyone = tick % IDLE_EVERY == 0
        now = time.monotonic()
        quiet_since = now - max(IDLE_AFTER, IDLE_EVERY * interval)
        since, last = last, now
        for tailer in tailers():
            if not everyone and tailer.tick_may_pass(quiet_since, since):
                continue
            if tailer.needs_attention():
                tailer.wake()
