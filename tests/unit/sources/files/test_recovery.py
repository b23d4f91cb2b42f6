"""recovery.plan: the earlier files of a path, found by inode, in the spool, or compressed, oldest first."""

from __future__ import annotations

import asyncio
import gzip
import os
import time
from pathlib import Path

from logagent.sources.files.recovery import FolderIndex, is_rotated_name, plan
from logagent.sources.files.registry import Registry, fingerprint
from logagent.sources.files.spool import Spool, SpoolFile


def _known(reg: Registry, path: Path, offset: int) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        fp, fp_len = fingerprint(fd)
    finally:
        os.close(fd)
    st = path.stat()
    return reg.update(st.st_dev, st.st_ino, str(path), offset, fp, fp_len, size=st.st_size)


def _plan(reg: Registry, log: Path, spool: Spool | None = None, owned: set[str] | None = None):  # type: ignore[no-untyped-def]
    return plan(str(log), reg, spool, lambda dev, ino: False, FolderIndex(), owned or set())


def test_rotated_names() -> None:
    for name in ("app.log.1", "app.log.2.gz", "app.log-20261129", "app.log-20261129.xz", "app.log_3",
                 "app.log-2026120603.backup"):  # the last: logrotate's create found app.log re-created
        assert is_rotated_name(name, "app.log"), name
    for name in ("app.log", "app.logger", "app.log.old", "other.log.1", "app.log-error", "app.log.backup",
                 "app.log-error.backup", "app.log-2026120603.backup.old"):
        assert not is_rotated_name(name, "app.log"), name


def test_the_file_logrotate_renames_to_backup_is_a_generation(tmp_path: Path) -> None:
    """The writer re-created app.log between logrotate's rename and its create; logrotate renamed
    that file to app.log-<YYYYMMDDHH>.backup and created app.log again (logrotate 3.21,
    createOutputFile). Found while stopped, between the renamed file and the new one."""
    reg = Registry(tmp_path / "data")
    log = tmp_path / "app.log"
    log.write_text("known\n")
    _known(reg, log, 6)
    time.sleep(0.01)
    log.rename(tmp_path / "app.log.1")
    log.write_text("written between the rename and the create\n")
    log.rename(tmp_path / "app.log-2026120603.backup")
    time.sleep(0.01)
    log.write_text("the new file\n")
    gens = _plan(reg, log)
    assert [(g.kind, os.path.basename(g.where), g.start) for g in gens] == [
        ("file", "app.log.1", 6), ("file", "app.log-2026120603.backup", 0)]


def test_a_file_renamed_while_stopped_is_found_by_inode(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "data")
    log = tmp_path / "app.log"
    log.write_text("a\nb\n")
    _known(reg, log, 2)
    log.rename(tmp_path / "app.log.1")
    log.write_text("new\n")
    [gen] = _plan(reg, log)
    assert (gen.kind, gen.where, gen.start) == ("file", str(tmp_path / "app.log.1"), 2)
    assert _plan(reg, log, owned={gen.key or ""}) == [], "a file this process answers for is not planned twice"


def test_a_compressed_copy_is_matched_by_its_first_bytes(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "data")
    log = tmp_path / "app.log"
    content = b"".join(b"first generation %d\n" % i for i in range(100))
    log.write_bytes(content)
    _known(reg, log, 40)
    (tmp_path / "app.log.1.gz").write_bytes(gzip.compress(content))
    log.unlink()
    log.write_text("new\n")
    [gen] = _plan(reg, log)
    assert (gen.kind, gen.start) == ("compressed", 40) and gen.where.endswith("app.log.1.gz")


def test_the_spool_when_the_file_is_gone(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "data")
    log = tmp_path / "app.log"
    content = b"x" * 100 + b"\n"
    log.write_bytes(content)
    key = _known(reg, log, 10)
    entry = reg.get(key)
    assert entry is not None
    spool = Spool(tmp_path / "data", 1 << 20)
    fd = os.open(log, os.O_RDONLY)
    asyncio.run(spool.copy(SpoolFile(entry.uid, spool.root / entry.uid, str(log), entry.dev, entry.ino, entry.fp,
                                     entry.fp_len, entry.since, time.time()), fd, 10, len(content)))
    os.close(fd)
    log.unlink()
    log.write_text("new\n")
    [gen] = _plan(reg, log, spool)
    assert (gen.kind, gen.where, gen.start) == ("spool", entry.uid, 10)


def test_generations_never_seen_are_found_oldest_first_but_not_after_copytruncate(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "data")
    log = tmp_path / "app.log"
    log.write_text("known\n")
    _known(reg, log, 6)
    time.sleep(0.01)
    log.rename(tmp_path / "app.log.2")  # known, read to its end: nothing owed
    (tmp_path / "app.log.1").write_text("unseen, rotated while stopped\n")
    old = time.time() - 5
    (tmp_path / "app.log.9").write_text("older than what the agent knew\n")
    os.utime(tmp_path / "app.log.9", (old, old))
    later = time.time() + 1
    (tmp_path / "app.log.0.gz").write_bytes(gzip.compress(b"unseen and compressed\n"))
    os.utime(tmp_path / "app.log.0.gz", (later, later))
    log.write_text("current\n")
    gens = _plan(reg, log)
    assert [(g.kind, os.path.basename(g.where), g.start) for g in gens] == [
        ("file", "app.log.2", 6), ("file", "app.log.1", 0), ("compressed", "app.log.0.gz", 0)]
    # copytruncate: the path keeps its file; its copies are not new generations
    reg2 = Registry(tmp_path / "data2")
    log2 = tmp_path / "svc.log"
    log2.write_text("kept\n")
    _known(reg2, log2, 5)
    (tmp_path / "svc.log.1").write_text("kept\n")
    assert _plan(reg2, log2) == []


def test_a_copytruncate_copy_is_not_taken_for_a_new_file_when_the_path_is_later_replaced(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "data")
    log = tmp_path / "app.log"
    log.write_text("first content\n")
    key = _known(reg, log, 14)
    entry = reg.get(key)
    assert entry is not None
    (tmp_path / "app.log.1").write_text("first content\n")  # copytruncate: copy, then truncate
    reg.remember_content(entry.dev, entry.ino, str(log), entry.fp, entry.fp_len)  # what the tailer does
    log.write_text("second\n")
    _known(reg, log, 7)
    log.unlink()  # then delete-and-recreate
    log.write_text("third\n")
    assert _plan(reg, log) == []
