"""The tailer manager: turns the desired collect entries into running tailers.

`apply(entries)` diffs the desired set against what runs: new entries start,
removed ones stop (their files close, their saved offsets stay), and an entry
whose topic, module or fields changed is retargeted in place. Each entry has an
`EntryRunner` that finds its files (a path, or a glob rescanned every
`scan_interval` and on inotify events), starts a tailer per file and replaces a
rotated file's tailer with one for the new file under the same name.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
from dataclasses import dataclass

from . import metrics
from .collect import CollectEntry, path_allowed
from .errors import SourceError
from .queue import BatchQueue
from .registry import Registry
from .supervise import cancel_and_wait, spawn
from .tailer import FdBudget, FileTailer, Route, SourceSpec, TailOptions, stat_tick
from .watcher import FileWatcher

log = logging.getLogger("logagent.manager")
ANNOUNCE_FILES = 100  # per scan, the files whose start is logged at INFO


@dataclass
class ManagerContext:
    opts: TailOptions
    queue: BatchQueue
    registry: Registry
    budget: FdBudget
    watcher: FileWatcher
    allowed_paths: tuple[str, ...]
    scan_interval: float = 2.0
    max_files_per_entry: int = 10000
    drain_timeout: float = 10.0


def _glob_base(pattern: str) -> str:
    """The folder above the first glob character: where new matching files show up."""
    head = pattern
    for i, ch in enumerate(pattern):
        if ch in "*?[":
            head = pattern[:i]
            break
    return os.path.dirname(head.rstrip("/")) if not head.endswith("/") else head.rstrip("/") or "/"


class EntryRunner:
    """Runs the tailers of one collect entry."""

    def __init__(self, entry: CollectEntry, ctx: ManagerContext, claimed: dict[str, "EntryRunner"]) -> None:
        self.entry = entry
        self.ctx = ctx
        self.route = Route(entry.topic, entry.module, dict(entry.fields) or None)
        self._claimed = claimed
        self.tailers: dict[str, FileTailer] = {}
        self.draining: set[FileTailer] = set()
        self._tasks: dict[FileTailer, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._errors: dict[str, str] = {}
        self._folders: set[str] = set()
        self._first_scan = True

    # ---- lifecycle

    async def start(self, start_at_end: bool) -> None:
        self._scan(start_at_end and self.entry.start == "end")
        self._first_scan = False
        self._task = spawn(f"runner {self.entry.path}", "runner", self._loop)

    async def stop(self, drain: float = 0.0) -> None:
        """Stop every tailer of this entry and close its files; safe to call twice.

        With `drain`, wait up to that long for Kafka to acknowledge what was already read,
        so a restart from the acknowledged offsets sends nothing twice.
        """
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        reading = list(self.tailers.values()) + list(self.draining)
        await cancel_and_wait(list(self._tasks.values()))
        deadline = asyncio.get_running_loop().time() + drain
        while any(t.unacked for t in reading) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for tailer in list(self.tailers.values()) + list(self.draining):
            tailer.close()
            if self._claimed.get(tailer.path) is self:
                del self._claimed[tailer.path]
        self.tailers.clear()
        self.draining.clear()
        self._tasks.clear()
        for folder in self._folders:
            self.ctx.watcher.unsubscribe(folder, self._on_event)
        self._folders.clear()

    def retarget(self, entry: CollectEntry) -> None:
        """New topic/module/fields from the next batch on; files stay open at their offsets."""
        self.entry = entry
        self.route = Route(entry.topic, entry.module, dict(entry.fields) or None)
        for tailer in list(self.tailers.values()) + list(self.draining):
            tailer.retarget(self.route)
        log.info("retargeted %s -> topic %s", entry.path, entry.topic)

    # ---- discovery

    def _matches(self) -> list[str]:
        pattern = self.entry.path
        if not self.entry.is_glob:
            return [pattern] if os.path.lexists(pattern) else []
        found = glob.glob(pattern, recursive=True)
        if len(found) > self.ctx.max_files_per_entry:
            self._report(pattern, f"glob matches {len(found)} files; only the first "
                                  f"{self.ctx.max_files_per_entry} are collected", "too_many_files")
            found = sorted(found)[: self.ctx.max_files_per_entry]
        return [p for p in found if p not in self.tailers and not os.path.isdir(p)]

    def _scan(self, start_at_end: bool = False) -> None:
        self._watch(_glob_base(self.entry.path) if self.entry.is_glob else os.path.dirname(self.entry.path))
        started = 0
        for path in self._matches():
            if path in self.tailers:
                continue
            owner = self._claimed.get(path)
            if owner is not None and owner is not self:
                self._report(path, f"already collected by entry {owner.entry.path!r}", "duplicate")
                continue
            started += self._start_tailer(path, start_at_end, announce=started < ANNOUNCE_FILES)
        if started > ANNOUNCE_FILES:
            log.info("%s: %d more files collected (their starts are logged at DEBUG)",
                     self.entry.path, started - ANNOUNCE_FILES)

    def _report(self, path: str, problem: str, reason: str) -> None:
        """Log a problem with a path once (until it changes) and count it."""
        if self._errors.get(path) != problem:
            self._errors[path] = problem
            log.error("%s: %s", path, problem)
            metrics.FILE_ERRORS.labels(metrics.path_label(path), reason).inc()

    def _start_tailer(self, path: str, start_at_end: bool, announce: bool = True) -> bool:
        """Start collecting one file; False when it is refused or cannot be opened (reported)."""
        real = os.path.realpath(path)
        if not path_allowed(real, self.ctx.allowed_paths):
            self._report(path, f"resolves to {real}, outside [agent] allowed_paths; refused", "not_allowed")
            return False
        tailer = FileTailer(path, self.route, self.ctx.opts, self.ctx.queue, self.ctx.registry,
                            self.ctx.budget, start_at_end, self._on_rotated,
                            SourceSpec(self.entry.encoding, self.entry.multiline))
        tailer.announce = announce
        try:
            tailer.open()
        except SourceError as exc:
            self._report(path, str(exc).split(": ", 1)[-1], "open_failed")
            return False
        except OSError as exc:
            self._report(path, f"cannot open: {exc.strerror or exc}", "open_failed")
            return False
        if path in self._errors:
            log.info("%s: collecting now", path)
            del self._errors[path]
        self.tailers[path] = tailer
        self._claimed[path] = self
        metrics.FILES_TRACKED.inc()
        self._watch(os.path.dirname(path))
        self._tasks[tailer] = spawn(f"tailer {path}", "tailer", tailer.run,
                                    before_restart=tailer.rewind,
                                    expected=(SourceError,),
                                    on_done=lambda _, t=tailer: self._tailer_ended(t))
        return True

    def _tailer_ended(self, tailer: FileTailer) -> None:
        self._tasks.pop(tailer, None)
        self.draining.discard(tailer)
        if self.tailers.get(tailer.path) is tailer:
            del self.tailers[tailer.path]
            if self._claimed.get(tailer.path) is self:
                del self._claimed[tailer.path]
            tailer.close()
            self._wake.set()
        metrics.FILES_TRACKED.dec()

    def _on_rotated(self, tailer: FileTailer) -> None:
        if self.tailers.get(tailer.path) is tailer:
            del self.tailers[tailer.path]
            self.draining.add(tailer)
            if self._claimed.get(tailer.path) is self:
                del self._claimed[tailer.path]
        self._wake.set()

    def _watch(self, folder: str) -> None:
        if folder and folder not in self._folders:
            if self.ctx.watcher.subscribe(folder, self._on_event):
                self._folders.add(folder)

    def _on_event(self, path: str) -> None:
        tailer = self.tailers.get(path)
        if tailer is not None:
            tailer.wake()
        else:
            self._wake.set()
        for old in self.draining:
            old.wake()

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.ctx.scan_interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            self._scan(False)


class TailerManager:
    """Applies the desired set of collect entries."""

    def __init__(self, ctx: ManagerContext) -> None:
        self.ctx = ctx
        self.runners: dict[str, EntryRunner] = {}
        self._claimed: dict[str, EntryRunner] = {}
        self._lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None


    async def apply(self, entries: list[CollectEntry]) -> None:
        """Start, stop and retarget so that exactly `entries` run."""
        async with self._lock:
            if self._ticker is None:
                self._ticker = spawn("stat tick", "ticker",
                                     lambda: stat_tick(self.tailers, self.ctx.opts.stat_interval))
            desired = {e.path: e for e in entries}
            for path in [p for p in self.runners if p not in desired]:
                runner = self.runners.pop(path)
                await runner.stop()
                self.ctx.registry.entry_removed(path)
                log.info("stopped collecting %s", path)
            for path, entry in desired.items():
                runner = self.runners.get(path)
                if runner is None:
                    runner = EntryRunner(entry, self.ctx, self._claimed)
                    seen_before = self.ctx.registry.entry_applied(path)
                    self.runners[path] = runner
                    await runner.start(start_at_end=not seen_before)
                    log.info("collecting %s -> topic %s", path, entry.topic)
                elif runner.entry != entry and runner.entry.same_reading(entry):
                    runner.retarget(entry)
                elif runner.entry != entry:
                    # Encoding or multiline changed: re-open the files from their acknowledged offsets
                    # once what was read is acknowledged (nothing sent twice).
                    await runner.stop(drain=self.ctx.drain_timeout)
                    runner = self.runners[path] = EntryRunner(entry, self.ctx, self._claimed)
                    await runner.start(start_at_end=False)
                    log.info("restarted %s with new reading options", path)

    async def stop(self) -> None:
        """Stop every runner; safe to call twice."""
        async with self._lock:
            if self._ticker is not None:
                await cancel_and_wait([self._ticker])
                self._ticker = None
            for runner in list(self.runners.values()):
                await runner.stop()
            self.runners.clear()

    def tailers(self) -> list[FileTailer]:
        out: list[FileTailer] = []
        for runner in self.runners.values():
            out.extend(runner.tailers.values())
            out.extend(runner.draining)
        return out
