"""Supervised tasks: crashes are logged with a traceback, counted, and restarted; none dies silently."""

from __future__ import annotations

import asyncio
import logging

import pytest

from logagent.errors import SourceError
from logagent.runtime import metrics, supervise
from logagent.runtime.backoff import Backoff


async def test_crash_is_logged_counted_and_restarted(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.ERROR, logger="logagent.supervise")
    calls: list[int] = []
    restarts: list[int] = []

    async def flaky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("boom")

    before = metrics.TASK_CRASHES.labels("test")._value.get()
    task = supervise.spawn("flaky", "test", flaky, before_restart=lambda: restarts.append(1),
                          backoff=Backoff(first=0.01, cap=0.01))
    await asyncio.wait_for(task, 2)
    assert metrics.TASK_CRASHES.labels("test")._value.get() - before == 2
    assert len(calls) == 3 and len(restarts) == 2
    assert sum("flaky crashed" in r.getMessage() and r.exc_info is not None for r in caplog.records) == 2


async def test_expected_errors_end_the_task_with_one_line(caplog: pytest.LogCaptureFixture):
    async def gone() -> None:
        raise SourceError("/x: cannot open: No such file")

    caplog.set_level(logging.WARNING, logger="logagent.supervise")
    await asyncio.wait_for(supervise.spawn("tailer /x", "test", gone, expected=(SourceError,)), 1)
    assert any("tailer /x stopped: /x: cannot open" in r.getMessage() for r in caplog.records)


async def test_cancel_and_wait_ends_every_task():
    tasks = [asyncio.create_task(asyncio.sleep(10)) for _ in range(3)]
    await supervise.cancel_and_wait(tasks)
    assert all(t.cancelled() for t in tasks)


async def test_a_run_longer_than_the_cap_resets_the_backoff(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.ERROR, logger="logagent.supervise")
    backoff = Backoff(first=0.1, cap=0.3, jitter=0)
    runs: list[float] = []

    async def crashes_late_then_early() -> None:
        runs.append(1)
        if len(runs) == 3:
            await asyncio.sleep(0.35)  # longer than the cap: a recovery, then a crash
        if len(runs) < 4:
            raise RuntimeError("boom")

    await asyncio.wait_for(supervise.spawn("late", "test", crashes_late_then_early, backoff=backoff), 2)
    delays = [float(r.getMessage().rsplit("restarting in ", 1)[1].split("s", 1)[0]) for r in caplog.records]
    assert delays == [0.1, 0.2, 0.1], delays


async def test_a_fatal_task_is_not_restarted_its_crash_goes_to_fatal(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.CRITICAL, logger="logagent.supervise")
    runs: list[int] = []
    fatal: list[BaseException] = []

    async def dies() -> None:
        runs.append(1)
        raise RuntimeError("the producer is gone")

    before = metrics.TASK_CRASHES.labels("test-fatal")._value.get()
    await asyncio.wait_for(supervise.spawn("drain", "test-fatal", dies, fatal=fatal.append), 2)
    assert runs == [1] and [str(e) for e in fatal] == ["the producer is gone"]
    assert metrics.TASK_CRASHES.labels("test-fatal")._value.get() == before + 1
    assert any("drain crashed" in r.getMessage() and r.exc_info for r in caplog.records)
