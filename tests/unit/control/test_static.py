"""StaticControl: `[collect] files` without etcd, at start and on SIGHUP, with its refusal rules."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from logagent.config.settings import Settings, load
from logagent.control.static import LABEL, StaticControl
from tests.kit import RecordingAgent


def settings(tmp_path: Path, entries: list[dict[str, Any]], interval: int = 5) -> Settings:
    ini = tmp_path / "config.ini"
    ini.write_text(f"[agent]\nip = 127.0.0.1\nhostname = h\nallowed_paths = {tmp_path}/logs/**\n"
                   f"[etcd]\naddress =\n[sysinfo]\ninterval = {interval}\n"
                   f"[collect]\nfiles = {json.dumps(entries)}\n")
    return load(ini, environ={})


def entry(tmp_path: Path, name: str, **extra: Any) -> dict[str, Any]:
    return {"path": str(tmp_path / "logs" / name), "topic": "web", **extra}


def refused_count() -> float:
    return REGISTRY.get_sample_value("logagent_config_errors_total", {"key": LABEL}) or 0.0


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "logagent.control" and r.levelno == level]


async def test_good_value_is_applied_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, "logagent.control")
    agent = RecordingAgent()
    await StaticControl(settings(tmp_path, [entry(tmp_path, "a.log"), entry(tmp_path, "*.txt")]), agent).start()
    assert agent.applied_paths == [[str(tmp_path / "logs" / "a.log"), str(tmp_path / "logs" / "*.txt")]]
    assert agent.sysinfo == []  # the reporter was built with [sysinfo]: nothing to re-apply at start
    assert messages(caplog, logging.INFO) == ["no [etcd] address: collecting 2 entries from [collect] files"]


async def test_bad_value_keeps_the_last_good(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    good = settings(tmp_path, [entry(tmp_path, "a.log")])
    applied = RecordingAgent()
    control = StaticControl(good, applied)
    before = refused_count()

    await control.start()
    await control.reload(dataclasses.replace(good, collect_files="[oops"))
    assert applied.applied_paths == [[str(tmp_path / "logs" / "a.log")]]  # the reload applied nothing
    assert control.entries is not None and [e.path for e in control.entries] == applied.applied_paths[0]
    assert refused_count() == before + 1
    assert [m for m in messages(caplog, logging.ERROR) if "[collect] files: not valid JSON" in m] != []


async def test_bad_value_before_anything_was_applied_collects_nothing(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture):
    bad = dataclasses.replace(settings(tmp_path, []), collect_files="null")
    applied = RecordingAgent()
    before = refused_count()
    await StaticControl(bad, applied).start()
    assert applied.applied_paths == [[]]  # judged: the agent is ready, collecting nothing
    assert refused_count() == before + 1
    assert messages(caplog, logging.WARNING) == [f"{bad.source}: [collect] files: refused: collecting nothing "
                                                 "(no [etcd] address)"]


async def test_bad_entries_are_refused_one_by_one(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    outside = {"path": "/etc/passwd", "topic": "web"}
    s = settings(tmp_path, [outside, entry(tmp_path, "a.log"), entry(tmp_path, "b.log", encoding="no-such-codec"),
                            entry(tmp_path, "c.log")])
    applied = RecordingAgent()
    before = refused_count()
    await StaticControl(s, applied).start()
    assert applied.applied_paths == [[str(tmp_path / "logs" / "a.log"), str(tmp_path / "logs" / "c.log")]]
    assert refused_count() == before + 2
    errors = messages(caplog, logging.ERROR)
    assert len(errors) == 2
    assert "entry 0" in errors[0] and "/etc/passwd" in errors[0]
    assert "entry 2" in errors[1] and "no-such-codec" in errors[1]


async def test_only_bad_entries_collect_nothing_and_say_so(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    s = settings(tmp_path, [{"path": "/etc/passwd", "topic": "web"}])
    applied = RecordingAgent()
    await StaticControl(s, applied).start()
    assert applied.applied_paths == [[]]
    assert messages(caplog, logging.WARNING) == [f"{s.source}: [collect] files: no good entry: collecting nothing "
                                                 "(no [etcd] address)"]


async def test_empty_list_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    s = settings(tmp_path, [])
    applied = RecordingAgent()
    await StaticControl(s, applied).start()
    assert applied.applied_paths == [[]]
    assert messages(caplog, logging.WARNING) == [f"{s.source}: [collect] files: an empty list: collecting nothing "
                                                 "(no [etcd] address)"]


async def test_reload_applies_the_new_value_and_sysinfo(tmp_path: Path):
    first = settings(tmp_path, [entry(tmp_path, "a.log")], interval=5)
    applied = RecordingAgent()
    control = StaticControl(first, applied)

    await control.start()
    second = settings(tmp_path, [entry(tmp_path, "b.log")], interval=9)
    await control.reload(second)
    await control.stop()
    await control.stop()  # idempotent
    assert applied.applied_paths == [[str(tmp_path / "logs" / "a.log")], [str(tmp_path / "logs" / "b.log")]]
    assert [s.interval for s in applied.sysinfo] == [9]
