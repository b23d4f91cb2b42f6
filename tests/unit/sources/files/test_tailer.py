"""FileTailer in process, on real files: acknowledged offsets, rotation, truncation, rewind, descriptors.

Kafka is replaced by acknowledging batches by hand; delivery through a real broker is
proven in tests/integration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import weakref
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from logagent.errors import SourceError
from logagent.pipeline.batch import Batch
from logagent.pipeline.buffer import BatchQueue
from logagent.runtime.backoff import Backoff
from logagent.sources.files import tailer as tailer_module
from logagent.sources.files.budget import FdBudget, stat_tick
from logagent.sources.files.registry import Registry, RegistryEntry, fingerprint_of, uid_of
from logagent.sources.files.shipper import Claims, Route, SourceSpec, TailContext, TailOptions
from logagent.sources.files.spool import Spool
from logagent.sources.files.tailer import FileTailer, head_hash
from tests.kit import eventually, need_compiled

OPTS = TailOptions(ip="127.0.0.1", host="h", stat_interval=0.05, rotate_wait=0.2, close_inactive=60)


class Harness:
    """Tailers with their queue, registry, descriptor budget and the stat tick (no inotify here).
    The `harness` fixture stops what a test started: read loops, the tick, open files."""

    def __init__(self, tmp: Path, budget: int = 16) -> None:
        self.tmp = tmp
        self.queue = BatchQueue(100000)
        self.registry = Registry(tmp / "data")
        self.budget = FdBudget(budget)
        self.rotated: list[FileTailer] = []
        self.all: list[FileTailer] = []
        self.allowed: tuple[str, ...] = (f"{tmp}/**",)
        self.claims = Claims()
        self.spool: Spool | None = None  # set by a test that wants rotated-away bytes spooled
        self.tasks: list[asyncio.Task[None]] = [asyncio.create_task(stat_tick(lambda: self.all, OPTS.stat_interval))]

    def tailer(self, path: Path, start_at_end: bool = False, opts: TailOptions = OPTS,
               spec: SourceSpec | None = None) -> FileTailer:
        ctx = TailContext(opts=opts, queue=self.queue, registry=self.registry, budget=self.budget,
                          allowed_paths=self.allowed, claims=self.claims, spool=self.spool)
        t = FileTailer(str(path), Route("t"), ctx, start_at_end, self.rotated.append, spec)
        self.all.append(t)
        return t

    def run(self, t: FileTailer) -> asyncio.Task[None]:
        """t's read loop, started (t opened by the caller)."""
        task = asyncio.create_task(t.run())
        self.tasks.append(task)
        return task

    def follow(self, name: str, content: str | bytes = "", **kw: object) -> tuple[Path, FileTailer,
                                                                              asyncio.Task[None]]:
        """File `name` with `content`, a tailer (tailer()'s options in kw) opened on it and reading."""
        log = self.tmp / name
        if isinstance(content, bytes):
            log.write_bytes(content)
        else:
            log.write_text(content)
        t = self.tailer(log, **kw)  # type: ignore[arg-type]
        t.open()
        return log, t, self.run(t)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for t in self.all:
            t.close()

    async def shipped_alone(self, name: str, line: str) -> tuple[FileTailer, Batch, dict[str, Any]]:
        """A file `name` (a full path: any name the file system takes) holding `line`, tailed: its
        tailer, the one batch it shipped and that batch's message."""
        with open(name, "w") as f:
            f.write(line)
        t = self.tailer(Path(name))
        t.open()
        self.run(t)
        [batch] = await self.batches()
        return t, batch, json.loads(batch.values[0])

    def on_disk(self, t: FileTailer) -> RegistryEntry | None:
        """t's entry as a restart would find it: the registry file in data_dir, read back."""
        saved = Registry(self.tmp / "data")
        saved.load()
        return saved.lookup(t.dev, t.ino)

    async def batches(self, timeout: float = 2.0) -> list[Batch]:
        out = [await asyncio.wait_for(self.queue.get(), timeout)]
        while (b := self.queue.get_nowait()) is not None:
            out.append(b)
        return out

    @staticmethod
    def ack(batch: Batch, error: object | None = None) -> None:
        batch.error = error
        batch.remaining = 0
        assert batch.owner is not None
        batch.owner.batch_done(batch)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Callable[..., Harness]]:
    """harness(budget=16) -> a Harness in tmp_path; all stopped and closed after the test."""
    made: list[Harness] = []

    def make(budget: int = 16) -> Harness:
        made.append(Harness(tmp_path, budget))
        return made[-1]

    yield make
    for h in made:
        await h.close()


def data(batches: list[Batch]) -> list[str]:
    return [json.loads(v)["data"] for b in batches for v in b.values]


async def test_offset_moves_only_when_every_earlier_batch_is_acknowledged(harness: Callable[..., Harness]):
    h = harness()
    log, t, _ = h.follow("a.log")
    with open(log, "a") as f:
        f.write("one\n")
    [b1] = await h.batches()
    with open(log, "a") as f:
        f.write("two\n")
    [b2] = await h.batches()
    h.ack(b2)
    assert t.acked == 0, "a later ack must not move the offset past an unacknowledged batch"
    h.ack(b1)
    assert t.acked == 8
    st = log.stat()
    entry = h.registry.lookup(st.st_dev, st.st_ino)
    assert entry is not None and entry.offset == 8


async def test_failed_batch_rewinds_to_the_acknowledged_offset(harness: Callable[..., Harness],
                                                               monkeypatch: pytest.MonkeyPatch):
    h = harness()
    log, t, _ = h.follow("a.log", "keep\n")
    t.retry = Backoff(first=0.01, cap=0.01)
    [b1] = await h.batches()
    h.ack(b1)
    with open(log, "a") as f:
        f.write("refused\nlater\n")
    [b2] = await h.batches()
    h.ack(b2, error="MSG_SIZE_TOO_LARGE")
    again = await h.batches()
    assert data(again) == ["refused", "later"]
    assert again[0].generation == b2.generation + 1
    h.ack(b2)  # a stale report of the old generation changes nothing
    assert t.acked == 5


async def test_rename_rotation_reads_old_file_to_end_and_sends_held_partial(harness: Callable[..., Harness],
                                                                            tmp_path: Path):
    h = harness()
    log, t, task = h.follow("a.log", "a\n")
    assert data(await h.batches()) == ["a"]
    os.rename(log, tmp_path / "a.log.1")
    with open(tmp_path / "a.log.1", "a") as f:  # a late write to the renamed file
        f.write("late\nno newline")
    got: list[str] = []
    while len(got) < 2:
        got += data(await h.batches())
    assert got == ["late", "no newline"]
    await asyncio.wait_for(task, 3)  # finished after rotate_wait without growth
    assert h.rotated == [t] and t.fd is None and h.budget.in_use == 0


async def test_a_file_that_follows_a_rotated_one_is_on_disk_before_its_first_line_goes(
        harness: Callable[..., Harness], tmp_path: Path):
    """The time a file was first seen is part of its uid, and so of every msgid of its lines
    (docs/messages.md): were the new file of a rotated path only in memory when its lines went
    out, a kill -9 before the next flush would make the restart see it anew, under another uid,
    and send those lines again under other msgids, which no consumer can drop (the exactly_once
    fault test saw 100 such lines in 1 of 2 runs)."""
    h = harness()
    log, first, _ = h.follow("a.log", "a\n")
    assert data(await h.batches()) == ["a"]
    os.rename(log, tmp_path / "a.log.1")
    log.write_text("b\n")
    t = h.tailer(log)
    t.after = first  # as the manager makes it: per path, the earlier file first
    t.open()
    h.run(t)
    got: list[str] = []
    while "b" not in got:
        got += data(await h.batches())
    saved, live = h.on_disk(t), h.registry.get(t.reg_key)
    assert saved is not None and live is not None and saved.uid == live.uid


async def closed_after_one_line(h: Harness) -> tuple[Path, FileTailer, asyncio.Task[None]]:
    """A running tailer that shipped one line and then closed its file for inactivity."""
    log, t, task = h.follow("a.log", "a\n", opts=replace(OPTS, close_inactive=0.1))
    assert data(await h.batches()) == ["a"]
    await eventually(lambda: t.fd is None, what="closed: idle past close_inactive")
    return log, t, task


async def test_file_renamed_while_closed_is_followed_to_its_new_name(harness: Callable[..., Harness],
                                                                     tmp_path: Path):
    """Closed for inactivity, then written to and renamed before the agent looked again: the
    old file is found in its folder by inode and read to its end; nothing is skipped."""
    h = harness()
    log, t, task = await closed_after_one_line(h)
    with open(log, "a") as f:
        f.write("b\n")
    os.rename(log, tmp_path / "a.log.1")
    with open(tmp_path / "a.log.1", "a") as f:  # the application still writes to its descriptor
        f.write("c\n")
    log.write_text("new file\n")  # and a new file under the name, not this tailer's
    got: list[str] = []
    while len(got) < 2:
        got += data(await h.batches())
    assert got == ["b", "c"]
    await asyncio.wait_for(task, 3)
    assert h.rotated == [t] and t.fd is None and h.budget.in_use == 0


async def test_file_deleted_while_closed_ends_its_tailer(harness: Callable[..., Harness]):
    h = harness()
    log, t, task = await closed_after_one_line(h)
    log.unlink()
    await asyncio.wait_for(task, 3)
    assert h.rotated == [t] and t.finished and h.budget.in_use == 0


async def test_start_decision_is_on_disk_before_the_first_line_is_read(harness: Callable[..., Harness]):
    h = harness()  # its registry has no periodic flush at all
    log, t, task = h.follow("a.log", "old\n", start_at_end=True)
    with open(log, "a") as f:
        f.write("new\n")
    assert data(await h.batches()) == ["new"]
    entry = h.on_disk(t)  # what a restart after kill -9 would find
    assert entry is not None and entry.offset == 4
    t.close()
    t.wake()
    await asyncio.wait_for(task, 3)


async def _truncated_then_written(h: Harness, log: Path, text: str) -> list[Batch]:
    """truncate(0), a pause in which the tailer sees the file empty, then `text` appended: the
    batches the tailer makes of it."""
    with open(log, "r+") as f:
        f.truncate(0)
    await asyncio.sleep(0.15)
    with open(log, "a") as f:
        f.write(text)
    return await h.batches()


async def test_truncation_starts_again_at_zero(harness: Callable[..., Harness]):
    h = harness()
    log, _, _ = h.follow("a.log", "first line\n")
    assert data(await h.batches()) == ["first line"]
    batches = await _truncated_then_written(h, log, "new\n")
    assert data(batches) == ["new"] and json.loads(batches[0].values[0])["offset"] == 0


async def test_the_new_content_after_a_truncate_is_on_disk_before_its_first_line_goes(
        harness: Callable[..., Harness]):
    """copytruncate: the content read again from 0 gets a uid of its own (its msgids must not be the
    old content's). Were that only in memory when its lines went out, a kill -9 before the next
    flush would read them again under the old uid: other msgids, which no consumer can drop."""
    h = harness()
    log, t, _ = h.follow("a.log", "first line\n")
    assert data(await h.batches()) == ["first line"]
    await h.registry.persist()
    batches = await _truncated_then_written(h, log, "new\n")
    assert data(batches) == ["new"]
    saved, live = h.on_disk(t), h.registry.get(t.reg_key)
    assert saved is not None and live is not None and saved.uid == live.uid
    assert json.loads(batches[0].values[0])["msgid"].split("/")[1] == live.uid


async def test_a_line_cut_by_a_truncate_is_counted(harness: Callable[..., Harness],
                                                   caplog: pytest.LogCaptureFixture):
    from prometheus_client import REGISTRY

    def lost() -> float:
        return REGISTRY.get_sample_value("logagent_bytes_lost_total", {"reason": "truncated_line"}) or 0.0

    h = harness()
    log, _, _ = h.follow("a.log", "first line\nhalf a li")
    assert data(await h.batches()) == ["first line"]
    before = lost()
    with open(log, "r+") as f:
        f.truncate(0)
        f.write("new\n")
    assert data(await h.batches()) == ["new"]
    assert lost() == before + len("half a li")
    assert any("a.log" in r.getMessage() and r.levelname == "WARNING" and "without its end" in r.getMessage()
               for r in caplog.records)


async def test_start_at_end_begins_after_the_last_complete_line(harness: Callable[..., Harness], tmp_path: Path):
    h = harness()
    log = tmp_path / "a.log"
    log.write_text("old\nhalf a li")
    t = h.tailer(log, start_at_end=True)
    t.open()
    assert t.read_pos == 4
    h.run(t)
    with open(log, "a") as f:
        f.write("ne\n")
    assert data(await h.batches()) == ["half a line"]


async def test_fd_budget_closes_idle_files_and_reopens_them_on_change(harness: Callable[..., Harness],
                                                                      tmp_path: Path):
    h = harness(budget=2)
    files = [tmp_path / f"{i}.log" for i in range(4)]
    tailers = []
    for p in files:
        p.write_text(f"{p.name}\n")
    for p in files:
        t = h.tailer(p)
        t._last_growth -= 10  # long idle: evictable
        t.open()
        tailers.append(t)
        assert h.budget.in_use <= 2
    tasks = [h.run(t) for t in tailers]
    got: list[str] = []
    while len(got) < 4:
        got += data(await h.batches())
    assert sorted(got) == sorted(p.name for p in files)
    assert h.budget.in_use <= 2
    for task in tasks:
        task.cancel()
    for t in tailers:
        t.close()
    assert h.budget.in_use == 0


async def test_not_a_regular_file_is_refused(harness: Callable[..., Harness], tmp_path: Path):
    h = harness()
    d = tmp_path / "dir.log"
    d.mkdir()
    with pytest.raises(SourceError, match="not a regular file"):
        h.tailer(d).open()
    assert h.budget.in_use == 0
    with pytest.raises(SourceError, match="cannot open"):
        h.tailer(tmp_path / "missing.log").open()


async def test_idle_tailer_is_woken_only_when_its_file_changes(harness: Callable[..., Harness], tmp_path: Path):
    h = harness()
    log, t, _ = h.follow("a.log")
    await asyncio.sleep(0.2)
    assert not t.needs_attention()
    with open(log, "a") as f:
        f.write("x\n")
    assert t.needs_attention()
    assert data(await h.batches()) == ["x"]
    os.rename(log, tmp_path / "b.log")
    await eventually(lambda: h.rotated == [t], what="the rename noticed")


async def test_more_files_than_descriptors_are_parked_not_refused(harness: Callable[..., Harness],
                                                                  tmp_path: Path):
    """max_open_files 2, five files each with data: all are read, never more than 2 open."""
    h = harness(budget=2)
    files = [tmp_path / f"p{i}.log" for i in range(5)]
    for p in files:
        p.write_text(f"{p.name}\n")
    tailers = [h.tailer(p) for p in files]
    for t in tailers:
        t.open()  # never raises: the ones without a slot are identified and parked
    assert h.budget.in_use == 2
    for t in tailers:
        h.run(t)
    got: list[str] = []
    while len(got) < 5:
        got += data(await h.batches(timeout=5))
        assert h.budget.in_use <= 2
    assert sorted(got) == sorted(p.name for p in files)


def test_descriptor_budget_fits_the_process_limit():
    import resource

    from logagent.sources.files.budget import FD_HEADROOM, descriptor_budget

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert descriptor_budget(100) == 100
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 100 + FD_HEADROOM or soft == resource.RLIM_INFINITY
    if hard != resource.RLIM_INFINITY:
        assert descriptor_budget(hard * 2) == max(8, hard - FD_HEADROOM)


async def test_invalid_bytes_are_replaced_counted_and_logged(harness: Callable[..., Harness], tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture):
    import logging

    from logagent.runtime import metrics

    counter = metrics.DECODE_ERRORS.labels(metrics.path_label(str(tmp_path / "bin.log")))
    before = counter._value.get()
    caplog.set_level(logging.WARNING, logger="logagent.tailer")
    h = harness()
    h.follow("bin.log", b"ok line\n\xff\xfe\x00binary\nfine\n")
    assert data(await h.batches()) == ["ok line", "\ufffd\ufffd\x00binary", "fine"]
    assert counter._value.get() - before == 1
    assert any("not valid utf-8" in r.getMessage() and "bin.log" in r.getMessage() for r in caplog.records)


class _Quiet:
    """A stand-in for FileTailer as the stat tick sees it."""

    def __init__(self, last_growth: float, notified: bool = False) -> None:
        self.last_growth = last_growth
        self.notified = notified  # inotify tells of it all the time
        self.checks = 0

    def needs_attention(self) -> bool:
        self.checks += 1
        return False

    def tick_may_pass(self, quiet_since: float, since: float) -> bool:
        return self.last_growth < quiet_since or self.notified

    def wake(self) -> None:  # pragma: no cover - needs_attention says no
        raise AssertionError("nothing changed")


async def test_stat_tick_checks_quiet_files_every_fifth_tick_only() -> None:
    busy = _Quiet(last_growth=time.monotonic() + 3600)  # grows "now" for the whole test
    quiet = _Quiet(last_growth=time.monotonic() - 3600)
    task = asyncio.create_task(stat_tick(lambda: [busy, quiet], 0.01))
    while busy.checks < 20 and not task.done():
        await asyncio.sleep(0.005)
    task.cancel()
    busy_checks, quiet_checks = busy.checks, quiet.checks
    assert busy_checks >= 20
    assert busy_checks // 5 - 1 <= quiet_checks <= busy_checks // 5 + 1


async def test_stat_tick_checks_files_inotify_told_of_every_fifth_tick_only() -> None:
    """10,000 files written every second: inotify woke each for its write, the tick need not look
    (issue 23); every fifth tick it still does (what inotify cannot tell: the folder renamed)."""
    unheard = _Quiet(last_growth=time.monotonic() + 3600)
    heard = _Quiet(last_growth=time.monotonic() + 3600, notified=True)
    task = asyncio.create_task(stat_tick(lambda: [unheard, heard], 0.01))
    while unheard.checks < 20 and not task.done():
        await asyncio.sleep(0.005)
    task.cancel()
    assert unheard.checks >= 20
    assert unheard.checks // 5 - 1 <= heard.checks <= unheard.checks // 5 + 1


async def test_truncated_and_at_once_written_past_the_old_offset_is_read_from_zero(harness: Callable[..., Harness]):
    """truncate(0) followed at once by more bytes than the old offset: the size alone does not tell;
    the changed first bytes do. No fragment, no lost first line."""
    h = harness()
    log, t, _ = h.follow("a.log", "first\n")
    assert data(await h.batches()) == ["first"]
    with open(log, "r+") as f:  # no read in between: one write of the new content
        f.truncate(0)
        f.write("rewritten 1\nrewritten 2\n")
    batches = await h.batches()
    assert data(batches) == ["rewritten 1", "rewritten 2"]
    assert json.loads(batches[0].values[0])["offset"] == 0
    for b in batches:
        h.ack(b)
    assert t.acked == len("rewritten 1\nrewritten 2\n")


async def test_a_file_past_its_fingerprint_rewritten_past_the_old_offset_is_read_from_zero(
        harness: Callable[..., Harness]):
    """As above, with a head past the fingerprint's 1 KiB: the read of a write notified checks the head
    with the compiled reader where it is built (its hash of the head differs), else with os.pread."""
    h = harness()
    log, t, _ = h.follow("big.log", RACE_HEAD)
    for b in await h.batches():
        h.ack(b)
    await parked(t)
    with open(log, "a") as f:
        f.write("old tail\n")
    t.notify(named=False)
    assert data(await h.batches()) == ["old tail"] and t.fp_len == 1024  # read in the callback
    with open(log, "r+") as f:
        f.truncate(0)
        f.write(RACE_NEW + "\n")
    t.notify(named=False)
    batches = await h.batches()
    assert data(batches) == [RACE_NEW]
    assert json.loads(batches[0].values[0])["offset"] == 0


@pytest.mark.parametrize("compressed", [False, True])
async def test_copytruncate_reads_what_was_not_read_yet_from_the_copy(harness: Callable[..., Harness],
                                                                      compressed: bool):
    """Grown, copied to app.log.1 (or app.log.1.gz: compressed at once), truncated and written again
    before the tailer looked: the lines it had not read are read from the copy, then the new content from
    0; nothing twice."""
    import gzip
    import shutil

    h = harness()
    first = "".join(f"old {i:04d}\n" for i in range(100))
    log, t, _ = h.follow("app.log", first)
    got = await h.batches()
    while sum(len(b.values) for b in got) < 100:
        got += await h.batches()
    assert data(got) == first.splitlines()
    grown = "".join(f"unread {i:04d}\n" for i in range(50))
    copy = log.with_name("app.log.1.gz" if compressed else "app.log.1")
    # No await from here to the reads below: the tailer cannot look in between.
    with open(log, "a") as f:
        f.write(grown)
    if compressed:
        copy.write_bytes(gzip.compress(log.read_bytes()))
    else:
        shutil.copy(log, copy)
    with open(log, "r+") as f:
        f.truncate(0)
        f.write("new 1\nnew 2\n")
    later: list[Batch] = []
    with contextlib.suppress(TimeoutError):
        while len(data(later)) < 52:
            later += await h.batches(timeout=3.0)
    assert data(later) == grown.splitlines() + ["new 1", "new 2"]
    assert [json.loads(later[-1].values[-1])["offset"]] == [len("new 1\n")]
    for b in got + later:
        h.ack(b)
    assert t.acked == len("new 1\nnew 2\n")


async def test_a_rotated_file_that_grew_while_its_tailer_waited_for_the_queue_is_read_to_its_end(
        harness: Callable[..., Harness], tmp_path: Path):
    """Kafka down, the queue full: the tailer waits in put() while its file is renamed and written to
    past rotate_wait. When the put returns, what was written meanwhile is read before the file is
    finished (it was finished at once, and those lines lost, when its spool copy was dropped with it)."""
    h = harness()
    h.queue = BatchQueue(1)
    log, t, _ = h.follow("a.log", "one\n")
    await eventually(lambda: h.queue.depth == 1)  # "one" fills the queue; nobody takes it yet
    with open(log, "a") as f:
        f.write("two\n")
    await eventually(lambda: t.read_pos == 8)  # read: its put() waits for room
    log.rename(tmp_path / "a.log.1")
    await eventually(lambda: t.rotated)
    with open(tmp_path / "a.log.1", "a") as f:
        f.write("three\n")  # the application's last write before it reopens its log
    await eventually(lambda: time.monotonic() - t.last_growth >= OPTS.rotate_wait + 0.1, timeout=5)
    got: list[Batch] = []
    with contextlib.suppress(TimeoutError):
        while data(got)[-1:] != ["three"]:
            got += await h.batches(timeout=2.0)
    assert data(got) == ["one", "two", "three"]


async def test_one_file_under_two_names_is_read_once(harness: Callable[..., Harness], tmp_path: Path):
    from logagent.errors import AlreadyCollected

    h = harness()
    log = tmp_path / "a.log"
    log.write_text("x\n")
    alias = tmp_path / "alias.log"
    alias.symlink_to(log)
    first = h.tailer(log)
    first.open()
    second = h.tailer(alias)
    with pytest.raises(AlreadyCollected, match="same file as") as caught:
        second.open()
    assert caught.value.holder is first and h.budget.in_use == 1
    first.close()  # released: the other name may take it now
    second.open()
    second.close()


async def test_a_symlink_swapped_in_after_the_check_is_refused_on_the_descriptor(harness: Callable[..., Harness],
                                                                                 tmp_path: Path):
    from logagent.errors import NotAllowed

    h = harness()
    (tmp_path / "logs").mkdir()
    h.allowed = (f"{tmp_path}/logs/**",)
    secret = tmp_path / "secret"
    secret.write_text("root:x:0:0\n")
    log = tmp_path / "logs" / "a.log"
    log.symlink_to(secret)  # as if swapped in between a name check and the open
    with pytest.raises(NotAllowed):
        h.tailer(log).open()
    assert h.budget.in_use == 0 and h.queue.empty()


async def test_a_held_partial_line_is_shown_in_a_metric(harness: Callable[..., Harness]):
    from logagent.runtime import metrics

    h = harness()
    log, _, _ = h.follow("p.log", "done\nno newline yet")
    assert data(await h.batches()) == ["done"]
    gauge = metrics.PARTIAL_LINE_BYTES.labels(metrics.path_label(str(log)))
    metrics.flush()  # set from the reader's state when the metrics are read
    assert gauge._value.get() == len("no newline yet")
    with open(log, "a") as f:
        f.write("\n")
    assert data(await h.batches()) == ["no newline yet"]
    metrics.flush()
    assert gauge._value.get() == 0


async def test_a_name_that_is_not_utf8_is_shipped_escaped_and_saved(harness: Callable[..., Harness],
                                                                    tmp_path: Path):
    h = harness()
    name = os.fsdecode(bytes(tmp_path) + b"/\xff.log")
    t, batch, msg = await h.shipped_alone(name, "bad name\n")
    assert msg["path"] == f"{tmp_path}/\\xff.log" and msg["data"] == "bad name"
    assert batch.key == f"127.0.0.1:{tmp_path}/\\xff.log".encode()
    h.ack(batch)
    h.registry.save()
    entry = h.on_disk(t)
    assert entry is not None and entry.path == name and entry.offset == len("bad name\n")


async def test_a_name_with_control_characters_is_shipped_as_it_is_and_shown_escaped(
        harness: Callable[..., Harness], tmp_path: Path, caplog: pytest.LogCaptureFixture):
    # Issue 20 item 5: `path` and the key carry the name itself (JSON escapes it); logs and labels
    # show it escaped, one line.
    h = harness()
    name = f"{tmp_path}/x\n2026-12-06 00:00:00,000 CRITICAL logagent.agent: FORGED\x1b\u2028.log"
    t, batch, msg = await h.shipped_alone(name, "forged name\n")
    assert msg["path"] == name and msg["data"] == "forged name"
    assert batch.key == f"127.0.0.1:{name}".encode()  # what it was before: a key needing no escaping is unchanged
    shown = f"{tmp_path}/x\\x0a2026-12-06 00:00:00,000 CRITICAL logagent.agent: FORGED\\x1b\\xe2\\x80\\xa8.log"
    assert t.name == shown
    from logagent.runtime import metrics

    caplog.set_level(logging.INFO, "logagent.tailer")
    os.unlink(name)
    t.check_name()
    assert f"{shown} was renamed or deleted" in caplog.text
    metrics.flush()
    assert metrics.LINES_READ.labels(shown)._value.get() == 1
    h.ack(batch)
    h.registry.save()
    entry = h.on_disk(t)
    assert entry is not None and entry.path == name


# ---------------------------------------------------------------------------- container logs

CRI = SourceSpec(format="cri")
TS = "2026-12-06T10:00:00.000000001Z"


def cri(tag: str, text: str, stream: str = "stdout") -> str:
    return f"{TS} {stream} {tag} {text}\n"


async def _rotate_with_a_partial_line(h: Harness) -> tuple[Path, FileTailer, Path, int]:
    """0.log ends with the first records of a line; the kubelet renames it, the runtime goes on in a
    new 0.log. Returns (the renamed file, its tailer, the new 0.log, where the partial line began)."""
    log, t1, _ = h.follow("0.log", cri("F", "first") + cri("P", "begun in the old file, "), spec=CRI)
    [b1] = await h.batches()
    assert data([b1]) == ["first"]
    h.ack(b1)
    begun = len(cri("F", "first"))
    assert t1.acked == begun, "the registry stays at the start of the partial line"
    rotated = log.with_name("0.log.20261206-100000")
    log.rename(rotated)
    log.write_text(cri("F", "ended in the new one") + cri("F", "next"))
    return rotated, t1, log, begun


async def test_a_partial_line_at_a_rotation_is_joined_in_the_next_file(harness: Callable[..., Harness]):
    """The kubelet rotates 0.log between the partial records of a line and its last one: the line is
    one message (offset: its start in the renamed file), and the renamed file is acknowledged to its
    end only when that message is."""
    h = harness()
    rotated, t1, log, begun = await _rotate_with_a_partial_line(h)
    t2 = h.tailer(log, spec=CRI)
    t2.open()
    t2.after, t1.successor = t1, t2
    h.run(t2)
    [b2] = await h.batches(timeout=5)
    got = [json.loads(v) for v in b2.values]
    assert [(m["data"], m["offset"]) for m in got] == [("begun in the old file, ended in the new one", begun),
                                                       ("next", len(cri("F", "ended in the new one")))]
    assert got[0]["stream"] == "stdout" and got[0]["time"] == TS
    assert h.registry.joined(t2.reg_key) and not h.registry.joined(t1.reg_key), "a restart knows it went out whole"
    on_disk = Registry(h.tmp / "data")
    on_disk.load()
    assert on_disk.joined(t2.reg_key), "on disk before the line went out (exactly_once's offsets lead the file)"
    st = rotated.stat()
    old = h.registry.lookup(st.st_dev, st.st_ino)
    assert old is not None and old.offset == begun and not old.done, "owed until the joined line is acknowledged"
    h.ack(b2)
    await eventually(lambda: h.registry.get(t1.reg_key) is not None and h.registry.get(t1.reg_key).done,
                     what="the renamed file done once the joined line is acknowledged")
    assert h.registry.get(t1.reg_key).offset == st.st_size
    assert t2.acked == log.stat().st_size


async def test_a_partial_line_no_next_file_takes_is_sent_as_it_is(harness: Callable[..., Harness]):
    h = harness()
    _, t1, log, begun = await _rotate_with_a_partial_line(h)
    log.unlink()  # the container ended: no next file
    [b2] = await h.batches(timeout=5)
    assert [(json.loads(v)["data"], json.loads(v)["offset"]) for v in b2.values] == [("begun in the old file, ", begun)]
    h.ack(b2)
    await eventually(lambda: h.registry.get(t1.reg_key).done, what="the renamed file done")


async def test_a_next_file_already_read_does_not_take_the_partial_line(harness: Callable[..., Harness]):
    """The next file was read before the earlier one ended (its reader did not wait): the partial line
    cannot be joined there any more; it is sent as it is, the next file's records as theirs."""
    h = harness()
    _, t1, log, _ = await _rotate_with_a_partial_line(h)
    t2 = h.tailer(log, spec=CRI)
    t2.open()
    h.run(t2)
    first = await h.batches(timeout=5)
    assert data(first) == ["ended in the new one", "next"]
    t1.successor = t2
    rest = await h.batches(timeout=5)
    assert data(rest) == ["begun in the old file, "]

async def test_a_rotated_file_closed_before_kafka_acknowledged_it_keeps_its_entry_when_its_inode_is_reused(
        harness: Callable[..., Harness]):
    """Read to its end and closed, its lines still in flight (Kafka down), a rotated file's inode number
    is free: a new file takes it and registry.archive moves the old entry under its uid. The old file's
    acknowledgements must move that entry, not the new file's (which they overwrote, offset and
    fingerprint), and it stays owned, so recovery does not send it again from the spool (issue 23's
    fault run: 900 lines twice)."""
    h = harness()
    log, t, _ = h.follow("a.log", "one\ntwo\n")
    [batch] = await h.batches()
    os.rename(log, h.tmp / "a.log.1")
    await eventually(lambda: t.finished, timeout=5, what="the rotated file read to its end and closed")
    old = h.registry.get(t.reg_key)
    assert old is not None and t.fd is None
    uid = old.uid
    h.registry.archive(t.dev, t.ino)  # as a new file's FileTailer._identify does when it finds the inode taken
    new_key = h.registry.update(t.dev, t.ino, str(log), 0, "new-file-fp", 11)
    h.registry.own(new_key)
    assert uid in h.registry.owned  # recovery does not plan it again while its tailer answers for it
    h.ack(batch)
    moved = h.registry.get(uid)
    assert moved is not None and moved.offset == 8 and moved.done
    new = h.registry.get(new_key)
    assert new is not None and (new.offset, new.fp, new.done) == (0, "new-file-fp", False)
    assert new_key in h.registry.owned and uid not in h.registry.owned


async def test_a_tailer_has_slots_and_can_be_weakly_referenced(harness: Callable[..., Harness]):
    """Slots (no dictionary per tailer: issue 23), and a weak reference still: exactly_once keeps the
    owners of poisoned batches in a WeakKeyDictionary (sinks/kafka/transactional.py). Without it an
    aborted transaction crashed the drain (found by the fault suite)."""
    h = harness()
    _, t, _ = h.follow("weak.log", "one\n")
    await h.batches()
    assert not hasattr(t, "__dict__")
    poisoned: weakref.WeakKeyDictionary[FileTailer, int] = weakref.WeakKeyDictionary()
    poisoned[t] = 1
    assert poisoned.get(t, -1) == 1 and weakref.ref(t)() is t


async def test_acknowledgements_after_the_entry_moved_go_to_where_it_moved(harness: Callable[..., Harness]):
    """An acknowledgement advances the entry the previous one found (Registry.advance, no lookup by key)
    only while the registry's keys are as they were: here one acknowledgement before the file's entry is
    archived under its uid, and one after, which must move the archived entry, not the new file's."""
    h = harness()
    log, t, _ = h.follow("a.log", "one\n")
    [first] = await h.batches()
    h.ack(first)
    entry = h.registry.get(t.reg_key)
    assert entry is not None and entry.offset == 4 and t._entry is entry  # found once, then held
    with open(log, "a") as f:
        f.write("two\n")
    t.notify(named=False)
    [second] = await h.batches()
    uid = entry.uid
    h.registry.archive(t.dev, t.ino)
    new_key = h.registry.update(t.dev, t.ino, str(h.tmp / "other.log"), 0, "new-file-fp", 11)
    h.ack(second)
    moved = h.registry.get(uid)
    assert moved is not None and moved.offset == 8
    new = h.registry.get(new_key)
    assert new is not None and (new.offset, new.fp) == (0, "new-file-fp")
    assert t.reg_key == uid and t._entry is moved


async def test_a_write_inotify_told_of_is_read_without_a_look_at_the_name(harness: Callable[..., Harness],
                                                                        monkeypatch: pytest.MonkeyPatch):
    """issue 23: a write event wakes the read loop, which reads without stat-ing the name (a rename
    comes as an event of its own); a name event looks at the name at once."""
    h = harness()
    log, t, _ = h.follow("a.log", "one\n")
    assert data(await h.batches()) == ["one"]
    looks: list[str] = []
    real = FileTailer.check_name
    monkeypatch.setattr(FileTailer, "check_name", lambda self: (looks.append(self.path), real(self))[1])
    h.all.clear()  # no stat tick: only what inotify would tell wakes it
    with open(log, "a") as f:
        f.write("two\n")
    t.notify(named=False)
    assert data(await h.batches()) == ["two"]
    await asyncio.sleep(0.05)
    assert looks == []
    os.rename(log, f"{log}.1")
    t.notify(named=True)
    assert looks == [str(log)] and t.rotated  # seen at once, before the read loop runs
    h.all.append(t)  # closed with the rest


async def parked(t: FileTailer) -> None:
    """t's read loop sleeps until woken, with nothing of its own to do."""
    await eventually(lambda: t._parked, timeout=2.0, what="the read loop parked")


async def test_a_write_notified_while_the_loop_sleeps_is_read_in_the_callback(harness: Callable[..., Harness]):
    """issue 23: no task wake-up per line. The lines are on the queue when notify() returns, in
    order, and the registry and acknowledgements move as for a read of the loop."""
    h = harness()
    head = "".join(f"head {i:04d} {'x' * 40}\n" for i in range(30))  # past the fingerprint's 1 KiB
    log, t, _ = h.follow("a.log", head)
    first = await h.batches()
    await parked(t)
    with open(log, "a") as f:
        f.write("one\ntwo\n")
    t.notify(named=False)
    assert not t._wake.is_set()  # the loop was not woken
    [batch] = [h.queue.get_nowait()]
    assert batch is not None and data([batch]) == ["one", "two"]
    for b in [*first, batch]:
        h.ack(b)
    assert t.acked == len(head) + 8 == t.read_pos


async def test_a_new_file_is_read_in_the_callback_and_its_fingerprint_grows(harness: Callable[..., Harness]):
    """A file under 1 KiB, even empty until now: read in the callback too; its encoding is decided
    by its first bytes, and its fingerprint grows with it, in the registry at once."""
    h = harness()
    log, t, _ = h.follow("small.log", "")
    await parked(t)
    assert t.fp_len == 0 and not t.encoding
    with open(log, "a") as f:
        f.write("a\n")
    t.notify(named=False)
    assert not t._wake.is_set()
    [batch] = [h.queue.get_nowait()]
    assert batch is not None and data([batch]) == ["a"] and t.encoding == "utf-8"
    with open(log, "a") as f:
        f.write("b\n")
    t.notify(named=False)
    assert not t._wake.is_set()
    assert data([h.queue.get_nowait()]) == ["b"]
    entry = h.registry.get(t.reg_key)
    assert entry is not None and (t.fp, t.fp_len) == (fingerprint_of(b"a\nb\n"), 4) == (entry.fp, entry.fp_len)


async def test_the_fingerprint_grows_to_1_kib_with_the_file(harness: Callable[..., Harness],
                                                           monkeypatch: pytest.MonkeyPatch):
    """The fingerprint is always that of the file's first bytes, up to 1 KiB and no further. While it
    grows, each read takes it once, from the head the rewrite check read (issue 23: a new file's first
    kilobyte is a third of the lines of a 30 s bench run): the check itself compares the head's hash
    with the one the last growth kept, not a fingerprint of its own."""
    taken: list[int] = []
    real_fingerprint_of = tailer_module.fingerprint_of

    def fingerprint_of_counted(head: bytes) -> str:
        taken.append(len(head))
        return real_fingerprint_of(head)

    monkeypatch.setattr(tailer_module, "fingerprint_of", fingerprint_of_counted)
    h = harness()
    log, t, _ = h.follow("grow.log", "")
    await parked(t)
    written = b""
    for i in range(6):  # 6 x 300 bytes: past FINGERPRINT_BYTES in the fifth write
        line = f"{i} {'y' * 297}\n".encode()
        with open(log, "ab") as f:
            f.write(line)
        written += line
        t.notify(named=False)
        assert not t._wake.is_set() and data([h.queue.get_nowait()]) == [line[:-1].decode()]
        want = min(len(written), 1024)
        assert (t.fp, t.fp_len) == (fingerprint_of(written[:want]), want)
    assert taken == [300, 600, 900, 1024]  # one per read that grew it; none past 1 KiB
    entry = h.registry.get(t.reg_key)
    assert entry is not None and (entry.fp, entry.fp_len) == (fingerprint_of(written[:1024]), 1024)


RACE_HEAD = "".join(f"head {i:04d} {'x' * 40}\n" for i in range(30))  # past the fingerprint's 1 KiB
RACE_NEW = "new " + "y" * (len(RACE_HEAD) + 20)  # the new content: one line past the old offset


async def _rewritten_after_a_read(h: Harness, monkeypatch: pytest.MonkeyPatch, name: str, loop: bool,
                                  compiled: bool) -> list[bytes]:
    """A parked tailer of `name` (RACE_HEAD read and acknowledged) whose next read of "old tail" (by the
    read loop when `loop`, else by the watcher's callback) is followed at once, before anything else,
    by a truncate and RACE_NEW: a rewrite between the read and the look at the head. Returns what that
    read got (one item once it happened). `compiled`: the read goes through the compiled reader, whose
    two reads are one call; the rewrite is put between them by a stand-in that makes the same two reads
    with the real one. Else through os.pread."""
    log, t, _ = h.follow(name, RACE_HEAD)
    for b in await h.batches():
        h.ack(b)
    await parked(t)
    raced: list[bytes] = []

    def rewrite_once(offset: int, n: int, out: bytes) -> None:
        if offset == t.read_pos and out and not raced and (n == t.opts.read_buffer_bytes or not loop):
            raced.append(out)
            with open(log, "r+") as f:
                f.truncate(0)
                f.write(RACE_NEW + "\n")

    if compiled:
        real = tailer_module._readat
        need_compiled("" if real is not None else "logagent.sources.files._readat is not built", "the compiled reader")

        class Raced:
            head_hash = staticmethod(real.head_hash)

            @staticmethod
            def read_new(fd: int, pos: int, size: int, head_len: int) -> tuple[bytes, int]:
                out, _ = real.read_new(fd, pos, size, 0)
                rewrite_once(pos, size, out)
                _, hashed = real.read_new(fd, 0, 1, head_len)  # the head as the call reads it after the bytes
                return out, hashed if out else -1

        monkeypatch.setattr(tailer_module, "_readat", Raced)
    else:
        monkeypatch.setattr(tailer_module, "_readat", None)
        monkeypatch.setattr(tailer_module, "head_hash", zlib.crc32)
        real_pread = os.pread

        def pread_then_rewrite(fd: int, n: int, offset: int) -> bytes:
            out = real_pread(fd, n, offset)
            rewrite_once(offset, n, out)
            if raced:
                monkeypatch.setattr(os, "pread", real_pread)
            return out

        monkeypatch.setattr(os, "pread", pread_then_rewrite)
    with open(log, "a") as f:
        f.write("old tail\n")
    if loop:
        t.wake()  # the loop reads it (not the callback)
    else:
        t.notify(named=False)
        assert t._wake.is_set() and h.queue.get_nowait() is None  # nothing read in the callback was queued
    return raced


@pytest.mark.parametrize("compiled", [False, True], ids=["os.pread", "compiled reader"])
@pytest.mark.parametrize("loop", [False, True], ids=["callback", "read loop"])
async def test_a_rewrite_between_a_read_and_the_look_at_the_head_drops_what_was_read(
        harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch, loop: bool, compiled: bool):
    """The watcher's callback and the read loop both read first and look at the head after: a file
    truncated and written again just after the read has another head, so the bytes read (the old
    content's) are not shipped at the old offset; the new content is read from 0."""
    h = harness()
    raced = await _rewritten_after_a_read(h, monkeypatch, "race.log", loop, compiled)
    batches = await h.batches()
    assert raced == [b"old tail\n"]
    assert data(batches) == [RACE_NEW]
    assert json.loads(batches[0].values[0])["offset"] == 0


async def test_the_rewrite_check_trusts_a_hash_only_for_the_head_that_matched_the_fingerprint(
        harness: Callable[..., Harness]):
    """_same_head: a hash of the head (head_hash: the compiled reader's, else CRC-32) decides only once
    the fingerprint itself matched that head; a changed head, or a fingerprint grown since, is decided
    by the fingerprint."""
    h = harness()
    _, t, _ = h.follow("crc.log", "abc\n")
    assert data(await h.batches()) == ["abc"] and t.fp == fingerprint_of(b"abc\n")
    assert t._same_head(b"abc\n") and t._head_hash == (t.fp, head_hash(b"abc\n"))
    assert t._same_head(b"abc\n")  # now by the hash alone
    assert not t._same_head(b"abd\n")  # another hash: the fingerprint says no
    t.fp, t.fp_len = fingerprint_of(b"abc\nd"), 5  # grown since: the old hash is not for this fingerprint
    assert not t._same_head(b"abc\n")
    assert t._same_head(b"abc\nd") and t._head_hash == (t.fp, head_hash(b"abc\nd"))


async def test_a_small_file_rewritten_past_its_offset_is_read_again_from_zero_not_in_the_callback(
        harness: Callable[..., Harness]):
    """Truncated and at once written past the old offset, then notified: the callback's rewrite check
    (first bytes changed) leaves it to the loop, which reads the new content from offset 0."""
    h = harness()
    log, t, _ = h.follow("small.log", "")
    await parked(t)
    with open(log, "a") as f:
        f.write("old 1\n")
    t.notify(named=False)
    assert data([h.queue.get_nowait()]) == ["old 1"]
    with open(log, "r+") as f:
        f.truncate(0)
        f.write("new content 1\nnew content 2\n")
    t.notify(named=False)
    assert t._wake.is_set() and h.queue.get_nowait() is None  # not read in the callback
    batches = await h.batches()
    assert data(batches) == ["new content 1", "new content 2"]
    assert json.loads(batches[0].values[0])["offset"] == 0
    assert (t.fp, t.fp_len) == (fingerprint_of(b"new content 1\nnew content 2\n"), 28)


async def test_a_new_multiline_file_is_read_by_its_loop_which_sends_the_last_event_by_timeout(
        harness: Callable[..., Harness]):
    """Found by the full suite: a multiline file empty at start has no aggregator until its first bytes;
    read in the callback, its last event waited for a timeout its parked loop never ran."""
    from logagent.sources.files.multiline import MultilineSpec

    h = harness()
    spec = SourceSpec(multiline=MultilineSpec(preset="java", timeout=0.1))
    log, t, _ = h.follow("m.log", "", spec=spec)
    await parked(t)
    with open(log, "a") as f:
        f.write("Exception in thread main\n\tat a.b(C.java:1)\n")
    t.notify(named=False)
    assert t._wake.is_set()  # the loop reads it, and keeps the event's timeout
    assert data(await h.batches()) == ["Exception in thread main\n\tat a.b(C.java:1)"]


async def test_a_file_closed_for_the_descriptor_limit_is_reopened_and_read_in_the_callback(
        harness: Callable[..., Harness], tmp_path: Path):
    """Under max_open_files a write to a file closed while idle is read in the callback too: reopened
    there (the least recently active idle file closed for it), with no wake-up of its loop. Replaced
    while closed: the loop decides (it follows the old file)."""
    h = harness(budget=1)
    a_log, a, _ = h.follow("a.log", "a0\n")
    assert data(await h.batches()) == ["a0"]
    await parked(a)
    b_log, b, _ = h.follow("b.log", "b0\n")  # takes the only descriptor: a is closed, idle
    assert data(await h.batches()) == ["b0"]
    await parked(b)
    assert a.fd is None and b.fd is not None
    with open(a_log, "a") as f:
        f.write("a1\n")
    a.notify(named=False)
    assert not a._wake.is_set() and a.fd is not None and b.fd is None  # reopened here; b closed for it
    assert data([h.queue.get_nowait()]) == ["a1"]
    os.rename(b_log, tmp_path / "b.log.1")
    b_log.write_text("new file\n")
    with open(tmp_path / "b.log.1", "a") as f:
        f.write("b1\n")
    b.notify(named=False)
    assert b._wake.is_set() and b.fd is None  # not the file it had: its loop follows it
    got: list[str] = []
    while "b1" not in got:
        got += data(await h.batches(timeout=5))


async def test_what_the_callback_does_not_read_the_loop_reads(harness: Callable[..., Harness]):
    """Not read in the callback: a full queue, a truncated file, more than one read's worth (the
    loop reads the rest, in order)."""
    h = harness()
    big = "".join(f"line {i:05d} {'y' * 50}\n" for i in range(20))
    log2, t2, _ = h.follow("big.log", big)
    await h.batches()
    await parked(t2)
    many = [f"more {i:05d} {'z' * 50}" for i in range(1000)]  # 64 KB: four reads' worth
    with open(log2, "a") as f:
        f.write("".join(line + "\n" for line in many))
    t2.notify(named=False)
    assert t2._wake.is_set()  # the first 16 KiB here, the rest by the loop
    got: list[str] = []
    while len(got) < len(many):
        got += data(await h.batches())
    assert got == many

    await parked(t2)
    h.queue.capacity = h.queue.depth  # full
    with open(log2, "a") as f:
        f.write("when full\n")
    t2.notify(named=False)
    assert t2._wake.is_set() and h.queue.depth == h.queue.capacity  # nothing taken past capacity
    h.queue.capacity = 100000
    assert data(await h.batches()) == ["when full"]

    await parked(t2)
    with open(log2, "r+") as f:
        f.truncate(0)
    with open(log2, "a") as f:
        f.write("after truncation\n")
    t2.notify(named=False)
    assert t2._wake.is_set()  # the loop starts over
    assert data(await h.batches()) == ["after truncation"]


async def test_a_new_file_given_the_inode_of_another_names_file_seen_only_empty_is_a_file_of_its_own(
        harness: Callable[..., Harness]) -> None:
    """svc14.log was seen only empty (no fingerprint) and deleted; svc15.log's next file got its inode
    number. The entry was taken over: svc15.log's offsets went under svc14.log's name, a restart's
    recovery of svc15.log did not know that file (50 lines lost) and svc14.log's read it as one of its
    own (kill -9 with logrotate, 1 in 5 runs of 20 files). Now the old entry is archived and the new
    file has an entry of its own; a file of the same name seen only empty is still taken as itself."""
    h = harness()
    new = h.tmp / "svc15.log"
    new.write_text("svc15 line 1\n")
    st = new.stat()
    other = str(h.tmp / "svc14.log")
    h.registry.update(st.st_dev, st.st_ino, other, 0, fingerprint_of(b""), 0)
    t = h.tailer(new)
    t.open()
    entry = h.registry.get(t.reg_key)
    assert entry is not None and entry.path == str(new)
    assert [k for k, _ in h.registry.entries_for(str(new))] == [t.reg_key]
    assert [e.fp_len for _, e in h.registry.entries_for(other)] == [0], "kept, under its uid"
    t.close()
    same = h.tmp / "app.log"
    same.write_text("")
    st = same.stat()
    key = h.registry.update(st.st_dev, st.st_ino, str(same), 0, fingerprint_of(b""), 0)
    same.write_text("app line 1\n")
    t2 = h.tailer(same)
    t2.open()
    assert t2.reg_key == key and len(h.registry.entries_for(str(same))) == 1
    t2.close()


async def test_a_file_under_an_entry_seen_only_empty_before_other_files_of_its_path_gets_its_own_time(
        harness: Callable[..., Harness]) -> None:
    """0.log reused the inode number of a file first seen (empty) long before, whose entry was kept (the
    same name, no first bytes to tell them apart): the file kept that old first-seen time, so a later
    recovery owing it and files rotated away before it would have read it first (and joined a partial
    line wrongly). It gets a first-seen time of its own, after the path's other files, and its messages
    the uid that goes with it. A file seen only empty that is still the path's newest keeps its time."""
    h = harness()
    log = h.tmp / "0.log"
    log.write_text("")
    st = log.stat()
    key = h.registry.update(st.st_dev, st.st_ino, str(log), 0, fingerprint_of(b""), 0, since=100.0)
    h.registry.update(999, 1, str(log), 500, "a" * 24, 1024, since=103.6)
    log.write_text("line 1\n")
    t = h.tailer(log)
    t.open()
    entry = h.registry.get(t.reg_key)
    assert t.reg_key == key and entry is not None and entry.since > 103.6
    assert t._uid == entry.uid
    t.close()
    app = h.tmp / "app.log"
    app.write_text("")
    st = app.stat()
    h.registry.update(999, 2, str(app), 500, "b" * 24, 1024, since=150.0)
    key = h.registry.update(st.st_dev, st.st_ino, str(app), 0, fingerprint_of(b""), 0, since=200.0)
    t2 = h.tailer(app)
    t2.open()
    assert t2.reg_key == key and t2._uid == uid_of(st.st_dev, st.st_ino, 200.0)
    t2.close()


async def test_status_says_where_a_reader_is_and_what_it_waits_for(harness: Callable[..., Harness], tmp_path: Path):
    """GET /files: a reader's offsets and, in words, what it waits for: Kafka, a refused batch read
    again, the earlier file of its path, its renamed file's end, a closed descriptor."""
    h = harness()
    log, t, _ = h.follow("a.log", "a\nb\n", opts=replace(OPTS, close_inactive=0.3))
    [b1] = await h.batches()
    s = t.status()
    assert (s["path"], s["topic"], s["source"]) == (str(log), "t", "current file")
    assert (s["read"], s["acked"], s["in_flight"], s["state"]) == (4, 0, 1, "sending")
    h.ack(b1, error="MSG_SIZE_TOO_LARGE")
    assert t.status()["state"].startswith("Kafka refused a batch")
    await eventually(lambda: t.status()["kafka_failures"] == 1, what="the pause before it is read again")
    for b in await h.batches(timeout=5):  # read again after the pause, and acknowledged
        h.ack(b)
    s = t.status()
    assert (s["read"], s["acked"], s["in_flight"], s["kafka_failures"]) == (4, 4, 0, 0)
    assert s["state"] == "following (all read is acknowledged)"
    await eventually(lambda: t.fd is None, what="closed: idle past close_inactive")
    assert t.status()["state"].startswith("closed")
    with open(log, "a") as f:
        f.write("c\nno newline")
    for b in await h.batches(timeout=5):
        h.ack(b)
    assert t.status()["partial_bytes"] == len("no newline")
    os.rename(log, tmp_path / "a.log.1")
    log.write_text("d\n")
    t2 = h.tailer(log)
    t2.after = t
    t2.open()
    h.run(t2)
    assert t2.status()["state"] == "waiting for an earlier file of its path to be read first"
    t.notify(named=False)
    await eventually(lambda: t.rotated, what="the rename seen")
    assert t.status()["state"] in ("renamed or deleted: reading the old file to its end",
                                   "read to its end: waiting for Kafka to acknowledge it")
    got: list[Batch] = []
    while len([v for b in got for v in b.values]) < 2:
        got += await h.batches(timeout=5)
    assert t.status()["state"] == "read to its end: waiting for Kafka to acknowledge it" or t.finished
    for b in got:
        h.ack(b)
    await eventually(lambda: t.status()["state"] == "finished", what="the renamed file finished")


async def test_a_new_file_under_an_entry_seen_only_empty_whose_file_was_spooled_is_a_file_of_its_own(
        tmp_path: Path) -> None:
    """app.log was seen only empty (the run was killed before an acknowledgement), then written, read
    and rotated away with its bytes copied into the spool; the next app.log got its inode number.
    Taken for the file of that entry (the same name, no first bytes to tell), it inherited its uid: a
    restart read the spool's bytes (the old file's) as its start and passed its own by (two rounds
    lost in ~1 of 150 churn runs with kill -9 and exactly_once). The old entry is archived, its spool
    copy still there for recovery, and the new file has an entry of its own."""
    from logagent.sources.files.spool import Spool, SpoolFile

    registry = Registry(tmp_path / "data")
    spool = Spool(tmp_path / "data", 1 << 20)
    log = tmp_path / "app.log"
    log.write_text("the new file's first line\n")
    st = log.stat()
    key = registry.update(st.st_dev, st.st_ino, str(log), 0, fingerprint_of(b""), 0, since=100.0)
    entry = registry.get(key)
    assert entry is not None
    old_uid = entry.uid
    old = tmp_path / "old-bytes"
    old.write_text("the old file's line\n" * 10)
    spooled = SpoolFile(old_uid, spool.root / old_uid, str(log), st.st_dev, st.st_ino, "", 0, 100.0, 101.0)
    fd = os.open(old, os.O_RDONLY)
    try:
        await spool.copy(spooled, fd, 0, old.stat().st_size)
    finally:
        os.close(fd)
    assert spool.get(old_uid) is not None
    ctx = TailContext(opts=OPTS, queue=BatchQueue(100), registry=registry, budget=FdBudget(16),
                      allowed_paths=(f"{tmp_path}/**",), claims=Claims(), spool=spool)
    t = FileTailer(str(log), Route("t"), ctx, False, lambda _t: None, None)
    t.open()
    try:
        mine = registry.get(t.reg_key)
        assert mine is not None and mine.uid != old_uid and mine.fp == fingerprint_of(log.read_bytes()[:1024])
        archived = registry.get(old_uid)
        assert archived is not None and archived.fp_len == 0, "kept under its uid: its spool copy is owed"
    finally:
        t.close()
        spool.close()


async def test_a_new_file_under_a_finished_entry_seen_only_empty_is_a_file_of_its_own(tmp_path: Path) -> None:
    """0.log was seen only empty, then written, rotated away and read to its end through a copy: its
    entry finished, its fingerprint never taken. The next 0.log got its inode number. Taken for the
    file of that entry, the new file's entry stayed finished: a restart passed it by (a round lost, its
    spool copy deleted as no longer needed). The finished entry is archived, the new file's is not
    finished and starts at 0."""
    registry = Registry(tmp_path / "data")
    log = tmp_path / "0.log"
    log.write_text("the new file's first line\n")
    st = log.stat()
    key = registry.update(st.st_dev, st.st_ino, str(log), 0, fingerprint_of(b""), 0, since=100.0)
    registry.mark_done(key)
    entry = registry.get(key)
    assert entry is not None and entry.done
    old_uid = entry.uid
    ctx = TailContext(opts=OPTS, queue=BatchQueue(100), registry=registry, budget=FdBudget(16),
                      allowed_paths=(f"{tmp_path}/**",), claims=Claims())
    t = FileTailer(str(log), Route("t"), ctx, False, lambda _t: None, None)
    t.open()
    try:
        mine = registry.get(t.reg_key)
        assert mine is not None and mine.uid != old_uid and not mine.done and t.read_pos == 0
        archived = registry.get(old_uid)
        assert archived is not None and archived.done, "kept under its uid, finished"
    finally:
        t.close()


async def test_the_spool_copy_of_a_file_acknowledged_to_its_end_goes_once_the_registry_says_so(
        harness: Callable[..., Harness], tmp_path: Path):
    """Rotated away before Kafka had its lines: copied into the spool. Acknowledged to its end, its
    copy is deleted only by the registry write that says it is done: deleted at once, a kill before
    that write read the file again from the spool's missing bytes (said lost; a container log's next
    file then sent a line's last record as a line, 1 in ~100 churn runs with kill -9)."""
    h = harness()
    h.spool = Spool(tmp_path / "data", 1 << 20)
    log, t, _ = h.follow("a.log", "one\n")
    first = await h.batches()
    log.rename(tmp_path / "a.log.1")
    with open(tmp_path / "a.log.1", "a") as f:
        f.write("two\n")
    got = first + await h.batches(timeout=3.0)
    assert data(got) == ["one", "two"]
    spooled = await eventually(lambda: h.spool.get(t._uid) if h.spool is not None else None, timeout=5)
    assert spooled.covered(0) == len("one\ntwo\n")
    for b in got:
        h.ack(b)
    await eventually(lambda: t.finished, timeout=5)
    assert h.spool.get(t._uid) is spooled and spooled.folder.exists(), "kept while the registry on disk owes it"
    h.registry.flush()
    assert h.spool.get(t._uid) is None and not spooled.folder.exists()
    entry = Registry(tmp_path / "data")
    entry.load()
    assert all(e.done for e in entry.entries().values() if e.ino == t.ino)
    h.spool.close()
