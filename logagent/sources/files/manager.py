"""The tailer manager: turns the desired collect entries into running tailers.

`apply(entries)` diffs the desired set against what runs: new entries start,
removed ones stop (their files close, their saved offsets stay), and an entry
whose topic, module or fields changed is retargeted in place. Each entry has an
`EntryRunner` that finds its files (a path, or a glob expanded off the event loop by
globs.expand), starts a tailer per file and replaces a rotated file's tailer with
one for the new file under the same name.

Two timers serve every entry, however many there are: the stat tick (budget.stat_tick)
for the files, and the scan tick here, which looks again for files an entry does not
collect yet (every `scan_interval`; inotify events in an entry's folders start a scan
at once).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from dataclasses import dataclass

from logagent.config.values import topic_problem
from logagent.errors import AlreadyCollected, NotAllowed, SourceError
from logagent.runtime import metrics
from logagent.runtime.names import display_name
from logagent.runtime.supervise import cancel_and_wait, spawn
from logagent.sources.files.budget import stat_tick
from logagent.sources.files.entry import CollectEntry, glob_regex
from logagent.sources.files.generations import CopyTailer
from logagent.sources.files.globs import AllowedDirs, expand, literal_base
from logagent.sources.files.kubelet import PodMetadata
from logagent.sources.files.pods import expand_topic, identity_fields, is_template, pod_identity
from logagent.sources.files.recovery import FolderIndex, Generation, apply, plan, settled
from logagent.sources.files.registry import RegistryEntry
from logagent.sources.files.shipper import ReaderStatus, Route, Shipper, SourceSpec, TailContext
from logagent.sources.files.tailer import FileTailer
from logagent.sources.files.watcher import FileWatcher

log = logging.getLogger("logagent.manager")
ANNOUNCE_FILES = 100  # per scan, the files whose start is logged at INFO
YIELD_EVERY = 500  # files a scan starts between two turns of the event loop


@dataclass(kw_only=True)
class ManagerContext(TailContext):
    watcher: FileWatcher
    scan_interval: float = 2.0
    max_files_per_entry: int = 10000
    drain_timeout: float = 10.0
    pods: PodMetadata | None = None  # pods' labels from the kubelet ([kubernetes] kubelet_url), else None


class EntryRunner:
    """Runs the tailers of one collect entry."""

    def __init__(self, entry: CollectEntry, ctx: ManagerContext) -> None:
        self.entry = entry
        self.ctx = ctx
        self.route = Route(entry.topic, entry.module, dict(entry.fields) or None)
        self.tailers: dict[str, FileTailer] = {}  # path -> the tailer of its current file
        self.draining: set[Shipper] = set()  # earlier files of a path, read to their end first
        self._last: dict[str, Shipper] = {}  # path -> the newest tailer of its chain of files
        self._tasks: dict[Shipper, asyncio.Task[None]] = {}
        self._folders_index: FolderIndex | None = None
        self._quiet_stamp: tuple[int, int] | None = None  # the glob's folder as of a scan that missed nothing
        self._scan_task: asyncio.Task[None] | None = None
        self._rescan = False
        self._first_scan = False  # start()'s scan runs: a scan asked for meanwhile comes after it
        self._errors: dict[str, str] = {}
        self._labels: set[str] = set()  # the per-file metric labels of the files this entry read
        self._folders: set[str] = set()
        self._walked: list[str] = []  # the folders the last walk of a fixed-depth glob entered
        self._label = metrics.path_label(display_name(entry.path))
        self.stopped = False
        if ctx.pods is not None and entry.format != "plain":
            ctx.pods.subscribe(self._pods_changed)

    # ---- lifecycle

    async def start(self, start_at_end: bool) -> int:
        """The first scan; returns how many files it started. A scan asked for meanwhile (the scan
        tick, inotify) comes after it: run beside it, over a glob of thousands of files, it started
        the files it reached first as files that appeared later (a start = end entry read them from
        their beginnings, and each was planned for earlier files against the whole folder)."""
        self._first_scan = True
        try:
            started = await self.scan(start_at_end and self.entry.start == "end")
        finally:
            self._first_scan = False
        if self._rescan:
            self._rescan = False
            self.request_scan()
        self._recover_vanished()
        return started

    def _recover_vanished(self) -> None:
        """Paths of this entry that are gone now (rotated away, nothing new under the name yet)
        may still owe lines from their earlier files: read those now, not when the name returns."""
        if self.entry.is_glob:
            matcher = glob_regex(self.entry.path)
            paths = [p for p in self.ctx.registry.paths() if matcher.match(p)]
        else:
            paths = [self.entry.path]
        for path in paths:
            if path not in self.tailers and not os.path.lexists(path):
                for copy in self._recover(path, self._spec())[0]:
                    self._run(copy)

    def _spec(self) -> SourceSpec:
        return SourceSpec(self.entry.encoding, self.entry.multiline, self.entry.format)

    async def stop(self, drain: float = 0.0) -> None:
        """Stop every tailer of this entry and close its files; safe to call twice.

        With `drain`, wait up to that long for Kafka to acknowledge what was already read,
        so a restart from the acknowledged offsets sends nothing twice.
        """
        self.stopped = True
        if self._scan_task is not None:
            await cancel_and_wait([self._scan_task])
            self._scan_task = None
        reading: list[Shipper] = list(self.tailers.values()) + list(self.draining)
        await cancel_and_wait(list(self._tasks.values()))
        deadline = asyncio.get_running_loop().time() + drain
        while any(t.unacked for t in reading) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for tailer in reading:
            if isinstance(tailer, FileTailer) and tailer.owes:
                # Rotated away and not all acknowledged: once our descriptor is closed the spool is
                # the only copy a restart can find (the file may be compressed or deleted by then).
                await tailer.protect()
        for tailer in reading:
            tailer.close()
        self.tailers.clear()
        self.draining.clear()
        self._last.clear()
        self._tasks.clear()
        if self.ctx.pods is not None:
            self.ctx.pods.unsubscribe(self._pods_changed)
        for folder in self._folders:
            self.ctx.watcher.unsubscribe(folder, self._on_event)
        self._folders.clear()

    @property
    def problems(self) -> list[str]:
        """The problems of this entry's files (one line each, as logged), until each is solved."""
        return list(self._errors.values())

    def behind(self) -> int:
        """Bytes in this entry's open files that Kafka has not acknowledged (a stat per file)."""
        total = 0
        for tailer in list(self.tailers.values()) + [t for t in self.draining if isinstance(t, FileTailer)]:
            if tailer.fd is None and tailer.rotated:
                continue  # its name is another file's now
            try:
                size = os.fstat(tailer.fd).st_size if tailer.fd is not None else os.stat(tailer.path).st_size
            except OSError:
                continue
            total += max(0, size - tailer.acked)
        return total

    def retarget(self, entry: CollectEntry) -> None:
        """New topic/module/fields from the next batch on; files stay open at their offsets."""
        self.entry = entry
        self.route = Route(entry.topic, entry.module, dict(entry.fields) or None)
        for tailer in list(self.tailers.values()) + list(self.draining):
            tailer.retarget(self._route_for(tailer.path) or tailer.route)
        log.info("retargeted %s -> topic %s", display_name(entry.path), entry.topic)

    # ---- a container log's messages: the pod's identity, its topic, its labels

    def _route_for(self, path: str) -> Route | None:
        """Where a file's lines go. For a container log under the kubelet's layout, its messages carry
        the pod's identity (and labels, when the kubelet gives them), and a topic template is filled
        in from it; None (said and counted under the entry) when the topic cannot be had."""
        entry = self.entry
        if entry.format == "plain":
            return self.route
        identity = pod_identity(path)
        if identity is None:
            if is_template(entry.topic):
                self._report(path, f"{display_name(path)}: not a pod's log path (<namespace>_<pod>_<uid>/<container>/"
                                   f"<n>.log) to fill topic template {entry.topic!r} in; not collected", "bad_topic")
                return None
            return self.route
        topic = expand_topic(entry.topic, identity)
        problem = topic_problem(topic)
        if problem is not None:
            self._report(path, f"{display_name(path)}: topic template {entry.topic!r} gives {problem}; not collected",
                         "bad_topic")
            return None
        pods = self.ctx.pods
        meta = pods.get(identity.pod_uid) if pods is not None else None
        kube = identity_fields(identity, meta.labels if meta is not None else None,
                               meta.annotations if meta is not None and pods is not None and pods.settings.annotations
                               else None)
        return Route(topic, entry.module, {**entry.fields, "kubernetes": kube})

    def _await_pod(self, tailer: Shipper) -> None:
        """A pod the kubelet has not listed yet: its file's first line waits for the next list."""
        pods = self.ctx.pods
        identity = pod_identity(tailer.path) if pods is not None and self.entry.format != "plain" else None
        if pods is None or identity is None or pods.known(identity.pod_uid):
            return

        async def prepare() -> None:
            if await pods.wait_for(identity.pod_uid) is not None:
                tailer.retarget(self._route_for(tailer.path) or tailer.route)

        tailer.prepare = prepare

    def _pods_changed(self, uids: set[str]) -> None:
        """The kubelet listed new or changed labels: the files of those pods carry them from now on."""
        for tailer in list(self.tailers.values()) + list(self.draining):
            identity = pod_identity(tailer.path)
            if identity is not None and identity.pod_uid in uids:
                tailer.retarget(self._route_for(tailer.path) or tailer.route)

    # ---- discovery

    def _folder_stamp(self) -> tuple[int, int] | None:
        """For a glob whose only wildcards are in its last component: its folder's change stamp.
        While it stays the same and every match runs, no file can have appeared: no walk. None
        (walk) while the folder changed within QUIET_NS: its stamps tick with a coarse clock, and a
        file made in the tick of a walk would leave them as they were."""
        pattern = self.entry.path
        folder = os.path.dirname(pattern)
        if literal_base(pattern) != folder:
            return None
        try:
            st = os.stat(folder)
        except OSError:
            return None
        stamp = st.st_mtime_ns, st.st_ctime_ns
        return stamp if settled(stamp) else None

    async def _matches(self) -> tuple[list[str], tuple[int, int] | None]:
        """The matches not collected yet, and the glob's folder stamp when it was walked."""
        pattern = self.entry.path
        if not self.entry.is_glob:
            return ([pattern] if pattern not in self.tailers and os.path.lexists(pattern) else []), None
        stamp = self._folder_stamp()
        if stamp is not None and stamp == self._quiet_stamp:
            return [], None
        found = await asyncio.to_thread(expand, pattern, AllowedDirs(self.ctx.allowed_paths),
                                        self.ctx.max_files_per_entry)
        self._walked = found.folders
        if found.problem:
            self._report(pattern, f"glob {display_name(pattern)!r}: {found.problem}", found.reason)
        elif pattern in self._errors:
            del self._errors[pattern]
        # The problems of files no longer matched (deleted, renamed away) are forgotten: in a folder
        # where files with new names come and go, each one that vanished before it could be opened
        # would otherwise stay here for ever (issue 20 item 6).
        matched = set(found.paths)
        for key in [k for k in self._errors if k != pattern and k not in matched]:
            del self._errors[key]
        return [p for p in found.paths if p not in self.tailers], stamp

    def wants_scan(self) -> bool:
        """For the scan tick: a glob may have new matches; a single file only while not collected."""
        return self.entry.is_glob or self.entry.path not in self.tailers

    async def scan(self, start_at_end: bool = False) -> int:
        """Start a tailer for every match not collected yet; returns how many started."""
        self._watch(literal_base(self.entry.path) if self.entry.is_glob else os.path.dirname(self.entry.path))
        started = 0
        self._folders_index = FolderIndex()  # one listing per folder for this pass's recoveries
        self._walked = []
        matches, walked = await self._matches()
        self._watch_walked()
        for n, path in enumerate(matches, 1):
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a glob of 100,000 new files: /metrics and running tailers go on
            if self.stopped:
                break
            if path in self.tailers:
                continue
            started += self._start_tailer(path, start_at_end, announce=started < ANNOUNCE_FILES)
        self._folders_index = None
        # Quiet from now on if this pass walked and left nothing out: every match runs, none refused.
        if walked is not None:
            all_run = all(p in self.tailers for p in matches) and not any(p in self._errors for p in matches)
            self._quiet_stamp = walked if all_run else None
        if started > ANNOUNCE_FILES:
            log.info("%s: %d more files collected (their starts are logged at DEBUG)",
                     display_name(self.entry.path), started - ANNOUNCE_FILES)
        return started

    def request_scan(self) -> None:
        """Scan soon (coalesced: one scan at a time, one more if asked meanwhile)."""
        if self.stopped:
            return
        if self._first_scan or (self._scan_task is not None and not self._scan_task.done()):
            self._rescan = True
            return
        self._scan_task = spawn(f"scan {display_name(self.entry.path)}", "runner", self._scan_passes)

    async def _scan_passes(self) -> None:
        while True:
            self._rescan = False
            await self.scan(False)
            if not self._rescan:
                return

    def _report(self, key: str, problem: str, reason: str, count: bool = True) -> None:
        """Log a problem with a file or the entry once (until it changes), and count it under the
        entry's label (never a resolved name: it may lie outside allowed_paths)."""
        if self._errors.get(key) != problem:
            self._errors[key] = problem
            log.error("%s", problem)
            if count:
                metrics.FILE_ERRORS.labels(self._label, reason).inc()

    def _start_tailer(self, path: str, start_at_end: bool, announce: bool = True) -> bool:
        """Start collecting one file; False when it is refused or cannot be opened (reported)."""
        shown = display_name(path)
        # A cheap first look, so an obviously outside file is not even opened. The decision that
        # counts is made on the opened descriptor (opener.open_checked), which no race can fool.
        if not self.ctx.allowed(os.path.realpath(path)):
            self._report(path, f"{shown} (entry {display_name(self.entry.path)!r}) resolves outside "
                               "[agent] allowed_paths (a symlink?); refused", "not_allowed")
            return False
        spec = self._spec()
        route = self._route_for(path)
        if route is None:
            return False
        tailer = FileTailer(path, route, self.ctx, start_at_end, self._on_rotated, spec)
        tailer.origin = self.entry.path
        tailer.announce = announce
        self._await_pod(tailer)
        # The path's history as it was before this file is identified (its first-seen time must not
        # hide the files rotated away just before it), then the file itself, then the earlier files:
        # looked for only once the current one is open, so that a rotation racing this start leaves
        # the file it renamed among the earlier ones, never between the two.
        history = [(k, dataclasses.replace(e)) for k, e in self.ctx.registry.entries_for(path)]  # as they are now
        opened = False
        try:
            tailer.open()
            opened = True
        except AlreadyCollected as exc:
            if exc.holder not in self.draining:  # else: our own rotated file, still being read
                self._report(path, str(exc), exc.reason, count=False)
        except NotAllowed as exc:
            self._report(path, f"{exc} (entry {display_name(self.entry.path)!r})", exc.reason, count=False)
        except SourceError as exc:
            if exc.reason == "missing" and (path in self._last or history):
                # Deleted after a walk listed it, and after its own tailer saw it go (it drains the
                # file, or did: the registry has it). A walk that raced the deletion, not a problem:
                # in a churning folder this was an ERROR for a third of the files, all delivered.
                log.debug("%s: gone since the glob listed it; read by its own tailer", shown)
            else:
                self._report(path, str(exc), exc.reason, count=False)
        current = (tailer.dev, tailer.ino) if opened and tailer.dev else None
        # A path the agent has no entry of: its files rotated since the entry is collected were
        # written while it was collected, before the agent first looked (the kubelet renamed a pod's
        # 0.log meanwhile; a run killed before its first registry write saw app.log, whose lines then
        # went to app.log.1): read them first. Older ones are not the agent's (history, or shipped).
        since = None
        if not history and not start_at_end:
            since = self.ctx.registry.collected_since(self.entry.path)
        earlier, newer = self._recover(path, spec, history, current, since)
        for copy in earlier:
            self._run(copy)  # owed lines of earlier files go out whatever becomes of this one
        if not opened:
            return False  # (newer is empty: files newer than the current one need one to be open)
        if path in self._errors:
            log.info("%s: collecting now", shown)
            del self._errors[path]
        self._chain(path, tailer)
        self.tailers[path] = tailer
        self._watch(os.path.dirname(path))
        self._run(tailer)
        for copy in newer:  # rotated on since the tailer opened its file: read after it
            self._chain(path, copy)
            self._run(copy)
        return True

    def _recover(self, path: str, spec: SourceSpec, history: list[tuple[str, RegistryEntry]] | None = None,
                 current: tuple[int, int] | None = None,
                 unseen_since: float | None = None) -> tuple[list[CopyTailer], list[CopyTailer]]:
        """Tailers for the earlier files of `path` that still hold unread lines (rotated away while
        the agent was stopped, or while it could not keep up), chained oldest first after the
        path's newest tailer; recovery.plan finds them. And, not chained yet, tailers for the files
        found newer than the `current` one (rotation went on after its tailer opened it): the caller
        chains them after that tailer."""
        folders = self._folders_index or FolderIndex()
        route = self._route_for(path)
        if route is None:
            return [], []

        def held(dev: int, ino: int) -> bool:
            return self.ctx.claims.holder((dev, ino)) is not None

        def head_held(dev: int, ino: int) -> bytes | None:
            holder = self.ctx.claims.holder((dev, ino))
            return holder.first_bytes() if isinstance(holder, FileTailer) else None

        found = plan(path, self.ctx.registry, self.ctx.spool, held, folders, self.ctx.registry.owned,
                     known=history, current=current, unseen_since=unseen_since, head_held=head_held)
        gens = apply(found, self.ctx.registry)
        first_seen = self._first_seen_before(current, gens)
        earlier = [c for c in (self._copy_tailer(path, route, spec, g, first_seen.get(id(g))) for g in gens) if c]
        for copy in earlier:
            self._chain(path, copy)
        return earlier, [c for c in (self._copy_tailer(path, route, spec, g) for g in found.later) if c]

    def _copy_tailer(self, path: str, route: Route, spec: SourceSpec, gen: Generation,
                     first_seen: float | None = None) -> CopyTailer | None:
        """A tailer for one generation of `path`, its sources open; None when it cannot be read (said)."""
        copy = CopyTailer(path, route, self.ctx, spec, gen, first_seen=first_seen)
        copy.origin = self.entry.path
        self._await_pod(copy)
        try:
            copy.open()
        except SourceError as exc:
            copy.give_up(exc)
            return None
        self.draining.add(copy)
        return copy

    def _first_seen_before(self, current: tuple[int, int] | None, gens: list[Generation]) -> dict[int, float]:
        """First-seen times for the generations never seen that are read before the file now at the
        path (by id of generation): between the newest known generation's and that file's, in the
        order they were written (just after the newest known one's when that file's entry is older
        than it: its inode number's, first seen by another file). A later recovery orders a path's
        known generations by first-seen time; stamped with the moment they were found, they came
        after the file opened just before them, and a restart before they were read sent that newer
        file's lines first."""
        entry = self.ctx.registry.lookup(*current) if current is not None else None
        unseen = [g for g in gens if g.key is None]
        if entry is None or not unseen:
            return {}
        # Within the second before that file's (a first-seen time is also shown as a date), after every
        # generation of the path first seen before it: the planned ones, and those read by a tailer
        # now (a restart ordered such an earlier file after these, and joined a line one of them
        # ends with to that file's first line).
        older = [e.since for _, e in self.ctx.registry.entries_for(entry.path) if e.uid != entry.uid]
        newest = max([*older, *(g.since for g in gens if g.key is not None)], default=0.0)
        if newest >= entry.since:
            # That file's entry is older than generations it came after: its inode number was first
            # seen (empty) by another file long ago. The files never seen still come after every known
            # generation (a restart must not read them before those, nor join their lines wrongly).
            return {id(g): newest + 0.001 * (i + 1) for i, g in enumerate(unseen)}
        lowest = max(newest, entry.since - 1.0)
        step = (entry.since - lowest) / (len(unseen) + 1)
        return {id(g): entry.since - step * (len(unseen) - i) for i, g in enumerate(unseen)}

    def _chain(self, path: str, tailer: Shipper) -> None:
        """`tailer` reads the newest file of `path`: after the one before it (which hands it a
        container log's line it ends with, still partial)."""
        before = self._last.get(path)
        tailer.after = before
        if before is not None:
            before.successor = tailer
        self._last[path] = tailer

    def _run(self, tailer: Shipper) -> None:
        metrics.FILES_TRACKED.inc()
        self._labels.add(tailer.label)
        def ended(_: asyncio.Task[None]) -> None:
            self._tailer_ended(tailer)

        self._tasks[tailer] = spawn(f"tailer {tailer.name}", "tailer", tailer.run,
                                    before_restart=tailer.rewind, expected=(SourceError,), on_done=ended)

    def _tailer_ended(self, tailer: Shipper) -> None:
        self._tasks.pop(tailer, None)
        if not tailer.reading_done.is_set():
            tailer.close()  # it gave up: the files after it must not wait
        self.draining.discard(tailer)
        if self._last.get(tailer.path) is tailer:
            del self._last[tailer.path]
        if self.tailers.get(tailer.path) is tailer:
            del self.tailers[tailer.path]
            tailer.close()
            self._quiet_stamp = None  # a match no longer runs: the next scan must walk
            self.request_scan()
        metrics.FILES_TRACKED.dec()
        if not self._reads(tailer.path) and not os.path.lexists(tailer.path):
            metrics.forget_path(tailer.label)  # gone, and nothing reads that name: its series go
            self._labels.discard(tailer.label)

    def _reads(self, path: str) -> bool:
        """A reader of this entry has `path`: its current file or an earlier one still draining."""
        return path in self.tailers or any(t.path == path for t in self.draining)

    def forget_metrics(self) -> None:
        """The entry is removed: the per-file series of its files and of the entry itself go."""
        for label in (*self._labels, self._label):
            metrics.forget_path(label)
        self._labels.clear()

    def _on_rotated(self, tailer: FileTailer) -> None:
        if self.tailers.get(tailer.path) is tailer:
            del self.tailers[tailer.path]
            self.draining.add(tailer)
            # A match no longer runs: the next scan walks, whatever the folder's stamp says (the
            # rename may have come in the tick of the last walk: the new file was never opened).
            self._quiet_stamp = None
        self.request_scan()

    def _watch(self, folder: str) -> bool:
        """Subscribe to `folder`'s events; again when the folder was deleted and made anew (its
        watch went with it). Checked on every scan and open: O(1) while the watch stands. True
        when it was not watched before."""
        if not folder or (folder in self._folders and self.ctx.watcher.watching(folder)):
            return False
        if self.ctx.watcher.subscribe(folder, self._on_event):
            self._folders.add(folder)
            return True
        return False

    def _watch_walked(self) -> None:
        """Every folder a fixed-depth glob walked is watched (`/var/log/pods/*/*/*.log`: the pods'
        and the containers' folders), so a file in a new folder (a new pod, a container's restart)
        is picked up at once, not at the next scan tick. A folder newly watched is walked once more:
        a file made in it before its watch stood is not missed. Folders that are gone are dropped."""
        walked = set(self._walked)
        new = False
        for folder in walked:
            new |= self._watch(folder)
        for folder in [f for f in self._folders if f not in walked and not os.path.isdir(f)]:
            self.ctx.watcher.unsubscribe(folder, self._on_event)
            self._folders.discard(folder)
        if new and not self.stopped:
            self.request_scan()

    def _on_event(self, path: str, named: bool) -> None:
        tailer = self.tailers.get(path)
        if tailer is not None:
            tailer.notify(named)
        else:
            self.request_scan()
        for old in self.draining:
            old.wake()


async def scan_tick(runners: dict[str, EntryRunner], interval: float) -> None:
    """Every `interval`, let each entry look for files it does not collect yet. One timer for all
    entries: 10,000 single-file entries cost a dict lookup each, not a task and a timer each."""
    while True:
        await asyncio.sleep(interval)
        for runner in list(runners.values()):
            if runner.wants_scan():
                runner.request_scan()


class TailerManager:
    """Applies the desired set of collect entries."""

    def __init__(self, ctx: ManagerContext) -> None:
        self.ctx = ctx
        self.runners: dict[str, EntryRunner] = {}
        self._lock = asyncio.Lock()
        self._tickers: list[asyncio.Task[None]] = []

    async def apply(self, entries: list[CollectEntry]) -> None:
        """Start, stop and retarget so that exactly `entries` run."""
        async with self._lock:
            if not self._tickers:
                self._tickers = [
                    spawn("stat tick", "ticker", lambda: stat_tick(self.tailers, self.ctx.opts.stat_interval)),
                    spawn("scan tick", "ticker", lambda: scan_tick(self.runners, self.ctx.scan_interval))]
            desired = {e.path: e for e in entries}
            removed = [p for p in self.runners if p not in desired]
            # Drained (up to drain_timeout, all at once): what was read is acknowledged before the
            # files close, so an entry put back soon after (a reverted rollout) resumes from offsets
            # that send nothing twice.
            await asyncio.gather(*(self.runners[p].stop(drain=self.ctx.drain_timeout) for p in removed))
            for path in removed:
                self.runners[path].forget_metrics()
                del self.runners[path]
                self.ctx.registry.entry_removed(path)
                log.info("stopped collecting %s", display_name(path))
            new = {path for path in desired if path not in self.runners
                   and not self.ctx.registry.entry_applied(path)}
            if any(desired[path].start == "beginning" for path in new):
                # On disk before any of their files is opened: a run killed in the next instants, before
                # the registry's first write, made the restart take them for new and pass by the files
                # rotated meanwhile (a round of a file lost in 1 of ~40 churn runs). Not for start = end:
                # known as applied, a file without an entry is read from its beginning (its history).
                await self.ctx.registry.persist()
            for path, entry in desired.items():
                runner = self.runners.get(path)
                if runner is None:
                    runner = EntryRunner(entry, self.ctx)
                    self.runners[path] = runner
                    started = await runner.start(start_at_end=path in new)
                    self._announce(entry, started, runner)
                elif runner.entry != entry and runner.entry.same_reading(entry):
                    runner.retarget(entry)
                elif runner.entry != entry:
                    # Encoding or multiline changed: re-open the files from their acknowledged offsets
                    # once what was read is acknowledged (nothing sent twice).
                    await runner.stop(drain=self.ctx.drain_timeout)
                    runner = self.runners[path] = EntryRunner(entry, self.ctx)
                    await runner.start(start_at_end=False)
                    log.info("restarted %s with new reading options", display_name(path))

    @staticmethod
    def _announce(entry: CollectEntry, started: int, runner: EntryRunner) -> None:
        shown = display_name(entry.path)
        if started:
            log.info("collecting %s -> topic %s (%d file%s)", shown, entry.topic, started, "" if started == 1 else "s")
        elif runner.problems:
            log.info("entry %s -> topic %s applied, but no file is collected yet (see the errors above)",
                     shown, entry.topic)
        else:
            log.info("entry %s -> topic %s applied; no file matches yet (collected when one appears)",
                     shown, entry.topic)

    async def stop(self) -> None:
        """Stop every runner; safe to call twice."""
        async with self._lock:
            await cancel_and_wait(self._tickers)
            self._tickers = []
            for runner in list(self.runners.values()):
                await runner.stop()
            self.runners.clear()

    def status(self) -> list[ReaderStatus]:
        """Every reader of every entry (GET /files): the current files, then the earlier ones."""
        out: list[ReaderStatus] = []
        for runner in self.runners.values():
            out.extend(t.status() for t in runner.tailers.values())
            out.extend(t.status() for t in runner.draining)
        return out

    def tailers(self) -> list[FileTailer]:
        """The live files (for the stat tick); earlier files read from copies need no ticks."""
        out: list[FileTailer] = []
        for runner in self.runners.values():
            out.extend(runner.tailers.values())
            out.extend(t for t in runner.draining if isinstance(t, FileTailer))
        return out
