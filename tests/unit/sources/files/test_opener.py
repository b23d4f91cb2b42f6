"""opener: the descriptor is judged, not the name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from logagent.errors import NotAllowed, SourceError
from logagent.sources.files import opener
from logagent.sources.files.opener import open_checked


def allow(tmp: Path):  # type: ignore[no-untyped-def]
    return lambda real: real.startswith(str(tmp / "in") + "/")


def test_a_symlink_to_a_file_outside_is_refused_after_opening(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "elsewhere").mkdir()
    secret = tmp_path / "elsewhere" / "shadowfile"
    secret.write_text("root only\n")
    link = tmp_path / "in" / "app.log"
    link.symlink_to(secret)
    with pytest.raises(NotAllowed) as caught:
        open_checked(str(link), allow(tmp_path))
    assert "shadowfile" not in str(caught.value) and "elsewhere" not in str(caught.value)


def test_a_symlink_inside_allowed_paths_is_followed(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    target = tmp_path / "in" / "current.log"
    target.write_text("x\n")
    link = tmp_path / "in" / "app.log"
    link.symlink_to(target)
    fd, st = open_checked(str(link), allow(tmp_path))
    try:
        assert (st.st_dev, st.st_ino) == (target.stat().st_dev, target.stat().st_ino)
    finally:
        os.close(fd)
    with pytest.raises(SourceError, match="cannot open"):
        open_checked(str(link), allow(tmp_path), nofollow=True)


def test_a_file_unlinked_after_opening_is_judged_by_its_last_path(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    f = tmp_path / "in" / "gone.log"
    f.write_text("x\n")
    fd = os.open(f, os.O_RDONLY)
    f.unlink()
    try:
        from logagent.sources.files.opener import opened_path

        assert opened_path(fd, os.fstat(fd)) == str(f)
    finally:
        os.close(fd)


def test_only_regular_files(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    os.mkfifo(tmp_path / "in" / "fifo.log")
    with pytest.raises(SourceError, match="not a regular file"):
        open_checked(str(tmp_path / "in" / "fifo.log"), allow(tmp_path))


def _fd_flags(fd: int) -> int:
    with open(f"/proc/self/fdinfo/{fd}") as info:
        return next(int(line.split()[1], 8) for line in info if line.startswith("flags:"))


def _collected(tmp: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """in/app.log holding `text`, with the opener as the agent starts: O_NOATIME not refused yet."""
    (tmp / "in").mkdir()
    log = tmp / "in" / "app.log"
    log.write_text(text)
    monkeypatch.setattr(opener, "_noatime", opener.NOATIME)
    return log


@pytest.mark.skipif(not opener.NOATIME, reason="O_NOATIME is Linux's")
def test_reading_does_not_touch_the_access_time_of_an_owned_file(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    log = _collected(tmp_path, "a line\n", monkeypatch)  # this test's user owns it
    os.utime(log, (1_000_000_000, 2_000_000_000))  # atime before mtime: a plain read would update it
    fd, _ = open_checked(str(log), allow(tmp_path))
    try:
        assert _fd_flags(fd) & opener.NOATIME
        assert os.pread(fd, 100, 0) == b"a line\n"
        assert os.stat(log).st_atime == 1_000_000_000
    finally:
        os.close(fd)


@pytest.mark.skipif(not opener.NOATIME, reason="O_NOATIME is Linux's")
def test_once_the_kernel_refuses_noatime_files_are_opened_without_it(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    log = _collected(tmp_path, "x\n", monkeypatch)
    real_open = os.open
    tried: list[bool] = []

    def not_the_owner(path: str, flags: int, *args: int) -> int:  # as the kernel answers a non-owner
        tried.append(bool(flags & opener.NOATIME))
        if flags & opener.NOATIME:
            raise PermissionError(1, "Operation not permitted")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", not_the_owner)
    for _ in range(2):
        fd, _ = open_checked(str(log), allow(tmp_path))
        try:
            assert not _fd_flags(fd) & opener.NOATIME
        finally:
            os.close(fd)
    assert tried == [True, False, False]  # refused once: not asked again (one open per file, not two)


def test_an_unreadable_file_is_not_retried_without_noatime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _collected(tmp_path, "x\n", monkeypatch)
    calls: list[int] = []

    def denied(path: str, flags: int, *args: int) -> int:
        calls.append(flags)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(SourceError) as caught:
        open_checked(str(log), allow(tmp_path))
    assert caught.value.reason == "permission_denied" and len(calls) == 1
    assert opener._noatime == opener.NOATIME  # EACCES says nothing of O_NOATIME
