"""A canary's bake: after it applied a rollout's candidate, a host checks itself for `bake` seconds.

The checks (each failure says why, in one line):
- every entry valid: checked before anything is applied (rollout.why_refused): a candidate with an
  entry this host refuses is never applied;
- its topics take a message: the broker's metadata for each topic of the candidate has no error
  (asking creates the topic where the broker auto-creates; a topic it cannot have fails);
- no task crash: no supervised task of the agent crashed during the bake;
- files found where the old configuration found them: an entry whose path the old configuration
  also had, and found files for, finds files now; an entry new in the candidate finds at least
  one file by the end of the bake (an entry that finds nothing is most often a typo).

`judge_files` and `judge_crashes` are pure; `Bake` runs them on the event loop and reports the
outcome to a callback (FleetHost: revert on failure).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from logagent.control.base import EntryHealth, Observed
from logagent.runtime.supervise import spawn

log = logging.getLogger("logagent.fleet")

POLL = 0.5  # seconds between two looks during a bake
MIN_BAKE = 1.0  # at least this long: files need a scan to be found


def judge_files(paths: Sequence[str], before: Mapping[str, EntryHealth], now: Mapping[str, EntryHealth]) -> str | None:
    """Why the candidate's entries (`paths`) do not find files where they should, or None."""
    for path in paths:
        files = now.get(path, EntryHealth()).files
        old = before.get(path)
        if old is not None and old.files > 0 and files == 0:
            return f"{path}: no file found where the old configuration found {old.files}"
        if old is None and files == 0:
            error = now.get(path, EntryHealth()).error
            return f"{path}: the new entry found no file" + (f" ({error})" if error else "")
    return None


def judge_crashes(before: int, now: int) -> str | None:
    if now <= before:
        return None
    return f"{now - before} agent task crash{'es' if now - before > 1 else ''} during the bake"


class Bake:
    """The bake of one rollout on this host; `done(why)` is called once: why None when it passed."""

    def __init__(self, rollout_id: str, group: str, seconds: float, paths: Sequence[str], topics: Sequence[str],
                 before: Mapping[str, EntryHealth], observer: Observed,
                 done: Callable[[str | None], Awaitable[None]]) -> None:
        self.rollout_id, self.group = rollout_id, group
        self.seconds = max(MIN_BAKE, seconds)
        self.paths, self.topics, self.before = list(paths), sorted(set(topics)), dict(before)
        self.observer = observer
        self._done = done
        self._task: asyncio.Task[None] | None = None
        self.started = time.time()

    def start(self) -> None:
        self._task = spawn(f"bake {self.rollout_id}", "fleet_bake", self._run)

    async def cancel(self) -> None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        why = await self._check()
        self._task = None  # done: a cancel from the callback must not cancel this very task
        await self._done(why)

    async def _check(self) -> str | None:
        crashes = self.observer.health().task_crashes
        deadline = time.monotonic() + self.seconds
        # A topic the broker creates on first use says "unknown topic" until it exists: asked again
        # each poll, it fails the bake only if it still has a problem when the bake ends.
        pending: dict[str, str] = dict.fromkeys(self.topics, "not checked yet")
        while True:
            for topic in list(pending):
                problem = await self.observer.topic_problem(topic)
                if problem is None:
                    del pending[topic]
                else:
                    pending[topic] = problem
            why = judge_crashes(crashes, self.observer.health().task_crashes)
            if why is not None:
                return why
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(POLL, max(0.0, deadline - time.monotonic())))
        if pending:
            return "topic check: " + "; ".join(pending.values())
        return judge_files(self.paths, self.before, self.observer.entry_health())
