"""opener: the descriptor is judged, not the name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from logagent.errors import NotAllowed, SourceError
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
