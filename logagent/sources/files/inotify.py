"""File events from one inotify descriptor, read on the event loop (Linux).

The descriptor is non-blocking and registered with the loop (`add_reader`): when the kernel has
events, one callback reads everything queued (64 KiB a read, until the descriptor is empty),
parses it with `struct`, and calls each listener once per path named in that burst. No thread:
a file written 20,000 times a second, or 10,000 files written once a second each, cost the loop
one wake-up per burst and a few microseconds per event. (watchdog's observer, still the watcher
where this one cannot start, takes each event through three threads as a Python object; at
10,000 files x 1 line/s those threads held the GIL for a fifth of the time: issue 23.)

The kernel is asked for what is acted on only (WATCH_MASK): writes, mode changes, names created,
deleted or moved, and the folder's own deletion or move; not opens, closes or reads. A watched
folder that is deleted loses its watch (the kernel drops it: IN_IGNORED); so does one that is
moved (its watch would follow it, under the old name); the next subscribe watches whatever the
name holds then. An overflow of the kernel's event queue (IN_Q_OVERFLOW) makes every watched
folder's listeners hear of the folder itself (a scan), and the stat tick sees the files' changes
within its back-off.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import logging
import os
import struct
import sys
from collections.abc import Hashable
from functools import cache

from logagent.sources.files.watcher import FileWatcher

log = logging.getLogger("logagent.watcher")

# <sys/inotify.h>
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000

WRITES = IN_MODIFY | IN_ATTRIB  # events that leave every name as it was
WATCH_MASK = (WRITES | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF
              | IN_ONLYDIR)
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of NUL-padded name)
_LENGTH = struct.Struct("I")  # the header's len alone, at its offset 12
_READ_BYTES = 64 * 1024
_NAMES_CACHED = 65536
# After a burst is read, the descriptor rests this long before the loop listens to it again: when files
# are written all the time (10,000 files once a second each), the next burst then holds the events of
# those milliseconds, read and dispatched in one callback instead of one loop wake-up per event or two.
# A quiet host loses nothing: the first event after a rest is read at once. Each burst also costs the
# loop a fixed ~80 us (the reader removed and added again, the drain task woken, one produce round):
# at 10,000 files 5 ms made ~130 bursts a second, 20 ms makes ~45, for 15 ms more latency at most.
REST_SECONDS = 0.02


@cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc


def inotify_available() -> bool:
    """This is Linux and its C library has inotify_init1."""
    return _libc() is not None


def inotify_add_watch(fd: int, path: bytes, mask: int) -> int:
    """libc's inotify_add_watch (a module function, so tests can make it fail as the kernel does)."""
    libc = _libc()
    assert libc is not None
    return int(libc.inotify_add_watch(fd, path, mask))


def _rm_watch(fd: int, wd: int) -> None:
    libc = _libc()
    if libc is not None:
        libc.inotify_rm_watch(fd, wd)  # EINVAL when the kernel dropped it already: fine


class InotifyWatcher(FileWatcher):
    """One inotify descriptor for all watched folders (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._folders: dict[int, list[str]] = {}  # watch descriptor -> its folders (a symlink: two names)
        self._resting: asyncio.TimerHandle | None = None  # the descriptor rests (REST_SECONDS) until this fires
        # (watch, name) -> ((path, folder), ...) as events name them: a busy file's path is built once,
        # not per event. Cleared whenever a watch changes (_forget_names), and when it reaches
        # _NAMES_CACHED names.
        self._named: dict[tuple[int, bytes], tuple[tuple[str, str], ...]] = {}
        # The same for a write (IN_MODIFY, the event of nearly every line), by the event's own bytes
        # (header and padded name, the cookie 0): one slice and one look-up an event, no parse
        # (issue 23: at 10,000 files x 1 line/s an event's parse was half the callback's own work).
        self._writes: dict[bytes, tuple[tuple[str, str], ...]] = {}

    async def start(self) -> None:
        if self._fd is not None:
            return
        libc = _libc()
        if libc is None:
            raise OSError(errno.ENOSYS, "inotify is not available")
        fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._listen()

    async def stop(self) -> None:
        """Stop watching (every watch goes with the descriptor); safe to call twice."""
        fd, self._fd = self._fd, None
        if self._resting is not None:
            self._resting.cancel()
            self._resting = None
        if fd is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(fd)
            os.close(fd)
        self._watches.clear()
        self._folders.clear()

    def _add(self, folder: str) -> Hashable | None:
        if self._fd is None:
            return None
        wd = inotify_add_watch(self._fd, os.fsencode(folder), WATCH_MASK)
        if wd < 0:
            err = ctypes.get_errno()
            if err in (errno.ENOENT, errno.ENOTDIR):
                return None  # not a folder (yet): the scans poll it
            raise OSError(err, os.strerror(err), folder)
        names = self._folders.setdefault(wd, [])
        if folder not in names:
            names.append(folder)
            self._forget_names()
        return wd

    def _remove(self, folder: str, handle: Hashable) -> None:
        assert isinstance(handle, int)
        names = self._folders.get(handle, [])
        self._forget_names()
        if folder in names:
            names.remove(folder)
        if not names:
            self._folders.pop(handle, None)
            if self._fd is not None:
                _rm_watch(self._fd, handle)

    def _forget_names(self) -> None:
        """The paths events named are built again (a watch changed: a number may name another folder)."""
        self._named.clear()
        self._writes.clear()

    def _forget(self, wd: int) -> None:
        """The kernel dropped this watch (its folder deleted, or moved away): its names have none."""
        self._forget_names()
        for folder in self._folders.pop(wd, []):
            if self._watches.get(folder) == wd:
                del self._watches[folder]

    def _read(self) -> None:
        """The loop's reader callback: every event queued now, then the listeners once per path."""
        fd = self._fd
        if fd is None:
            return
        paths: dict[str, bool] = {}  # in the order first named; True once an event may have changed the name
        folder_of: dict[str, str] = {}  # the folder of each of them
        dropped: list[int] = []
        overflow = False
        while True:
            try:
                buf = os.read(fd, _READ_BYTES)
            except BlockingIOError:
                break
            except OSError as exc:  # EBADF on stop, or something odd: the stat tick carries on
                log.debug("inotify read failed: %s", exc)
                break
            if not buf:
                break
            overflow |= self._parse(buf, paths, folder_of, dropped)
            if len(buf) < _READ_BYTES // 2:
                break  # the kernel gave what it had; the loop calls again when there is more
        for wd in dropped:
            if self._folders.get(wd) and self._fd is not None:
                _rm_watch(self._fd, wd)  # a moved folder's watch
            self._forget(wd)
        if overflow:
            log.warning("inotify event queue overflowed (raise fs.inotify.max_queued_events?): every watched "
                        "folder is scanned")
            for folder in self._watches:
                paths[folder] = True
                folder_of[folder] = os.path.dirname(folder)
        self._dispatch(paths, folder_of)
        if self._fd is not None and self._loop is not None:  # (a listener may have stopped the watcher)
            self._loop.remove_reader(self._fd)
            self._resting = self._loop.call_later(REST_SECONDS, self._listen)

    def _listen(self) -> None:
        """The rest after a burst is over: the loop reads the descriptor again when it has events."""
        self._resting = None
        if self._fd is not None and self._loop is not None:
            self._loop.add_reader(self._fd, self._read)

    def _parse(self, buf: bytes, paths: dict[str, bool], folder_of: dict[str, str], dropped: list[int]) -> bool:
        """The paths named by the events in `buf` into `paths` (and their folders into `folder_of`); True
        when the kernel's queue overflowed."""
        folders = self._folders
        cache = self._named
        writes = self._writes
        unpack = _HEADER.unpack_from
        length_at = _LENGTH.unpack_from
        size = _HEADER.size
        overflow = False
        off, end = 0, len(buf)
        while off < end:
            stop = off + size + length_at(buf, off + 12)[0]
            event = buf[off:stop]
            found = writes.get(event)
            if found is not None:  # a write to a name seen before: nothing more to parse
                for path, folder in found:
                    if path not in paths:
                        paths[path] = False
                        folder_of[path] = folder
                off = stop
                continue
            wd, mask, _cookie, _length = unpack(buf, off)
            name = buf[off + size:stop].rstrip(b"\0")
            off = stop
            if mask & IN_Q_OVERFLOW:
                overflow = True
                continue
            names = folders.get(wd)
            if not names:
                continue  # an event queued before its watch was removed
            if mask & (IN_IGNORED | IN_MOVE_SELF):
                dropped.append(wd)  # forgotten; the next subscribe watches whatever the name holds then
                if mask & IN_IGNORED:
                    continue
            named = bool(mask & ~WRITES)  # a create, delete or move (of the folder, too)
            found = cache.get((wd, name))
            if found is None:
                found = tuple((os.path.join(f, os.fsdecode(name)), f) if name else (f, os.path.dirname(f))
                              for f in names)
                if len(cache) >= _NAMES_CACHED:
                    self._forget_names()
                cache[(wd, name)] = found
            if mask == IN_MODIFY and name:
                if len(writes) >= _NAMES_CACHED:
                    writes.clear()
                writes[event] = found
            for path, folder in found:
                paths[path] = named or paths.get(path, False)
                folder_of[path] = folder
        return overflow
