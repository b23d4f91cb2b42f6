"""The entry runner: per-file state outside the registry must not outlive the files (a glob
folder where files with new names come and go leaves nothing behind per file), and its folders stay
watched."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from logagent.pipeline.buffer import BatchQueue
from logagent.sources.files.budget import FdBudget
from logagent.sources.files.entry import CollectEntry
from logagent.sources.files.inotify import FileWatcher
from logagent.sources.files.manager import EntryRunner, ManagerContext
from logagent.sources.files.registry import Registry
from logagent.sources.files.shipper import TailOptions
from tests.kit import eventually


async def test_problems_of_files_no_longer_matched_are_forgotten(tmp_path: Path):
    """Each match that could not be opened (here a dangling symlink: the same 'No such file' as a
    file deleted between the glob's walk and the open) was kept in the runner's problem map for
    ever: one entry per vanished file, 39,120 of them in a churn of 100,000 files under load."""
    logs = tmp_path / "logs"
    logs.mkdir()
    watcher = FileWatcher()
    ctx = ManagerContext(opts=TailOptions(ip="127.0.0.1", host="h"), queue=BatchQueue(100),
                         registry=Registry(tmp_path / "data"), budget=FdBudget(64),
                         allowed_paths=(f"{tmp_path}/**",), watcher=watcher)
    runner = EntryRunner(CollectEntry(str(logs / "*.log"), "t"), ctx)
    try:
        for round_ in range(3):
            names = [logs / f"job-{round_}-{i}.log" for i in range(50)]
            for name in names:
                os.symlink(tmp_path / "nowhere", name)
            assert await runner.scan() == 0
            assert len(runner._errors) == 50, "each problem is reported (and kept while it lasts)"
            for name in names:
                name.unlink()
        await runner.scan()
        assert runner._errors == {}
    finally:
        await runner.stop()
        await watcher.stop()


async def test_a_match_gone_since_the_walk_is_no_error_when_its_own_tailer_saw_it_go(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """A walk lists job.log; its tailer sees it deleted (and drains it); the walk's result then
    starts a tailer for the name: 'cannot open: No such file' was an ERROR, kept in the problem map,
    for a file read to its end (a third of the files of the churn benchmark). A match that vanished
    before the agent ever saw it is still an ERROR."""
    caplog.set_level(logging.DEBUG, logger="logagent.manager")
    logs = tmp_path / "logs"
    logs.mkdir()
    watcher = FileWatcher()
    registry = Registry(tmp_path / "data")
    ctx = ManagerContext(opts=TailOptions(ip="127.0.0.1", host="h"), queue=BatchQueue(100), registry=registry,
                         budget=FdBudget(64), allowed_paths=(f"{tmp_path}/**",), watcher=watcher)
    runner = EntryRunner(CollectEntry(str(logs / "*.log"), "t"), ctx)
    job = logs / "job.log"
    job.write_text("one line\n")
    try:
        assert await runner.scan() == 1
        tailer = runner.tailers[str(job)]
        await eventually(lambda: tailer.read_pos == 9, what="the line read")
        job.unlink()
        tailer.check_name()  # the deletion seen: the tailer drains the file
        assert str(job) not in runner.tailers and tailer in runner.draining
        assert runner._start_tailer(str(job), False) is False  # what a walk that listed it does now
        # Read before, finished since (its tailer ended): the registry knows the name.
        runner._last.clear()
        assert registry.entries_for(str(job))
        assert runner._start_tailer(str(job), False) is False
        assert runner._errors == {}
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        # Never seen: a file that came and went before the agent could open it is still said.
        assert runner._start_tailer(str(logs / "never-seen.log"), False) is False
        assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == \
            [f"{logs}/never-seen.log: cannot open: No such file or directory"]
    finally:
        await runner.stop()
        await watcher.stop()


async def test_a_folder_deleted_and_made_anew_is_watched_again(tmp_path: Path):
    """The runner remembered a folder as watched for ever: once it was deleted (its inotify watch
    went with it) and made anew, its files were only polled (every stat_interval), not woken."""
    folder = tmp_path / "logs" / "app"
    folder.mkdir(parents=True)
    watcher = FileWatcher()
    await watcher.start()
    ctx = ManagerContext(opts=TailOptions(ip="127.0.0.1", host="h"), queue=BatchQueue(100),
                         registry=Registry(tmp_path / "data"), budget=FdBudget(64),
                         allowed_paths=(f"{tmp_path}/**",), watcher=watcher)
    runner = EntryRunner(CollectEntry(str(folder / "app.log"), "t"), ctx)
    try:
        await runner.scan()
        assert watcher.watching(str(folder))
        folder.rmdir()
        await eventually(lambda: not watcher.watching(str(folder)), what="the watch gone with its folder")
        folder.mkdir()
        await runner.scan()
        assert watcher.watching(str(folder))
    finally:
        await runner.stop()
        await watcher.stop()


def _series(path: str) -> list[tuple[str, ...]]:
    from logagent.runtime import metrics

    return [v for m in (metrics.LINES_READ, metrics.BYTES_READ) for v in list(m._metrics) if v[0] == path]


async def test_a_file_gone_for_good_and_a_removed_entry_leave_metrics(tmp_path: Path):
    """Per-file series stayed for every name ever read: in a folder where files with new names come
    and go, the first 1,000 names kept their series for ever and every later file shared (other)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    watcher = FileWatcher()
    await watcher.start()
    ctx = ManagerContext(opts=TailOptions(ip="127.0.0.1", host="h", rotate_wait=0.05, stat_interval=0.05),
                         queue=BatchQueue(100), registry=Registry(tmp_path / "data"), budget=FdBudget(64),
                         allowed_paths=(f"{tmp_path}/**",), watcher=watcher)
    runner = EntryRunner(CollectEntry(str(logs / "*.log"), "t"), ctx)
    job, keep = logs / "job.log", logs / "keep.log"
    job.write_text("one\n")
    keep.write_text("two\n")
    try:
        assert await runner.scan() == 2
        await eventually(lambda: _series(str(job)) and _series(str(keep)), what="both files read")
        tailer = runner.tailers[str(job)]
        job.unlink()
        tailer.check_name()  # the deletion seen: read to its end, finished after rotate_wait
        tailer.wake()
        await eventually(lambda: tailer.finished and tailer not in runner.draining, what="its reader ended")
        assert _series(str(job)) == [] and _series(str(keep)) != []
        runner.forget_metrics()  # the entry is removed
        assert _series(str(keep)) == []
    finally:
        await runner.stop()
        await watcher.stop()
