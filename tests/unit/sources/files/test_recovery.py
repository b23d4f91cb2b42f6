"""recovery.plan: the earlier files of a path, found by inode, in the spool, or compressed, oldest first."""

from __future__ import annotations

import asyncio
import bz2
import contextlib
import dataclasses
import gzip
import logging
import lzma
import os
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from logagent.pipeline.buffer import BatchQueue
from logagent.sources.files.budget import FdBudget
from logagent.sources.files.recovery import (
    QUIET_NS,
    FolderIndex,
    Generation,
    _compressed_head,
    apply,
    is_rotated_name,
    plan,
)
from logagent.sources.files.registry import (
    FINGERPRINT_BYTES,
    Registry,
    RegistryEntry,
    fingerprint,
    fingerprint_of,
    identity_key,
)
from logagent.sources.files.shipper import Route, TailContext, TailOptions
from logagent.sources.files.spool import Spool, SpoolFile
from tests.kit import file_fingerprint


def _known(reg: Registry, path: Path, offset: int) -> str:
    fp, fp_len = file_fingerprint(path)
    st = path.stat()
    return reg.update(st.st_dev, st.st_ino, str(path), offset, fp, fp_len, size=st.st_size)


def _known_at(tmp_path: Path, name: str, content: bytes, offset: int) -> tuple[Registry, Path]:
    """A registry (in tmp_path/data) that knows tmp_path/name read to `offset`, when the file held
    content's first `offset` bytes (the rest, if any, is the test's to write: grown while stopped)."""
    reg = Registry(tmp_path / "data")
    log = tmp_path / name
    log.write_bytes(content[:offset])
    _known(reg, log, offset)
    return reg, log


def _read_to_its_end(tmp_path: Path) -> tuple[Registry, Path]:
    """A registry (in tmp_path/data) that knows app.log ("known\\n") read to its end, at offset 6."""
    return _known_at(tmp_path, "app.log", b"known\n", 6)


def _plan(reg: Registry, log: Path, spool: Spool | None = None, owned: set[str] | None = None):  # type: ignore[no-untyped-def]
    return apply(plan(str(log), reg, spool, lambda dev, ino: False, FolderIndex(), owned or set()), reg)


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
    reg, log = _read_to_its_end(tmp_path)
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
    reg, log = _read_to_its_end(tmp_path)
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


# ---- issue 20: inode reuse, copytruncate copies, never silent


def _metric(name: str, reason: str) -> float:
    return REGISTRY.get_sample_value(name, {"reason": reason}) or 0.0


def _lines(prefix: str, n: int) -> bytes:
    return b"".join(b"%s %06d\n" % (prefix.encode(), i) for i in range(n))


def _open_at_path(reg: Registry, log: Path) -> tuple[int, int]:
    """What FileTailer._identify does with the file now at the path: an entry whose fingerprint differs
    is archived (a new file reused its inode), the file gets its own entry. Returns its (dev, ino)."""
    st = log.stat()
    saved = reg.lookup(st.st_dev, st.st_ino)
    fd = os.open(log, os.O_RDONLY)
    try:
        fp, fp_len = fingerprint(fd)
        if saved is not None and fingerprint(fd, saved.fp_len)[0] != saved.fp:
            reg.archive(st.st_dev, st.st_ino)
    finally:
        os.close(fd)
    reg.update(st.st_dev, st.st_ino, str(log), 0, fp, fp_len, size=st.st_size)
    return st.st_dev, st.st_ino


def _plan_opened(reg: Registry, log: Path, history: list[tuple[str, RegistryEntry]],
                 current: tuple[int, int]) -> list[Generation]:
    """plan() as the runner calls it once a tailer opened the path's file (and holds its inode)."""
    return apply(plan(str(log), reg, None, lambda dev, ino: (dev, ino) == current, FolderIndex(), set(),
                      known=history, current=current), reg)


def _history(reg: Registry, log: Path) -> list[tuple[str, RegistryEntry]]:
    return [(k, dataclasses.replace(e)) for k, e in reg.entries_for(str(log))]


def _plan_at_start(reg: Registry, log: Path) -> tuple[list[Generation], tuple[int, int]]:
    """A start: the path's entries as the registry holds them, a tailer opening the file now at the
    path, then plan() as the runner calls it: (the generations, the opened file's (dev, ino))."""
    history = _history(reg, log)
    current = _open_at_path(reg, log)
    return _plan_opened(reg, log, history, current), current


def _copytruncated_while_stopped(tmp_path: Path) -> tuple[Registry, Path, Path, bytes]:
    """app.log known to offset 2,000, then, while the agent was stopped, grown to 300 lines, copied to
    app.log.1, truncated and written again (copytruncate): (registry, app.log, app.log.1, what was copied)."""
    content = _lines("gen0", 300)
    reg, log = _known_at(tmp_path, "app.log", content, 2000)
    copy = tmp_path / "app.log.1"
    copy.write_bytes(content)  # grown while stopped, copied ...
    log.write_bytes(b"")  # ... truncated
    log.write_bytes(_lines("gen1", 10))  # and written again
    return reg, log, copy, content


def test_the_compressed_copy_is_found_when_the_new_file_got_the_old_inode(tmp_path: Path) -> None:
    """Issue 20 item 1: the file at the path has the old file's inode number (here: the same inode,
    rewritten), and a tailer holds it; the old file's compressed copy is still read from its offset."""
    old = _lines("old", 200)
    reg, log = _known_at(tmp_path, "app.log", old, 1800)
    (tmp_path / "app.log.1.gz").write_bytes(gzip.compress(old))  # grown while stopped, then compressed
    log.write_bytes(b"new file\n")  # the new file, with the old one's inode number
    [gen], current = _plan_at_start(reg, log)
    assert (gen.kind, os.path.basename(gen.where), gen.start) == ("compressed", "app.log.1.gz", 1800)
    assert gen.key is not None and reg.get(gen.key) is not None and gen.key != identity_key(*current), \
        "read under the archived entry, not the new file's"


def test_a_copytruncate_copy_goes_on_from_the_saved_offset(tmp_path: Path) -> None:
    """Issue 20 item 2: app.log.1 holds the known file's first bytes and more than its saved offset:
    read from that offset, and never again as a file never seen."""
    reg, log, copy, content = _copytruncated_while_stopped(tmp_path)
    [gen], _ = _plan_at_start(reg, log)
    assert (gen.kind, gen.where, gen.start) == ("copy", str(copy), 2000)
    assert (gen.dev, gen.ino) == (copy.stat().st_dev, copy.stat().st_ino)
    # a copy shorter than the saved offset is not the continuation: the file is counted lost instead
    reg2 = Registry(tmp_path / "data2")
    log2 = tmp_path / "b.log"
    log2.write_bytes(content[:2000])
    _known(reg2, log2, 2000)
    (tmp_path / "b.log.1").write_bytes(content[:1500])
    log2.write_bytes(_lines("other", 10))
    before = _metric("logagent_files_lost_total", "rotated_away")
    assert _plan_at_start(reg2, log2)[0] == []
    assert _metric("logagent_files_lost_total", "rotated_away") == before + 1


def test_a_copy_read_once_is_not_read_again_once_renamed_and_compressed(tmp_path: Path) -> None:
    """Issue 20 item 2: once the copy is read (its archived entry done), a later rotation that compresses
    it (app.log.1 -> app.log.2.gz, here by a tool that does not keep its mtime) and replaces the path
    does not make it a file never seen."""
    reg, log, copy, content = _copytruncated_while_stopped(tmp_path)
    [gen], _ = _plan_at_start(reg, log)
    assert gen.key is not None
    reg.update(gen.dev, gen.ino, str(log), len(content), gen.fp, gen.fp_len, key=gen.key)
    reg.mark_done(gen.key)  # what CopyTailer does once Kafka has it to its end
    time.sleep(0.01)
    (tmp_path / "app.log.2.gz").write_bytes(gzip.compress(content))  # mtime: now
    copy.unlink()
    log.unlink()
    log.write_bytes(_lines("gen2", 10))  # a new file at the path: files rotated meanwhile are looked for
    gens, _ = _plan_at_start(reg, log)
    assert [(g.kind, os.path.basename(g.where), g.start) for g in gens] == [], "the copy was read already"


def test_a_known_file_found_nowhere_is_said_and_counted_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 20 item 3: grown while stopped, then deleted, the new file on its inode number: a WARNING with
    the path, the file counted, the bytes the agent knew of past its offset counted; done, so once."""
    reg = Registry(tmp_path / "data")
    log = tmp_path / "app.log"
    log.write_bytes(_lines("old", 100))
    key = _known(reg, log, 500)  # 500 acknowledged of the 1,100 bytes the agent knew
    log.write_bytes(b"new\n")  # deleted, and the new file got its inode number
    files, lost = _metric("logagent_files_lost_total", "rotated_away"), _metric("logagent_bytes_lost_total",
                                                                               "rotated_away")
    with caplog.at_level(logging.WARNING, logger="logagent.recovery"):
        gens, current = _plan_at_start(reg, log)
        assert gens == []
    assert _metric("logagent_files_lost_total", "rotated_away") == files + 1
    assert _metric("logagent_bytes_lost_total", "rotated_away") == lost + 600
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(log) in record.getMessage() and "offset 500" in record.getMessage(), record.getMessage()
    archived = [e for k, e in reg.entries_for(str(log)) if k != identity_key(*current)]
    assert [e.done for e in archived] == [True], "remembered as finished: not counted again"
    assert key not in [k for k, _ in reg.entries_for(str(log)) if k != identity_key(*current)]
    assert _plan_opened(reg, log, _history(reg, log), current) == []
    assert _metric("logagent_files_lost_total", "rotated_away") == files + 1


def test_a_file_seen_only_empty_and_gone_is_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """It has no fingerprint to be found by; gone from its folder, it may have had lines: said and counted."""
    reg = Registry(tmp_path / "data")
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    _known(reg, log, 0)
    log.unlink()
    files = _metric("logagent_files_lost_total", "rotated_away")
    with caplog.at_level(logging.WARNING, logger="logagent.recovery"):
        assert _plan(reg, log) == []
    assert _metric("logagent_files_lost_total", "rotated_away") == files + 1
    assert any(str(log) in r.getMessage() and "seen only empty" in r.getMessage() for r in caplog.records)
    assert _plan(reg, log) == [] and _metric("logagent_files_lost_total", "rotated_away") == files + 1


def test_an_unreadable_rotated_copy_is_said_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reg, log = _read_to_its_end(tmp_path)
    log.unlink()
    time.sleep(0.01)
    (tmp_path / "app.log.1.gz").write_bytes(b"this is not gzip at all\n" * 10)
    log.write_text("current\n")
    before = _metric("logagent_files_lost_total", "unreadable_copy")
    with caplog.at_level(logging.WARNING, logger="logagent.recovery"):
        _plan(reg, log)
    assert _metric("logagent_files_lost_total", "unreadable_copy") == before + 1
    assert any("app.log.1.gz" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_the_head_of_a_compressed_copy_still_being_written(tmp_path: Path) -> None:
    """A copy cut short (its compressor still writing) gives the first bytes it has, not None; a small
    copy that expands to a lot is decompressed no further than the fingerprint."""
    content = _lines("x", 500)
    for ext, compress in ((".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress)):
        whole = tmp_path / f"a{ext}"
        whole.write_bytes(compress(content))
        assert _compressed_head(str(whole), ext) == content[:FINGERPRINT_BYTES]
        cut = tmp_path / f"cut{ext}"
        cut.write_bytes(compress(content)[: len(compress(content)) // 2])
        head = _compressed_head(str(cut), ext)
        assert head is not None and content.startswith(head), ext
        bomb = tmp_path / f"bomb{ext}"
        bomb.write_bytes(compress(b"\0" * (64 << 20)))
        assert _compressed_head(str(bomb), ext) == b"\0" * FINGERPRINT_BYTES
        bad = tmp_path / f"bad{ext}"
        bad.write_bytes(b"not compressed" * 100)
        assert _compressed_head(str(bad), ext) is None, ext


def test_a_generation_read_from_a_copy_leaves_its_inode_to_the_next_file(tmp_path: Path) -> None:
    """Found only as a copy (not at its inode), its entry moves under its uid: a tailer that opens a file
    given that inode number meanwhile must not take (or move) its offset."""
    reg = Registry(tmp_path / "data")
    log = tmp_path / "app.log"
    content = _lines("gen0", 100)
    log.write_bytes(content)
    key = _known(reg, log, 100)
    (tmp_path / "app.log.1.gz").write_bytes(gzip.compress(content))
    log.unlink()
    [gen] = _plan(reg, log)
    assert gen.kind == "compressed" and gen.key != key and reg.get(key) is None
    assert gen.key is not None and reg.get(gen.key) is not None


def test_a_compressed_generation_never_seen_is_found_again_after_a_crash(tmp_path: Path) -> None:
    """Read as a generation never seen, a compressed copy is registered under its own inode; after a
    kill -9 in the middle, the next start goes on in it from the saved offset."""
    reg = Registry(tmp_path / "data")
    log = tmp_path / "app.log"
    log.write_text("current\n")
    content = _lines("unseen", 200)
    gz = tmp_path / "app.log.1.gz"
    gz.write_bytes(gzip.compress(content))
    st = gz.stat()
    fp = fingerprint_of(content[:FINGERPRINT_BYTES])
    reg.update(st.st_dev, st.st_ino, str(log), 700, fp, FINGERPRINT_BYTES)  # what CopyTailer did, then died
    _known(reg, log, 8)
    [gen] = _plan(reg, log)
    assert (gen.kind, gen.where, gen.start) == ("compressed", str(gz), 700)


def test_a_copy_renumbered_while_the_agent_starts_is_opened_by_its_identity(tmp_path: Path) -> None:
    """logrotate renames app.log.2.gz to app.log.3.gz (and makes a new app.log.2.gz) between the plan
    and the open: the name now holds another generation; the copy is opened where its inode went."""
    from logagent.errors import SourceError
    from logagent.sources.files.generations import CopyTailer

    reg, log = _read_to_its_end(tmp_path)
    log.unlink()
    time.sleep(0.01)
    older, newer = _lines("older", 100), _lines("newer", 100)
    (tmp_path / "app.log.2.gz").write_bytes(gzip.compress(older))
    log.write_text("current\n")
    [gen] = _plan(reg, log)
    assert gen.where.endswith("app.log.2.gz")
    (tmp_path / "app.log.2.gz").rename(tmp_path / "app.log.3.gz")
    (tmp_path / "app.log.2.gz").write_bytes(gzip.compress(newer))
    copy = CopyTailer(str(log), Route("t"), _context(reg, tmp_path), None, gen)
    copy.open()
    try:
        assert copy._sources[0][1].read(1 << 20, 0) == older
    finally:
        copy.close()
    (tmp_path / "app.log.3.gz").unlink()
    with pytest.raises(SourceError):
        CopyTailer(str(log), Route("t"), _context(reg, tmp_path), None, gen).open()


def _context(reg: Registry, tmp_path: Path) -> TailContext:
    return TailContext(opts=TailOptions(ip="127.0.0.1", host="h"), queue=BatchQueue(100), registry=reg,
                       budget=FdBudget(16), allowed_paths=(f"{tmp_path}/**",))


def test_generations_are_read_in_the_order_they_were_written_whatever_a_compression_did_to_mtimes(
        tmp_path: Path) -> None:
    """The kubelet's rotation while the agent is stopped: 0.log (known) renamed to 0.log.<t1>, then
    gzipped to 0.log.<t1>.gz after 0.log.<t2> was renamed (a gzip's mtime is when it was made, later
    than the next file's last write); 0.log.<t2> and 0.log.<t3>.gz were never seen. Known ones first,
    in the order the agent first saw them, then the unseen ones by the time stamp in their names."""
    gen1 = _lines("gen1", 100)
    reg, log = _known_at(tmp_path, "0.log", gen1, 500)
    t1 = tmp_path / "0.log.20261206-100001"
    log.rename(t1)
    t1.write_bytes(gen1)  # grew while stopped
    t2 = tmp_path / "0.log.20261206-100002"
    t2.write_bytes(_lines("gen2", 50))
    t3 = tmp_path / "0.log.20261206-100003"
    t3.write_bytes(_lines("gen3", 50))
    os.utime(t2, (time.time() + 20, time.time() + 20))  # its last write after gen3's file was made: a late writer
    (tmp_path / "0.log.20261206-100003.gz").write_bytes(gzip.compress(t3.read_bytes()))
    t3.unlink()
    (tmp_path / "0.log.20261206-100001.gz").write_bytes(gzip.compress(gen1))  # the newest mtime of all
    t1.unlink()
    log.write_bytes(_lines("gen4", 10))
    history = _history(reg, log)
    gens = _plan_opened(reg, log, history, _open_at_path(reg, log))
    assert [(g.kind, os.path.basename(g.where)) for g in gens] == [
        ("compressed", "0.log.20261206-100001.gz"), ("file", "0.log.20261206-100002"),
        ("compressed", "0.log.20261206-100003.gz")]


def test_a_plan_only_plans_and_apply_takes_its_steps(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """plan() changes nothing (no registry write, no log line, no count); apply() takes its steps in
    order: the archived entry moved off the reused inode, the lost file finished, said and counted."""
    reg = Registry(tmp_path / "data")
    log = tmp_path / "app.log"
    log.write_bytes(_lines("old", 100))
    _known(reg, log, 500)
    log.write_bytes(b"new\n")  # deleted while stopped; the new file got its inode number
    history = _history(reg, log)
    current = _open_at_path(reg, log)
    before = {k: dataclasses.replace(e) for k, e in reg.entries().items()}
    files = _metric("logagent_files_lost_total", "rotated_away")
    with caplog.at_level(logging.WARNING, logger="logagent.recovery"):
        found = plan(str(log), reg, None, lambda dev, ino: (dev, ino) == current, FolderIndex(), set(),
                     known=history, current=current)
        assert reg.entries() == before and not caplog.records
        assert _metric("logagent_files_lost_total", "rotated_away") == files
        assert found.generations == [] and [type(s).__name__ for s in found.steps] == ["Finish", "Lost"]
        assert apply(found, reg) == []
    assert _metric("logagent_files_lost_total", "rotated_away") == files + 1
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert reg.entries() != before


def test_an_unseen_generation_compressed_while_it_is_planned_is_read_from_its_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kubelet gzips 0.log.<time> (to .gz.tmp, renamed .gz, then the plain one unlinked) between
    the folder's listing and the read of the plain file's first bytes: it was said lost ('cannot be
    opened', unreadable_copy) and its lines were never read, while its .gz held them all (101 of
    1,512 lines lost in 1 of 12 runs of the running-rotation integration test). Now its copy is read."""
    from logagent.sources.files import recovery

    reg = Registry(tmp_path / "data")
    log = tmp_path / "0.log"
    log.write_bytes(_lines("gen1", 10))
    _known(reg, log, 50)
    first = tmp_path / "0.log.20261206-100001"
    log.rename(first)
    second = tmp_path / "0.log.20261206-100002"
    gen2 = _lines("gen2", 100)
    second.write_bytes(gen2)
    log.write_bytes(_lines("gen3", 10))
    real = recovery._plain_head

    def racing(path: str, length: int = 1024, expect: object = None) -> bytes | None:
        if path == str(second) and second.exists():  # the kubelet's compression comes now
            tmp = tmp_path / (second.name + ".gz.tmp")
            tmp.write_bytes(gzip.compress(gen2))
            tmp.rename(tmp_path / (second.name + ".gz"))
            second.unlink()
        return real(path, length, expect)  # type: ignore[arg-type]

    monkeypatch.setattr(recovery, "_plain_head", racing)
    history = _history(reg, log)
    found = plan(str(log), reg, None, lambda dev, ino: False, FolderIndex(), set(), known=history,
                 current=_open_at_path(reg, log))
    assert [(g.kind, os.path.basename(g.where)) for g in found.generations] == [
        ("file", "0.log.20261206-100001"), ("compressed", "0.log.20261206-100002.gz")]
    assert not [s for s in found.steps if type(s).__name__ == "Lost"]



def test_files_rotated_on_after_the_current_one_opened_are_read_after_it_and_its_copy_not_at_all(
        tmp_path: Path) -> None:
    """A tailer opens 0.log; before the folder is listed for the files rotated before it, the kubelet
    renames it, makes a new 0.log, renames that one too and compresses the first (its tailer still
    reads it through its descriptor). The newer file was planned before it (lines out of order: 2 of
    90,720 in a run of 180 pods) and its compressed copy as a generation never seen (read twice: 101
    lines in 1 of 5 full runs under load). Now the file rotated before it comes first, the newer
    one after it, and its copy not at all; without its tailer's first bytes, as before."""
    reg = Registry(tmp_path / "data")
    log = tmp_path / "0.log"
    log.write_bytes(_lines("gen0", 10))
    _known(reg, log, 0)
    log.rename(tmp_path / "0.log.20261206-100000")
    log.write_bytes(_lines("gen1", 10))
    log.rename(tmp_path / "0.log.20261206-100001")
    (tmp_path / "0.log.20261206-100001.gz").write_bytes(gzip.compress(_lines("gen1", 10)))
    (tmp_path / "0.log.20261206-100001").unlink()
    gen2 = _lines("gen2", 10)
    log.write_bytes(gen2)
    history = _history(reg, log)
    current = _open_at_path(reg, log)
    owned = {k for k, _ in history} | {identity_key(*current)}
    held_fd = os.open(log, os.O_RDONLY)  # its tailer's
    try:
        log.rename(tmp_path / "0.log.20261206-100002")  # rotation goes on before the listing
        log.write_bytes(_lines("gen3", 10))
        log.rename(tmp_path / "0.log.20261206-100003")
        log.write_bytes(_lines("gen4", 10))

        def held(dev: int, ino: int) -> bool:
            return (dev, ino) == current or reg.lookup(dev, ino) is not None

        def head_held(dev: int, ino: int) -> bytes | None:
            return os.pread(held_fd, FINGERPRINT_BYTES, 0) if (dev, ino) == current else None

        def planned(**kw: object) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
            found = plan(str(log), reg, None, held, FolderIndex(), owned, known=history, current=current, **kw)
            return ([(g.kind, os.path.basename(g.where)) for g in found.generations],
                    [(g.kind, os.path.basename(g.where)) for g in found.later])

        before, after = [("compressed", "0.log.20261206-100001.gz")], [("file", "0.log.20261206-100003")]
        assert planned(head_held=head_held) == (before, after)  # found under its rotated name
        (tmp_path / "0.log.20261206-100002.gz").write_bytes(gzip.compress(gen2))
        (tmp_path / "0.log.20261206-100002").unlink()
        assert planned(head_held=head_held) == (before, after)  # found by its first bytes
        blind = planned()
        assert ("compressed", "0.log.20261206-100002.gz") in blind[0] and blind[1] == []
    finally:
        os.close(held_fd)


class Coarse(FolderIndex):
    """A listing the folder's time stamp does not renew (changes within one tick of its clock)."""

    def __init__(self) -> None:
        super().__init__()
        self.listings = 0

    def files(self, folder: str) -> list[tuple[str, os.stat_result]]:
        if folder not in self._folders:
            self.listings += 1
            return super().files(folder)
        return self._folders[folder]


def test_a_listing_that_rotation_made_stale_is_taken_again(tmp_path: Path) -> None:
    """The folder is listed (app.log.1 is a file never seen), then logrotate renames app.log.1 to .2
    and the current file to .1 before the first bytes are read by name: the never-seen file got the
    current file's fingerprint, was looked for by it when opened, and its lines were lost (1 in 30
    runs of 20 files rotated every few milliseconds; the folder's own time stamp, ticking coarser
    than that, did not renew the listing). The name is checked against the listed inode, and the
    folder listed again."""

    reg, log = _known_at(tmp_path, "app.log", _lines("gen5", 10), 50)
    log.rename(tmp_path / "app.log.1")
    gen6 = _lines("gen6", 10)
    log.write_bytes(gen6)
    os.rename(tmp_path / "app.log.1", tmp_path / "app.log.2")
    log.rename(tmp_path / "app.log.1")
    log.write_bytes(_lines("gen7", 10))
    history = _history(reg, log)
    current = _open_at_path(reg, log)
    folders = Coarse()
    folders.files(str(tmp_path))  # listed now: app.log.1 is gen6
    os.rename(tmp_path / "app.log.2", tmp_path / "app.log.3")  # then logrotate runs again
    os.rename(tmp_path / "app.log.1", tmp_path / "app.log.2")
    log.rename(tmp_path / "app.log.1")
    log.write_bytes(_lines("gen8", 10))
    found = plan(str(log), reg, None, lambda dev, ino: False, folders, set(), known=history, current=current)
    unseen = [g for g in found.generations if g.key is None]
    assert [(os.path.basename(g.where), g.fp) for g in unseen] == [("app.log.2", fingerprint_of(gen6))]
    assert folders.listings == 2


def test_a_listed_copy_renamed_away_before_it_is_read_is_found_under_its_new_name(tmp_path: Path) -> None:
    """The folder is listed with app.log.2.gz, a file never seen; logrotate renames it to .3.gz before
    its first bytes are read: it was said unreadable and its lines lost (churn test, 4 in 17 runs)."""
    reg, log = _read_to_its_end(tmp_path)
    time.sleep(0.01)
    log.rename(tmp_path / "app.log.9")  # known, read to its end
    (tmp_path / "app.log.2.gz").write_bytes(gzip.compress(_lines("unseen", 10)))
    log.write_text("current\n")
    history = _history(reg, log)
    current = _open_at_path(reg, log)
    folders = Coarse()
    folders.files(str(tmp_path))  # listed now
    os.rename(tmp_path / "app.log.2.gz", tmp_path / "app.log.3.gz")
    found = plan(str(log), reg, None, lambda dev, ino: False, folders, set(), known=history, current=current)
    assert [(g.kind, os.path.basename(g.where)) for g in found.generations if g.key is None] == [
        ("compressed", "app.log.3.gz")]
    assert not [s for s in found.steps if type(s).__name__ == "Lost"]



def test_a_folder_listed_in_the_tick_of_its_last_change_is_listed_again(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder's time stamps tick coarsely: a file renamed into it in the same tick as a listing left
    them as they were, the listing was taken again as it was, and the file (never seen) was missing
    from every plan until one with a later first-seen time passed it by (50 lines lost, 1 in 30 runs
    of the churn test under load). A listing taken within QUIET_NS of the last change is not trusted;
    one taken later is."""
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "app.log").write_text("a\n")
    stamped = os.stat(folder)
    real_stat = os.stat

    def same_tick(path: object, *args: object, **kw: object) -> os.stat_result:
        return stamped if str(path) == str(folder) else real_stat(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", same_tick)  # the folder's stamps as they were at the first listing
    index = FolderIndex()
    assert [os.path.basename(p) for p, _ in index.files(str(folder))] == ["app.log"]
    (folder / "app.log.1").write_text("b\n")
    assert sorted(os.path.basename(p) for p, _ in index.files(str(folder))) == ["app.log", "app.log.1"]
    monkeypatch.setattr(time, "time_ns", lambda: stamped.st_ctime_ns + 2 * QUIET_NS)  # long after it changed
    index.files(str(folder))  # listed once more, now settled
    (folder / "app.log.2").write_text("c\n")
    assert sorted(os.path.basename(p) for p, _ in index.files(str(folder))) == ["app.log", "app.log.1"]


def test_a_name_listed_with_two_files_is_read_for_each_file_or_listed_again(tmp_path: Path) -> None:
    """A listing is two readdirs merged, each name stat'ed after it was read: while logrotate renames
    app.log.2.gz to .3.gz and makes a new .2.gz, one name shows twice, with both files. Its first bytes
    were read once per name, so the older file got the newer one's fingerprint, was taken for its
    twin, and its 100 lines were never read (1 in ~40 runs of the churn test under load)."""
    reg, log = _read_to_its_end(tmp_path)
    time.sleep(0.01)
    log.rename(tmp_path / "app.log.9")  # known, read to its end
    older, newer = _lines("older", 10), _lines("newer", 10)
    (tmp_path / "app.log.3.gz").write_bytes(gzip.compress(older))
    (tmp_path / "app.log.2.gz").write_bytes(gzip.compress(newer))
    log.write_text("current\n")
    history = _history(reg, log)
    current = _open_at_path(reg, log)
    folders = Coarse()
    folders._folders[str(tmp_path)] = [  # as a merged listing racing the rename showed it
        (str(tmp_path / "app.log.2.gz"), os.stat(tmp_path / "app.log.3.gz")),
        (str(tmp_path / "app.log.2.gz"), os.stat(tmp_path / "app.log.2.gz")),
        (str(log), os.stat(log)), (str(tmp_path / "app.log.9"), os.stat(tmp_path / "app.log.9"))]
    found = plan(str(log), reg, None, lambda dev, ino: False, folders, set(), known=history, current=current)
    assert sorted((os.path.basename(g.where), g.fp) for g in found.generations if g.key is None) == [
        ("app.log.2.gz", fingerprint_of(newer)), ("app.log.3.gz", fingerprint_of(older))]


def test_a_listing_pass_that_a_rename_ran_through_is_followed_by_another(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """logrotate renames app.log.1 to .2 and the current file to .1 while the folder is read: a pass
    reads the name app.log.1 (the older file's) and stats it as the current file, and never sees .2.
    Two such passes merged lost the older file (its round never read, 1 in ~120 churn runs). A pass
    whose names led to other files by the time they were stat'ed is followed by another."""
    from logagent.sources.files import recovery

    (tmp_path / "app.log.1").write_text("current, renamed\n")
    (tmp_path / "app.log.2").write_text("older, renamed\n")
    current, older = os.stat(tmp_path / "app.log.1"), os.stat(tmp_path / "app.log.2")
    real_scandir = os.scandir
    passes = []

    class Racing:
        def __init__(self, path: str, ino: int, st: os.stat_result) -> None:
            self.path, self._ino, self._st = path, ino, st

        def inode(self) -> int:
            return self._ino

        def stat(self, follow_symlinks: bool = True) -> os.stat_result:
            return self._st

    @contextlib.contextmanager
    def scandir(folder: str):  # type: ignore[no-untyped-def]
        passes.append(folder)
        if len(passes) <= 2:  # read before the renames, stat'ed after: .2 not seen
            yield iter([Racing(str(tmp_path / "app.log.1"), older.st_ino, current)])
        else:
            with real_scandir(folder) as it:
                yield it

    monkeypatch.setattr(recovery.os, "scandir", scandir)
    listed = {(os.path.basename(p), s.st_ino) for p, s in FolderIndex().files(str(tmp_path))}
    assert ("app.log.2", older.st_ino) in listed and len(passes) == 3


def test_a_file_seen_only_empty_then_written_and_rotated_before_a_restart_is_read(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A run saw app.log empty and was killed before it read what came next; app.log was written and
    rotated, and the next run saw the new app.log empty too and was killed as soon. A start then read
    app.log.1 for neither: the first had no fingerprint to find it by, and a file never seen had to be
    written after the newest first-seen time, the second's. Its lines were lost, said as "gone" once it
    was compressed (a round of 50 lines of most files, 2 in ~130 runs of the churn test with a broker
    outage and kill -9). It is read now: written after the first file seen only empty."""
    reg = Registry(tmp_path / "data")
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    _known(reg, log, 0)
    first = identity_key(log.stat().st_dev, log.stat().st_ino)
    time.sleep(0.05)
    log.write_bytes(b"round 0\n")
    os.rename(log, tmp_path / "app.log.1")
    log.write_bytes(b"")
    time.sleep(0.05)
    _known(reg, log, 0)
    files = _metric("logagent_files_lost_total", "rotated_away")
    with caplog.at_level(logging.WARNING, logger="logagent.recovery"):
        assert [(g.kind, os.path.basename(g.where), g.start) for g in _plan(reg, log)] == [("file", "app.log.1", 0)]
    assert not caplog.records and _metric("logagent_files_lost_total", "rotated_away") == files
    entry = reg.get(first)
    assert entry is not None and entry.done  # read as a file never seen: its blank entry is finished


def test_a_file_never_seen_written_just_before_the_current_file_was_first_seen_is_read(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Round 0's file was read; logrotate renamed it, round 1 went to a new app.log that the agent
    never saw, and that was renamed too within milliseconds; the agent saw the next app.log (empty)
    and was killed at once. At the restart a file never seen had to be written after the newest
    first-seen time of the path, and that was the current file's own: round 1's file, written just
    before it, was passed by (a round of a file lost, 1 in 26 runs of the churn test with kill -9,
    misnamed "an earlier file seen only empty is gone" once compressed). The cut-off is the newest
    first-seen time of the path's other files now."""
    reg, log = _known_at(tmp_path, "app.log", b"round 0\n", 8)
    os.rename(log, tmp_path / "app.log.1")
    time.sleep(0.05)
    log.write_bytes(b"round 1\n")
    os.rename(tmp_path / "app.log.1", tmp_path / "app.log.2")
    os.rename(log, tmp_path / "app.log.1")
    log.write_bytes(b"")
    time.sleep(0.05)
    _known(reg, log, 0)
    with caplog.at_level(logging.WARNING, logger="logagent.recovery"):
        found = [(g.kind, os.path.basename(g.where), g.start) for g in _plan(reg, log)]
    assert found == [("file", "app.log.2", 8), ("file", "app.log.1", 0)]  # round 0's to its end, then round 1
    assert not caplog.records


def test_a_file_never_seen_before_a_file_seen_only_empty_is_read(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Round 0's file was read; round 1 went to an app.log the agent never saw (renamed within
    milliseconds: the plan at the next open, killed or racing the compression, did not keep it); the
    agent saw the next app.log empty, round 2 went there and it was rotated too. At the restart files
    never seen had to be written after that empty file was first seen: round 1's, written before, was
    passed by (a round of a file lost, 2 in ~90 runs of the churn test with kill -9). The bound is now
    the newest finished file before every unfinished one, else the oldest known."""
    reg, log = _known_at(tmp_path, "app.log", b"round 0\n", 8)
    time.sleep(0.05)
    os.rename(log, tmp_path / "app.log.1")
    log.write_bytes(b"round 1\n")  # never seen
    os.rename(tmp_path / "app.log.1", tmp_path / "app.log.2")
    os.rename(log, tmp_path / "app.log.1")
    time.sleep(0.05)
    log.write_bytes(b"")
    _known(reg, log, 0)  # seen only empty
    time.sleep(0.05)
    log.write_bytes(b"round 2\n")
    for n in (2, 1):
        os.rename(tmp_path / f"app.log.{n}", tmp_path / f"app.log.{n + 1}")
    os.rename(log, tmp_path / "app.log.1")
    log.write_bytes(b"round 3\n")
    with caplog.at_level(logging.WARNING, logger="logagent.recovery"):
        found = [(os.path.basename(g.where), g.start) for g in _plan(reg, log)]
    assert found == [("app.log.3", 8), ("app.log.2", 0), ("app.log.1", 0)]
    assert not caplog.records


def test_the_bound_for_files_never_seen_is_the_newest_finished_file_before_the_unfinished_ones() -> None:
    from logagent.sources.files.recovery import _unseen_cut_off
    from logagent.sources.files.registry import RegistryEntry

    def e(since: float, done: bool) -> tuple[str, RegistryEntry]:
        return f"k{since}", RegistryEntry("/l/app.log", 0, 1, int(since), "f", 8, since, since=since, done=done)

    assert _unseen_cut_off([e(1, True), e(2, True), e(3, False), e(4, True)], None, None) == 2
    assert _unseen_cut_off([e(1, True), e(2, True), e(4, True)], None, None) == 4
    assert _unseen_cut_off([e(3, False), e(5, False)], None, None) == 3  # none finished: the oldest
    assert _unseen_cut_off([e(1, True), e(9, False)], "k9", None) == 1  # the current file's own: not a bound
    assert _unseen_cut_off([e(9, False)], "k9", None) == 9  # ... unless it is the only one
    assert _unseen_cut_off([], None, 7.0) == 7.0 and _unseen_cut_off([], None, None) == 0.0
    many = [e(float(i), True) for i in range(1, 201)] + [e(0.5, False)]
    assert _unseen_cut_off(many, None, None) == 1.0  # never below the oldest finished file kept


async def test_a_file_seen_only_empty_whose_bytes_are_in_the_spool_is_read_from_there(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """app.log was seen only empty, then written, read and rotated away, its unacknowledged bytes copied
    into the spool, and the renamed file deleted; the run was killed before the registry learned its
    first bytes. The spool copy was passed by (the entry had no fingerprint to plan it by) and the
    lines said lost. The plan now takes the first bytes the spool copy was made with."""
    reg = Registry(tmp_path / "data")
    spool = Spool(tmp_path / "data", 1 << 20)
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    key = _known(reg, log, 0)  # seen only empty
    entry = reg.get(key)
    assert entry is not None and entry.fp_len == 0
    content = b"".join(b"round 0 line %d\n" % i for i in range(20))
    log.write_bytes(content)
    fp, fp_len = file_fingerprint(log)
    spooled = SpoolFile(entry.uid, spool.root / entry.uid, str(log), entry.dev, entry.ino, fp, fp_len, entry.since,
                        time.time())
    fd = os.open(log, os.O_RDONLY)
    try:
        await spool.copy(spooled, fd, 0, len(content))
    finally:
        os.close(fd)
    log.unlink()  # rotated away and deleted
    log.write_bytes(b"round 1\n")  # the next app.log (never seen)
    try:
        with caplog.at_level(logging.WARNING, logger="logagent.recovery"):
            found = [(g.kind, g.start) for g in _plan(reg, log, spool)]
    finally:
        spool.close()
    assert found == [("spool", 0)]
    assert not caplog.records
