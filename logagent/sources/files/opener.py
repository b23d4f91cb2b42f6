"""Opening a collected file: the decision is made on what was opened, never on a name.

Anyone who can write in a collected folder can rename, swap and symlink names at any
moment (`renameat2(RENAME_EXCHANGE)` in a loop beats any check-then-open). So a file is
opened first and judged after: the descriptor must be a regular file and the path the
kernel reports for it (`/proc/self/fd/N`) must lie inside `[agent] allowed_paths`;
otherwise it is closed unread. Every open of a collected file goes through
`open_checked` (start, reopen after an idle close, a rotated file found by inode, a
rotated copy found at start).
How a name is shown (and carried in JSON) is runtime/names.py's.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

from logagent.errors import NotAllowed, SourceError
from logagent.runtime.names import display_name

OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
# Reading a file does not change its access time: without it, the first read after each write updates
# the inode (relatime), a journal transaction on ext4 per line of a file written a line at a time. The
# kernel allows it to the file's owner and to root (CAP_FOWNER). An agent refused it once (systemd's
# DynamicUser with CAP_DAC_READ_SEARCH owns no log file) opens without it from then on: not two opens
# per file, one refused.
NOATIME = getattr(os, "O_NOATIME", 0)
_noatime = NOATIME  # 0 once the kernel refused it
_DELETED = " (deleted)"

Allowed = Callable[[str], bool]  # is this resolved path inside [agent] allowed_paths?


def open_error_reason(exc: OSError) -> str:
    """A short metric label for an open/read error."""
    return {errno.ENOENT: "missing", errno.EACCES: "permission_denied", errno.EPERM: "permission_denied",
            errno.ELOOP: "symlink_loop", errno.EISDIR: "is_directory", errno.EMFILE: "too_many_open_files",
            errno.ENFILE: "too_many_open_files"}.get(exc.errno or 0, "io_error")


def opened_path(fd: int, st: os.stat_result) -> str | None:
    """The path the kernel has for an open descriptor, symlinks resolved; None when unknown.

    /proc/self/fd/N names the file that was opened, whatever the name went through. A file
    unlinked since shows " (deleted)" after its last path. Without /proc the resolved name is
    only trusted when it still leads to the very same (device, inode)."""
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    if st.st_nlink == 0 and real.endswith(_DELETED):
        real = real[: -len(_DELETED)]
    return real if real.startswith("/") else None


def _resolved_if_same(name: str, st: os.stat_result) -> str | None:
    """Without /proc: the resolved name, when it still leads to the opened (device, inode); else None."""
    try:
        real = os.path.realpath(name)
        same = os.stat(real)
    except OSError:
        return None
    return real if (same.st_dev, same.st_ino) == (st.st_dev, st.st_ino) else None


def _open(name: str, flags: int) -> int:
    """os.open with NOATIME while the kernel allows it (EPERM: not the file's owner), else without."""
    global _noatime
    if _noatime:
        try:
            return os.open(name, flags | _noatime)
        except PermissionError as exc:
            if exc.errno != errno.EPERM:
                raise  # EACCES: not readable at all
            _noatime = 0
    return os.open(name, flags)


def open_checked(name: str, allowed: Allowed, nofollow: bool = False) -> tuple[int, os.stat_result]:
    """Open `name` for reading and judge the descriptor: a regular file inside allowed_paths.

    Returns (fd, its fstat). Raises SourceError (cannot open, not a regular file) or
    NotAllowed; in both cases nothing stays open. With `nofollow`, a symlink as the last
    component is refused (ELOOP): for names found by inode, which must be the file itself.
    """
    flags = OPEN_FLAGS | (os.O_NOFOLLOW if nofollow else 0)
    shown = display_name(name)
    try:
        fd = _open(name, flags)
    except OSError as exc:
        raise SourceError(f"{shown}: cannot open: {exc.strerror}", reason=open_error_reason(exc)) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(f"{shown}: not a regular file", reason="not_regular_file")
        real = opened_path(fd, st) or _resolved_if_same(name, st)
        if real is None:
            raise NotAllowed(f"{shown}: cannot tell where the opened file lies (no /proc?); refused")
        if not allowed(real):
            # The resolved name is not shown: it may name what lies outside allowed_paths.
            raise NotAllowed(f"{shown}: the opened file lies outside [agent] allowed_paths "
                             "(a symlink or a swapped name); refused")
    except BaseException:
        os.close(fd)
        raise
    return fd, st
