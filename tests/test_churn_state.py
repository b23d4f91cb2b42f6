"""Per-file state outside the registry must not outlive the files either (issue 20 item 6): a glob
folder where files with new names come and go leaves nothing behind per file."""

from __future__ import annotations

import os
from pathlib import Path

from logagent.collect import CollectEntry
from logagent.manager import EntryRunner, ManagerContext
from logagent.queue import BatchQueue
from logagent.registry import Registry
from logagent.tailer import FdBudget, TailOptions
from logagent.watcher import FileWatcher


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
