"""Spool: crash-safe segments of rotated-away bytes, bounded, released as Kafka acknowledges."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from logagent.runtime import metrics
from logagent.sources.files.spool import Spool, SpoolFile


def _file(tmp: Path, data: bytes) -> int:
    p = tmp / "src.log"
    p.write_bytes(data)
    return os.open(p, os.O_RDONLY)


def _spooled(spool: Spool, uid: str = "1-2-3") -> SpoolFile:
    return SpoolFile(uid, spool.root / uid, "/var/log/app.log", 1, 2, "fp", 10, 3.0, 4.0)


def test_copies_are_whole_segments_found_again_after_a_restart(tmp_path: Path) -> None:
    data = b"".join(b"line %05d\n" % i for i in range(1000))
    fd = _file(tmp_path, data)
    spool = Spool(tmp_path / "data", max_bytes=1 << 20)
    spooled = _spooled(spool)
    assert asyncio.run(spool.copy(spooled, fd, 100, 5000)) == 5000
    assert asyncio.run(spool.copy(spooled, fd, 5000, len(data))) == len(data)
    spool.close()
    os.close(fd)
    (spooled.folder / f"{len(data):020d}-{len(data) + 50:020d}.tmp").write_bytes(b"half written")
    again = Spool(tmp_path / "data", max_bytes=1 << 20)
    again.load()  # as after kill -9
    found = again.get("1-2-3")
    assert found is not None and found.path == "/var/log/app.log" and found.mtime == 4.0
    assert not list(found.folder.glob("*.tmp")), "a half-written segment is deleted, never read"
    assert found.covered(100) == len(data) and found.covered(50) == 50
    assert found.read(20, 4995) == data[4995:5000], "a read stops at its segment's end"
    assert found.read(20, 5000) == data[5000:5020]
    again.release("1-2-3", 5000)
    assert [s.start for s in found.segments] == [5000] and found.covered(5000) == len(data)
    again.drop("1-2-3")
    assert not found.folder.exists() and metrics.SPOOL_BYTES._value.get() == 0


def test_a_full_spool_keeps_what_fits_and_counts_the_rest(tmp_path: Path) -> None:
    data = b"".join(b"%09d\n" % i for i in range(100))  # 100 lines of 10 bytes
    fd = _file(tmp_path, data)
    spool = Spool(tmp_path / "data", max_bytes=300)
    before = (metrics.SPOOL_REFUSED_LINES._value.get(), metrics.SPOOL_REFUSED_BYTES._value.get())
    assert asyncio.run(spool.copy(_spooled(spool), fd, 0, len(data))) == 300
    spool.close()
    os.close(fd)
    assert metrics.SPOOL_REFUSED_LINES._value.get() - before[0] == 70
    assert metrics.SPOOL_REFUSED_BYTES._value.get() - before[1] == 700


async def test_a_file_dropped_while_its_copy_is_written_leaves_nothing(tmp_path: Path) -> None:
    """Issue 20 item 6 (found by bench/registry_churn.py: 27,409 spool folders, 323 MB, left by a churn
    of 100,000 files under load). A rotated file is acknowledged to its end, and dropped, while its
    copy is being written in a thread; the copy used to register the file when it ended, so its folder
    stayed on disk and in memory until the next start."""
    data = b"".join(b"line %05d\n" % i for i in range(1000))
    fd = _file(tmp_path, data)
    spool = Spool(tmp_path / "data", max_bytes=1 << 20)
    try:
        spooled = _spooled(spool)
        copying = asyncio.create_task(spool.copy(spooled, fd, 0, len(data)))
        await asyncio.sleep(0)  # the copy is in its thread now
        spool.drop(spooled.uid)  # Kafka acknowledged the file to its end meanwhile
        await copying
        assert spool.get(spooled.uid) is None and not spooled.folder.exists()
        assert spool.files == {} and spool._used == 0
        await spool.copy(spooled, fd, 0, len(data))  # a late copy of a dropped file keeps nothing either
        assert spool.get(spooled.uid) is None and not spooled.folder.exists()
    finally:
        spool.close()
        os.close(fd)
