"""CopyTailer: earlier generations of a path read from their file, the spool or a compressed copy,
each under a registry entry of its own (the offsets of two files never mix)."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import time
from pathlib import Path

import pytest

from logagent.errors import SourceError
from logagent.pipeline.batch import Batch
from logagent.pipeline.buffer import BatchQueue
from logagent.sources.files.budget import FdBudget
from logagent.sources.files.generations import CopyTailer
from logagent.sources.files.recovery import FolderIndex, Generation, apply, plan
from logagent.sources.files.registry import Registry, fingerprint_of, uid_of
from logagent.sources.files.shipper import Route, TailContext, TailOptions
from logagent.sources.files.spool import Spool, SpoolFile

OPTS = TailOptions(ip="127.0.0.1", host="h")


def _plan(reg: Registry, spool: Spool, log: Path, ctx: TailContext | None = None) -> list[Generation]:
    held = (lambda dev, ino: ctx.claims.holder((dev, ino)) is not None) if ctx is not None else (lambda d, i: False)
    return apply(plan(str(log), reg, spool, held, FolderIndex(), reg.owned), reg)


def _spool_known(reg: Registry, spool: Spool, tmp: Path, log: Path, dev: int, ino: int, content: bytes) -> str:
    """A known generation of `log` (device, inode) whose file is gone and whose bytes are all in
    the spool: what a rotated file that was compressed and unlinked during an outage leaves."""
    key = reg.update(dev, ino, str(log), 0, fingerprint_of(content[:1024]), min(len(content), 1024),
                     size=len(content))
    entry = reg.get(key)
    assert entry is not None
    source = tmp / "source"
    source.write_bytes(content)
    fd = os.open(source, os.O_RDONLY)
    try:
        asyncio.run(spool.copy(SpoolFile(entry.uid, spool.root / entry.uid, str(log), dev, ino, entry.fp,
                                         entry.fp_len, entry.since, time.time()), fd, 0, len(content)))
    finally:
        os.close(fd)
    source.unlink()
    return key


def _y_reuses_xs_inode(tmp_path: Path, y_content: bytes, x_content: bytes
                       ) -> tuple[Path, Registry, Spool, os.stat_result, str, TailContext]:
    """logs/app.log.1 (Y, never seen) on the inode number the registry knows as X's (X's file gone,
    its bytes in the spool), written after X was first seen; logs/app.log the current file. Blocking
    (the spool copy runs its own loop). Returns (app.log, registry, spool, Y's stat, X's key, the
    readers' context on a queue of its own)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    reg, spool = Registry(tmp_path / "data"), Spool(tmp_path / "data", 1 << 20)
    y = logs / "app.log.1"
    y.write_bytes(y_content)
    st = y.stat()
    x_key = _spool_known(reg, spool, tmp_path, log, st.st_dev, st.st_ino, x_content)  # Y reuses X's inode
    later = time.time() + 1
    os.utime(y, (later, later))  # written after X was first seen
    log.write_text("current\n")
    ctx = TailContext(opts=OPTS, queue=BatchQueue(100000), registry=reg, budget=FdBudget(16),
                      allowed_paths=(f"{logs}/**",), spool=spool)
    return log, reg, spool, st, x_key, ctx


def _open_in_order(copies: list[CopyTailer], log: Path, ctx: TailContext, gens: list[Generation]) -> None:
    """The generations' readers, each after the one before, opened (as EntryRunner._recover makes
    them); appended to `copies` one by one, so that the caller closes those opened when one fails."""
    for gen in gens:
        copies.append(CopyTailer(str(log), Route("t"), ctx, None, gen, after=copies[-1] if copies else None))
        copies[-1].open()


def test_a_generation_never_seen_on_a_reused_inode_gets_an_entry_of_its_own(tmp_path: Path) -> None:
    """Issue 20 item 4 (found by the compound fault test, 1,440 lines lost): an earlier file X, known
    and read from the spool (its file compressed and unlinked), and a file Y never seen that got X's
    freed inode number, both planned at one start. Y's CopyTailer registered itself under the
    (device, inode) key that X's entry held: one entry for two files (Y's fingerprint, X's spool
    copy), so the next start read one of them and lost the other."""
    y_content = b"".join(b"Y line %04d\n" % i for i in range(100))
    x_content = b"".join(b"X line %04d\n" % i for i in range(100))
    log, reg, spool, st, x_key, ctx = _y_reuses_xs_inode(tmp_path, y_content, x_content)

    gens = _plan(reg, spool, log, ctx)
    copies: list[CopyTailer] = []
    try:
        # X is read from the spool under its own entry: its inode key, or its uid once the plan
        # moved it there (a file read from anything but its own inode is no longer that inode's).
        assert [g.kind for g in gens] == ["spool", "file"] and gens[1].key is None
        assert gens[0].key in (x_key, uid_of(st.st_dev, st.st_ino, gens[0].since))
        _open_in_order(copies, log, ctx, gens)
        # The agent is killed now (nothing acknowledged): the next start must find both files again.
        reg.save()
        again = Registry(tmp_path / "data")
        again.load()
        found = _plan(again, spool, log)
        assert sorted((g.kind, g.fp) for g in found) == sorted(
            [("spool", fingerprint_of(x_content[:1024])), ("file", fingerprint_of(y_content[:1024]))])
        assert [e.fp for e in again.entries().values() if e.uid == uid_of(st.st_dev, st.st_ino, gens[0].since)] \
            == [fingerprint_of(x_content[:1024])], "X's entry keeps X's fingerprint"
    finally:
        for copy in copies:
            copy.close()
        spool.close()


@pytest.mark.parametrize("never_seen_first", [False, True])
async def test_each_generation_on_a_reused_inode_moves_its_own_offset(tmp_path: Path, never_seen_first: bool) -> None:
    """The same two files read and acknowledged: every line once, and once both are done a new start
    plans nothing (nothing read twice, nothing left), and Y's entry is Y's, done at its end. Also
    when Y's reader is made first (its registration moves X's entry before X's reader looks it up)."""
    log, reg, spool, st, _, ctx = await asyncio.to_thread(_y_reuses_xs_inode, tmp_path, b"Y\n" * 50, b"X\n" * 70)
    queue = ctx.queue
    copies: list[CopyTailer] = []
    gens = _plan(reg, spool, log, ctx)
    _open_in_order(copies, log, ctx, list(reversed(gens)) if never_seen_first else gens)
    tasks = [asyncio.create_task(c.run()) for c in copies]
    try:
        shipped: list[bytes] = []
        while not all(t.done() for t in tasks):
            try:
                batch: Batch = await asyncio.wait_for(queue.get(), 5)
            except TimeoutError:
                break
            shipped += batch.values
            batch.remaining = 0
            assert batch.owner is not None
            batch.owner.batch_done(batch)
            await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert len(shipped) == 120
        reg.save()
        again = Registry(tmp_path / "data")
        again.load()
        assert _plan(again, spool, log) == []
        y_entry = again.lookup(st.st_dev, st.st_ino)
        assert y_entry is not None and (y_entry.fp, y_entry.offset, y_entry.done) == (
            fingerprint_of(b"Y\n" * 50), 100, True)
    finally:
        for t in tasks:
            t.cancel()
        for copy in copies:
            copy.close()
        spool.close()


async def test_a_generation_never_seen_is_on_disk_before_its_first_line_goes(tmp_path: Path) -> None:
    """Its entry, made by its reader, holds the time it was first seen: its uid, in every msgid of
    its lines (docs/messages.md). Were it only in memory when its lines went out, a kill -9 before
    the next flush would make the restart find it never seen again, under another uid, and send
    those lines again under other msgids, which no consumer can drop."""
    log, reg, spool, _, _, ctx = await asyncio.to_thread(_y_reuses_xs_inode, tmp_path, b"Y\n" * 50, b"X\n" * 70)
    await reg.persist()
    queue = ctx.queue
    copies: list[CopyTailer] = []
    gens = _plan(reg, spool, log, ctx)
    assert [g.kind for g in gens] == ["spool", "file"] and gens[1].key is None
    _open_in_order(copies, log, ctx, gens)
    y_copy = copies[1]
    tasks = [asyncio.create_task(c.run()) for c in copies]
    try:
        while True:
            batch: Batch = await asyncio.wait_for(queue.get(), 5)
            if batch.owner is y_copy:
                break
        saved = Registry(tmp_path / "data")
        saved.load()
        live = reg.get(y_copy.reg_key)
        assert live is not None
        assert [e.uid for e in saved.entries().values() if e.uid == live.uid] == [live.uid]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for copy in copies:
            copy.close()
        spool.close()

async def test_a_plain_generation_compressed_between_its_plan_and_its_opening_is_read_from_the_copy(
        tmp_path: Path) -> None:
    """The kubelet gzips 0.log.<time> (through .gz.tmp, then unlinks it) once the next rotation comes,
    which can fall between the plan that found the plain file and the opening of its reader: the
    reader was given up ('gone or replaced since it was found') and a later scan found the .gz and
    chained it after newer files: its lines came out of order (2 of 8 runs of the running-rotation
    integration test). Now the reader opens the compressed copy, found by the generation's first bytes."""
    pods = tmp_path / "pods"
    pods.mkdir()
    log = pods / "0.log"
    log.write_text("current\n")
    rotated = pods / "0.log.20261206-100001"
    content = b"".join(b"rotated line %04d\n" % i for i in range(200))
    rotated.write_bytes(content)
    st = rotated.stat()
    gen = Generation("file", str(rotated), 0, st.st_mtime, st.st_dev, st.st_ino, fingerprint_of(content[:1024]),
                     1024, None, st.st_mtime)
    gz = pods / "0.log.20261206-100001.gz"
    (pods / "0.log.20261206-100001.gz.tmp").write_bytes(gzip.compress(content))
    os.rename(pods / "0.log.20261206-100001.gz.tmp", gz)
    rotated.unlink()
    (pods / "0.log.20261206-100000.gz").write_bytes(gzip.compress(b"an older generation\n" * 60))  # not this one
    queue = BatchQueue(100000)
    reg = Registry(tmp_path / "data")
    ctx = TailContext(opts=OPTS, queue=queue, registry=reg, budget=FdBudget(16), allowed_paths=(f"{pods}/**",))
    copy = CopyTailer(str(log), Route("t"), ctx, None, gen)
    try:
        copy.open()
        assert (copy.gen.kind, copy.gen.where) == ("compressed", str(gz))
        task = asyncio.create_task(copy.run())
        shipped: list[bytes] = []
        while len(shipped) < 200:
            batch: Batch = await asyncio.wait_for(queue.get(), 5)
            shipped += batch.values
            batch.remaining = 0
            assert batch.owner is not None
            batch.owner.batch_done(batch)
        await asyncio.wait_for(task, 5)
        assert [json.loads(v)["data"] for v in shipped] == [f"rotated line {i:04d}" for i in range(200)]
    finally:
        copy.close()


def test_a_plain_generation_with_no_copy_is_still_given_up(tmp_path: Path) -> None:
    """Gone without a compressed copy of its bytes (deleted): said as before, nothing else read instead."""
    pods = tmp_path / "pods"
    pods.mkdir()
    rotated = pods / "0.log.20261206-100001"
    rotated.write_bytes(b"x\n" * 100)
    st = rotated.stat()
    gen = Generation("file", str(rotated), 0, st.st_mtime, st.st_dev, st.st_ino, fingerprint_of(b"x\n" * 100),
                     200, None, st.st_mtime)
    rotated.unlink()
    (pods / "0.log.20261206-100000.gz").write_bytes(gzip.compress(b"y\n" * 100))
    ctx = TailContext(opts=OPTS, queue=BatchQueue(10), registry=Registry(tmp_path / "data"), budget=FdBudget(16),
                      allowed_paths=(f"{pods}/**",))
    copy = CopyTailer(str(pods / "0.log"), Route("t"), ctx, None, gen)
    with pytest.raises(SourceError, match="since it was found"):
        copy.open()
    copy.close()
