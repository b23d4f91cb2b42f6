"""Both file watchers (inotify read on the loop, and watchdog's observer, the fallback) on folders in
tmp_path, each test run with each: events reach the listeners of their folder, on the event loop,
with whether the name may have changed; renames name both paths; unsubscribe; a folder that cannot
be watched (missing, the inotify watch limit) keeps nothing and is said once; start and stop are
safe twice and leave no thread. The watch limit is reached by failing inotify_add_watch with ENOSPC
(ours, and under watchdog), so that each watcher's own error path runs."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import struct
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from watchdog.observers import inotify_c

from logagent.sources.files import inotify
from logagent.sources.files.inotify import InotifyWatcher
from logagent.sources.files.watchdog_watcher import WatchdogWatcher
from logagent.sources.files.watcher import FileWatcher
from tests.kit import eventually

WAIT = 5.0  # seconds an event may take through watchdog's threads on a loaded machine


class Heard:
    """A listener: the paths it was called with, and whether every call came on the loop's thread."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.named: list[str] = []  # the paths of events that may have changed what a name leads to
        self.off_loop = 0
        self._loop_thread = threading.get_ident()

    def __call__(self, path: str, named: bool) -> None:
        self.paths.append(path)
        if named:
            self.named.append(path)
        if threading.get_ident() != self._loop_thread:
            self.off_loop += 1

    def __contains__(self, path: object) -> bool:
        return str(path) in self.paths


async def heard(listener: Heard, *paths: Path) -> None:
    await eventually(lambda: all(p in listener for p in paths), timeout=WAIT, what=f"events for {paths}")


def touch(path: Path, text: str = "line\n") -> None:
    with open(path, "a") as f:
        f.write(text)


def listen(watcher: FileWatcher, folder: Path) -> Heard:
    """A new listener of `folder`, which is watched (subscribe() says so)."""
    listener = Heard()
    assert watcher.subscribe(str(folder), listener)
    return listener


async def hears_a_write(watcher: FileWatcher, folder: Path) -> None:
    """The folder is watched: a new listener hears a file written in it."""
    listener = listen(watcher, folder)
    touch(folder / "x.log")
    await heard(listener, folder / "x.log")


async def deleted(watcher: FileWatcher, folder: Path) -> None:
    """The folder, watched, is deleted: its listener hears of it (the folder's own path)."""
    listener = listen(watcher, folder)
    folder.rmdir()
    await heard(listener, folder)


def new_threads(before: set[int]) -> list[str]:
    return [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()
            and not t.name.startswith(("asyncio_", "ThreadPoolExecutor"))]


def inotify_watches() -> int:
    """The inotify watches this process holds, as the kernel counts them."""
    count = 0
    for fd in os.listdir("/proc/self/fdinfo"):
        try:
            with open(f"/proc/self/fdinfo/{fd}") as f:
                count += sum(line.startswith("inotify wd:") for line in f)
        except OSError:  # closed meanwhile
            pass
    return count


def inotify_masks() -> list[int]:
    """The event mask of each inotify watch this process holds, as the kernel keeps it."""
    masks = []
    for fd in os.listdir("/proc/self/fdinfo"):
        try:
            with open(f"/proc/self/fdinfo/{fd}") as f:
                masks += [int(line.split("mask:")[1].split()[0], 16) for line in f if line.startswith("inotify wd:")]
        except OSError:  # closed meanwhile
            pass
    return masks


@pytest.fixture(params=[InotifyWatcher, WatchdogWatcher])
def kind(request: pytest.FixtureRequest) -> type[FileWatcher]:
    """Each watcher class in turn."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def watcher(kind: type[FileWatcher]) -> AsyncIterator[FileWatcher]:
    w = kind()
    await w.start()
    try:
        yield w
    finally:
        await asyncio.wait_for(w.stop(), 10)


@pytest.fixture
def folders(tmp_path: Path) -> Callable[[str], Path]:
    def make(name: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        return path
    return make


# ---- events and their listeners


async def test_events_reach_their_folders_listeners_on_the_loop(watcher: FileWatcher,
                                                                 folders: Callable[[str], Path]):
    a, b = folders("a"), folders("b")
    in_a, in_b = Heard(), Heard()
    assert watcher.subscribe(str(a), in_a)
    assert watcher.subscribe(str(b) + "/", in_b)  # the same folder however it is spelled
    touch(a / "x.log")
    await heard(in_a, a / "x.log")
    touch(b / "y.log")
    await heard(in_b, b / "y.log")
    assert a / "x.log" not in in_b and b / "y.log" not in in_a
    assert in_a.off_loop == 0 and in_b.off_loop == 0


async def test_the_kernel_queues_no_open_close_or_access_events(watcher: FileWatcher,
                                                                folders: Callable[[str], Path]):
    """A logger that opens, appends and closes its file per line: only the write is an event (an
    open, a close or a read would be two or three Python events a line through watchdog's threads)."""
    a = folders("a")
    listen(watcher, a)
    IN_ACCESS, IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE, IN_CLOSE_NOWRITE, IN_OPEN = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20
    IN_MOVE, IN_CREATE, IN_DELETE, IN_DELETE_SELF = 0xC0, 0x100, 0x200, 0x400
    masks = inotify_masks()
    assert len(masks) == 1
    mask = masks[0]
    assert mask & (IN_ACCESS | IN_CLOSE_WRITE | IN_CLOSE_NOWRITE | IN_OPEN) == 0, hex(mask)
    wanted = IN_MODIFY | IN_ATTRIB | IN_MOVE | IN_CREATE | IN_DELETE | IN_DELETE_SELF
    assert mask & wanted == wanted, hex(mask)


async def test_writes_are_told_apart_from_name_changes(watcher: FileWatcher, folders: Callable[[str], Path]):
    """A write leaves every name as it was (the tailer need not look at it); a rename or a delete
    does not (it must)."""
    a = folders("a")
    (a / "app.log").write_text("one\n")
    (a / "other.log").write_text("one\n")
    listener = listen(watcher, a)
    touch(a / "app.log")
    await heard(listener, a / "app.log")
    assert listener.named == []
    os.rename(a / "app.log", a / "app.log.1")
    (a / "other.log").unlink()
    await eventually(lambda: {str(a / n) for n in ("app.log", "app.log.1", "other.log")} <= set(listener.named),
                     timeout=WAIT, what="the rename and the delete as name changes")


async def test_a_mode_change_is_heard(watcher: FileWatcher, folders: Callable[[str], Path]):
    """chmod (IN_ATTRIB): a file made readable again is read at once, not at the next tick."""
    a = folders("a")
    (a / "app.log").write_text("one\n")
    listener = listen(watcher, a)
    os.chmod(a / "app.log", 0o600)
    await heard(listener, a / "app.log")


async def test_a_rename_names_both_paths(watcher: FileWatcher, folders: Callable[[str], Path]):
    """Rotation: the tailer of the old name and the scan for the new one both hear of it."""
    a = folders("a")
    (a / "app.log").write_text("one\n")
    listener = listen(watcher, a)
    os.rename(a / "app.log", a / "app.log.1")
    await heard(listener, a / "app.log", a / "app.log.1")


async def test_a_move_to_another_watched_folder_reaches_both(watcher: FileWatcher,
                                                             folders: Callable[[str], Path]):
    a, old = folders("a"), folders("old")
    (a / "app.log").write_text("one\n")
    in_a, in_old = listen(watcher, a), listen(watcher, old)
    os.rename(a / "app.log", old / "app.log")
    await heard(in_a, a / "app.log")
    await heard(in_old, old / "app.log")


async def test_the_deletion_of_a_watched_folder_reaches_its_listeners(watcher: FileWatcher,
                                                                      folders: Callable[[str], Path]):
    await deleted(watcher, folders("a"))


async def test_a_folder_deleted_and_created_again_is_watched_again(watcher: FileWatcher,
                                                                   folders: Callable[[str], Path]):
    a = folders("a")
    await deleted(watcher, a)
    a.mkdir()
    await hears_a_write(watcher, a)


async def test_every_event_of_successive_bursts_is_delivered(watcher: FileWatcher,
                                                             folders: Callable[[str], Path]):
    a = folders("a")
    listener = listen(watcher, a)
    for burst in range(3):
        paths = [a / f"{burst}-{i}.log" for i in range(50)]
        for path in paths:
            touch(path)
        await heard(listener, *paths)


# ---- subscribe and unsubscribe


async def test_a_listener_subscribed_twice_is_called_once_per_event(watcher: FileWatcher,
                                                                    folders: Callable[[str], Path]):
    a = folders("a")
    twice, once = Heard(), Heard()
    watcher.subscribe(str(a), twice)
    watcher.subscribe(str(a), twice)
    watcher.subscribe(str(a), once)
    touch(a / "x.log")
    await heard(once, a / "x.log")
    assert twice.paths == once.paths  # listeners of one folder are called in the same pass


async def test_an_unsubscribed_listener_hears_nothing_more(watcher: FileWatcher, folders: Callable[[str], Path]):
    a = folders("a")
    gone, stays = Heard(), Heard()
    watcher.subscribe(str(a), gone)
    watcher.subscribe(str(a), stays)
    watcher.unsubscribe(str(a), gone)
    watcher.unsubscribe(str(a), Heard())  # never subscribed: nothing happens
    touch(a / "x.log")
    await heard(stays, a / "x.log")
    assert gone.paths == []


async def test_the_last_unsubscribe_of_a_folder_gives_its_inotify_watch_back(watcher: FileWatcher,
                                                                             folders: Callable[[str], Path]):
    """Watches are a per-user limit (fs.inotify.max_user_watches) shared with every other program."""
    a = folders("a")
    before = inotify_watches()
    first, second = Heard(), Heard()
    watcher.subscribe(str(a), first)
    watcher.subscribe(str(a), second)
    assert inotify_watches() == before + 1
    watcher.unsubscribe(str(a), first)
    assert inotify_watches() == before + 1
    watcher.unsubscribe(str(a), second)
    await eventually(lambda: inotify_watches() == before, timeout=WAIT, what="the watch to be removed")


async def test_a_folder_unsubscribed_by_all_can_be_subscribed_again(watcher: FileWatcher,
                                                                    folders: Callable[[str], Path]):
    a = folders("a")
    first = Heard()
    watcher.subscribe(str(a), first)
    watcher.unsubscribe(str(a), first)
    watcher.unsubscribe(str(a), first)  # twice: nothing happens
    await hears_a_write(watcher, a)
    assert first.paths == []


async def test_a_missing_folder_is_not_watched_and_keeps_no_listener(watcher: FileWatcher, tmp_path: Path):
    """subscribe() == False: the caller polls the folder and keeps nothing to unsubscribe; a listener
    kept anyway would be called (and held) after its runner stopped."""
    later = tmp_path / "later"
    early = Heard()
    assert not watcher.subscribe(str(later), early)
    later.mkdir()
    await hears_a_write(watcher, later)
    assert early.paths == []


# ---- the inotify watch limit


@pytest.fixture
def watch_limit(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Folders (added to the returned set) for which inotify_add_watch fails as at the
    fs.inotify.max_user_watches limit; watchdog turns that errno into its OSError."""
    full: set[str] = set()
    real = inotify_c.inotify_add_watch

    def add_watch(fd: int, path: bytes, mask: int) -> int:
        if os.fsdecode(path) in full:
            ctypes.set_errno(errno.ENOSPC)
            return -1
        return real(fd, path, mask)

    monkeypatch.setattr(inotify_c, "inotify_add_watch", add_watch)
    monkeypatch.setattr(inotify, "inotify_add_watch", add_watch)
    return full


async def test_the_watch_limit_is_one_clear_warning_per_folder_and_the_rest_goes_on(
        watcher: FileWatcher, folders: Callable[[str], Path], watch_limit: set[str],
        caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="logagent.watcher")
    a, b, ok = folders("a"), folders("b"), folders("ok")
    watch_limit.update({str(a), str(b)})
    for _ in range(3):  # every scan asks again
        assert not watcher.subscribe(str(a), Heard())
    assert not watcher.subscribe(str(b), Heard())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert all("inotify watch limit reached" in w and "fs.inotify.max_user_watches" in w for w in warnings)
    assert str(a) in warnings[0] and str(b) in warnings[1]
    # Other folders are still watched.
    await hears_a_write(watcher, ok)
    # Watches freed: the next subscribe watches the folder.
    watch_limit.clear()
    await hears_a_write(watcher, a)


async def test_another_watch_error_is_one_warning_too(watcher: FileWatcher, folders: Callable[[str], Path],
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="logagent.watcher")
    a = folders("a")

    def add_watch(fd: int, path: bytes, mask: int) -> int:
        ctypes.set_errno(errno.ENOMEM)
        return -1

    monkeypatch.setattr(inotify_c, "inotify_add_watch", add_watch)
    monkeypatch.setattr(inotify, "inotify_add_watch", add_watch)
    assert not watcher.subscribe(str(a), Heard())
    assert not watcher.subscribe(str(a), Heard())
    (warning,) = [r.getMessage() for r in caplog.records]
    assert f"cannot watch {a}" in warning and "polling it instead" in warning


# ---- start and stop


async def test_start_and_stop_are_safe_twice_and_leave_no_thread(kind: type[FileWatcher],
                                                                 folders: Callable[[str], Path]):
    before = {t.ident for t in threading.enumerate() if t.ident is not None}
    watches = inotify_watches()
    w = kind()
    await w.stop()  # never started
    await w.start()
    await w.start()  # one observer, not two
    listener = Heard()
    a, b = folders("a"), folders("b")
    assert w.subscribe(str(a), listener) and w.subscribe(str(b), listener)
    touch(a / "x.log")
    await heard(listener, a / "x.log")
    assert bool(new_threads(before)) == (kind is WatchdogWatcher)  # inotify is read on the loop
    await asyncio.wait_for(w.stop(), 10)
    assert new_threads(before) == []  # stopped and joined when stop() returns
    assert inotify_watches() == watches
    await w.stop()


async def test_nothing_is_watched_before_start_or_after_stop_and_a_restart_watches_again(
        kind: type[FileWatcher], folders: Callable[[str], Path]):
    a = folders("a")
    w = kind()
    assert not w.subscribe(str(a), Heard())
    await w.start()
    assert w.subscribe(str(a), Heard())
    await asyncio.wait_for(w.stop(), 10)
    assert not w.subscribe(str(a), Heard())
    await w.start()
    try:
        await hears_a_write(w, a)
    finally:
        await asyncio.wait_for(w.stop(), 10)


# ---- inotify read on the loop: what only it does


async def test_inotify_a_moved_folder_loses_its_watch_and_is_watched_again_by_name(folders: Callable[[str], Path]):
    """Its watch would follow the folder and report its new files under the old name."""
    w = InotifyWatcher()
    await w.start()
    try:
        a = folders("a")
        listener = listen(w, a)
        os.rename(a, a.parent / "a.old")
        await heard(listener, a)
        assert str(a) in listener.named
        await eventually(lambda: not w.watching(str(a)), timeout=WAIT, what="the moved folder's watch dropped")
        a.mkdir()
        await hears_a_write(w, a)
    finally:
        await w.stop()


def test_inotify_an_overflow_makes_every_folder_heard_as_a_name_change(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture):
    """IN_Q_OVERFLOW: events were lost, so every watched folder is scanned (its listeners hear the
    folder itself, as a name change), and it is said. The kernel's bytes come through a pipe here."""
    w = InotifyWatcher()
    a, b = tmp_path / "a", tmp_path / "b"
    in_a, in_b = Heard(), Heard()
    w._watches = {str(a): 1, str(b): 2}
    w._folders = {1: [str(a)], 2: [str(b)]}
    w._listeners.update({str(a): (in_a,), str(b): (in_b,)})
    r, wr = os.pipe()
    os.set_blocking(r, False)
    try:
        w._fd = r
        write = struct.pack("iIII", 1, inotify.IN_MODIFY, 0, 16) + b"x.log".ljust(16, b"\0")
        overflow = struct.pack("iIII", -1, inotify.IN_Q_OVERFLOW, 0, 0)
        os.write(wr, write + overflow)
        w._read()
    finally:
        w._fd = None
        os.close(r)
        os.close(wr)
    assert in_a.paths == [str(a / "x.log"), str(a)]  # the write, then the folder itself
    assert in_a.named == [str(a)] and in_b.paths == [str(b)] == in_b.named
    assert any("overflowed" in r.getMessage() for r in caplog.records)


async def test_inotify_rests_after_a_burst_and_then_hears_all_that_came_meanwhile(folders: Callable[[str], Path],
                                                                                monkeypatch: pytest.MonkeyPatch):
    """issue 23: after a burst the descriptor rests REST_SECONDS (no reader on the loop), and the next
    burst brings, in one callback, every file written meanwhile; a quiet watcher hears at once."""
    monkeypatch.setattr(inotify, "REST_SECONDS", 0.3)
    w = InotifyWatcher()
    await w.start()
    try:
        a = folders("a")
        listener = listen(w, a)
        bursts: list[int] = []
        real = w._dispatch

        def dispatch(paths: dict[str, bool], folders: dict[str, str] | None = None) -> None:
            bursts.append(len(paths))
            real(paths, folders)

        monkeypatch.setattr(w, "_dispatch", dispatch)
        touch(a / "first.log")
        await heard(listener, a / "first.log")
        assert w._resting is not None  # resting now: the loop does not read the descriptor
        for i in range(20):
            touch(a / f"f{i}.log")
        await asyncio.sleep(0.1)
        assert not any(f"f{i}" in p for p in listener.paths for i in range(20))  # still resting
        await heard(listener, *(a / f"f{i}.log" for i in range(20)))
        assert bursts[:2] == [1, 20]  # the 20 files in one burst
        assert listener.off_loop == 0
    finally:
        await w.stop()
    assert w._resting is None


async def test_inotify_a_folder_watched_under_a_second_name_is_heard_under_both(tmp_path: Path):
    """The paths an event names are kept per (watch, name): a name added to a watch since is heard too."""
    real = tmp_path / "real"
    real.mkdir()
    alias = tmp_path / "alias"
    alias.symlink_to(real)
    w = InotifyWatcher()
    await w.start()
    try:
        in_real = listen(w, real)
        touch(real / "x.log")
        await heard(in_real, real / "x.log")
        in_alias = listen(w, alias)  # the same folder, so the same watch: a second name for it
        touch(real / "x.log")
        await heard(in_alias, alias / "x.log")
        assert in_real.paths.count(str(real / "x.log")) == 2
    finally:
        await w.stop()


async def test_inotify_a_write_to_a_name_seen_before_is_not_parsed_again(folders: Callable[[str], Path],
                                                                          monkeypatch: pytest.MonkeyPatch):
    """issue 23: a write event whose bytes (watch, mask, padded name) came before is looked up whole; only
    other events are parsed. Name changes are parsed still and heard as such, and a watch that changes
    (another folder subscribed) makes every event parsed again."""
    parsed: list[int] = []
    real = inotify._HEADER

    class Counted:
        size = real.size

        @staticmethod
        def unpack_from(buf: bytes, off: int) -> tuple[int, ...]:
            parsed.append(off)
            return real.unpack_from(buf, off)

    monkeypatch.setattr(inotify, "REST_SECONDS", 0.0)
    monkeypatch.setattr(inotify, "_HEADER", Counted)
    w = InotifyWatcher()
    await w.start()
    try:
        a = folders("a")
        listener = listen(w, a)
        log = a / "x.log"
        for i in range(1, 4):
            touch(log)
            await eventually(lambda i=i: listener.paths.count(str(log)) == i, timeout=WAIT, what=f"write {i}")
        # The file's creation (IN_CREATE, its own event) and its first write were parsed; no write since.
        assert len(parsed) == 2 and listener.named == [str(log)]
        log.rename(a / "y.log")
        await heard(listener, a / "y.log")
        assert str(log) in listener.named[1:] and len(parsed) == 4  # the rename's two events, parsed
        listen(w, folders("b"))  # a new watch: the names of every watch are built again
        touch(a / "y.log")
        await eventually(lambda: listener.paths.count(str(a / "y.log")) == 2, timeout=WAIT, what="a write after")
        assert len(parsed) == 5
    finally:
        await w.stop()
