"""The sysinfo reporter: the asyncio task that samples and emits."""

from __future__ import annotations

import asyncio
import math
import os
import re
import time
from collections.abc import Callable
from typing import Any

import orjson
import psutil
import pytest
from prometheus_client import REGISTRY

from logagent.config.sysinfo import SysinfoSettings
from logagent.sources.host.reporter import SysinfoReporter
from logagent.sources.host.sampler import PSEUDO_FILESYSTEMS, HostSampler
from tests.kit import eventually

IP, HOST = "10.0.0.5", "web-1"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ---------------------------------------------------------------------------- the reporter

class FakeEmit:
    """Collects messages; answers `result` (True = queued)."""

    def __init__(self, result: bool = True) -> None:
        self.result = result
        self.messages: list[tuple[str, bytes, bytes]] = []

    def __call__(self, topic: str, key: bytes, value: bytes) -> bool:
        self.messages.append((topic, key, value))
        return self.result


async def report_until(reporter: SysinfoReporter, condition: Callable[[], bool]) -> None:
    """Start the reporter, wait until `condition` holds, stop it."""
    await reporter.start()
    await eventually(condition, timeout=5.0)
    await reporter.stop()


def expected_measurements() -> set[str]:
    names = {"cpu", "mem", "swap", "system"}
    if any(p.fstype not in PSEUDO_FILESYSTEMS and os.path.isdir(p.mountpoint)
           for p in psutil.disk_partitions(all=False)):
        names.add("disk")
    if psutil.disk_io_counters(perdisk=True):
        names.add("diskio")
    if psutil.net_io_counters(pernic=True):
        names.add("net")
    return names


async def test_reporter_emits_json_messages() -> None:
    emit = FakeEmit()
    reporter = SysinfoReporter(SysinfoSettings(interval=0.05, topic="sys"), emit, IP, HOST)
    await reporter.start()
    await asyncio.sleep(0.6)
    await reporter.stop()
    assert emit.messages
    decoded = [orjson.loads(value) for _, _, value in emit.messages]
    assert {topic for topic, _, _ in emit.messages} == {"sys"}
    assert {key for _, key, _ in emit.messages} == {IP.encode()}
    assert expected_measurements() <= {m["name"] for m in decoded}
    for m in decoded:
        assert set(m) == {"name", "tags", "fields", "timestamp"}
        assert m["tags"]["host"] == HOST and m["tags"]["ip"] == IP
        assert isinstance(m["timestamp"], int) and abs(m["timestamp"] - time.time()) < 60
        assert m["fields"]
        for value in m["fields"].values():
            assert isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    cpu = [m for m in decoded if m["name"] == "cpu"]
    assert {"cpu-total", "cpu0"} <= {m["tags"]["cpu"] for m in cpu}
    assert all(0.0 <= m["fields"]["usage_percent"] <= 100.0 for m in cpu)
    # first emitted sample already has rates (baseline taken at start)
    for m in decoded:
        if m["name"] == "net":
            assert "bytes_recv_per_sec" in m["fields"]


async def test_reporter_influx_format() -> None:
    emit = FakeEmit()
    reporter = SysinfoReporter(SysinfoSettings(interval=0.05, format="influx"), emit, IP, HOST)
    await report_until(reporter, lambda: any(v.startswith(b"system,") for _, _, v in emit.messages))
    for _, _, value in emit.messages:
        line = value.decode()
        assert "\n" not in line
        head, fields, timestamp = line.rsplit(" ", 2)
        assert head.split(",")[1:3] == [f"host={HOST}", f"ip={IP}"]
        assert len(timestamp) == 19 and timestamp.endswith("000000000")
        assert "nan" not in fields.lower() and "inf" not in fields.lower()
    system = next(v.decode() for _, _, v in emit.messages if v.startswith(b"system,"))
    assert re.search(r"[ ,]n_cpus=\d+i[, ]", system) and re.search(r"[ ,]load1=[\d.e+-]+[, ]", system)


async def test_reporter_counts_drops_and_keeps_running() -> None:
    emit = FakeEmit(result=False)
    reporter = SysinfoReporter(SysinfoSettings(interval=0.05), emit, IP, HOST)
    dropped = metric("logagent_sysinfo_dropped_total")
    queued = metric("logagent_sysinfo_samples_total", measurement="mem")
    await report_until(reporter, lambda: sum(b'"name":"mem"' in v for _, _, v in emit.messages) >= 3)
    assert metric("logagent_sysinfo_dropped_total") - dropped >= len(emit.messages) > 0
    assert metric("logagent_sysinfo_samples_total", measurement="mem") == queued


async def test_reporter_survives_emit_and_sampling_exceptions(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"emit": 0, "sample": 0}

    def emit(topic: str, key: bytes, value: bytes) -> bool:
        calls["emit"] += 1
        raise RuntimeError("queue gone")

    real_sample = HostSampler.sample

    def flaky_sample(self: HostSampler) -> Any:
        calls["sample"] += 1
        if calls["sample"] == 1:
            raise RuntimeError("boom")
        return real_sample(self)

    monkeypatch.setattr(HostSampler, "sample", flaky_sample)
    reporter = SysinfoReporter(SysinfoSettings(interval=0.05), emit, IP, HOST)
    before = metric("logagent_sysinfo_errors_total", measurement="reporter")
    await reporter.start()
    await eventually(lambda: calls["sample"] >= 3 and calls["emit"] > 0, timeout=5.0)
    assert reporter._task is not None and not reporter._task.done()
    await reporter.stop()
    assert metric("logagent_sysinfo_errors_total", measurement="reporter") == before + 1


async def test_reporter_update_topic_and_interval_at_once() -> None:
    emit = FakeEmit()
    reporter = SysinfoReporter(SysinfoSettings(interval=3600, topic="old"), emit, IP, HOST)
    await reporter.start()
    await asyncio.sleep(0.2)
    assert emit.messages == []  # still waiting out the hour
    started = time.monotonic()
    reporter.update(SysinfoSettings(interval=0.05, topic="new"))
    await eventually(lambda: len({v[:40] for t, _, v in emit.messages if b'"system"' in v}) >= 1, timeout=5.0)
    assert time.monotonic() - started < 1.0
    await reporter.stop()
    assert {topic for topic, _, _ in emit.messages} == {"new"}
    assert reporter.settings.topic == "new"


async def test_reporter_disabled_idles_until_enabled() -> None:
    emit = FakeEmit()
    reporter = SysinfoReporter(SysinfoSettings(enabled=False, interval=0.05), emit, IP, HOST)
    await reporter.start()
    await asyncio.sleep(0.3)
    assert emit.messages == []
    reporter.update(SysinfoSettings(enabled=True, interval=0.05))
    await eventually(lambda: len(emit.messages) > 0, timeout=5.0)
    reporter.update(SysinfoSettings(enabled=False, interval=0.05))
    await asyncio.sleep(0.1)  # a sample in flight may still land
    count = len(emit.messages)
    await asyncio.sleep(0.3)
    assert len(emit.messages) == count
    await reporter.stop()


async def test_reporter_start_stop_idempotent() -> None:
    emit = FakeEmit()
    reporter = SysinfoReporter(SysinfoSettings(interval=0.05), emit, IP, HOST)
    await reporter.stop()  # never started
    await reporter.start()
    task = reporter._task
    await reporter.start()
    assert reporter._task is task
    await eventually(lambda: len(emit.messages) > 0, timeout=5.0)
    await asyncio.gather(reporter.stop(), reporter.stop())
    await reporter.stop()
    assert task is not None and task.done()
    assert asyncio.all_tasks() == {asyncio.current_task()}
    count = len(emit.messages)
    await asyncio.sleep(0.2)
    assert len(emit.messages) == count
    # and it can start again
    await reporter.start()
    await eventually(lambda: len(emit.messages) > count, timeout=5.0)
    await reporter.stop()
    assert asyncio.all_tasks() == {asyncio.current_task()}
