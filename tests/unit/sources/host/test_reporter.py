"""Sysinfo reporter: settings, rate and cpu math, sampling with fake psutil, the asyncio task."""

from __future__ import annotations

import asyncio
import math
import os
import re
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import orjson
import psutil
import pytest
from prometheus_client import REGISTRY

from logagent.errors import ConfigError
from logagent.sources.host import reporter as sysinfo
from logagent.sources.host.reporter import (
    CounterRates,
    CpuTracker,
    HostSampler,
    SysinfoReporter,
    SysinfoSettings,
    clean_fields,
    compute_rates,
    cpu_percentages,
    disk_fields,
)
from tests.kit import eventually

IP, HOST = "10.0.0.5", "web-1"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ---------------------------------------------------------------------------- settings

def test_settings_defaults() -> None:
    s = SysinfoSettings()
    assert (s.enabled, s.topic, s.interval, s.format) == (True, "collect_system_info", 5.0, "json")


def test_from_mapping_etcd_value() -> None:
    s = SysinfoSettings.from_mapping({"interval": 10, "topic": "metrics", "enabled": False, "format": "influx"})
    assert s == SysinfoSettings(enabled=False, topic="metrics", interval=10.0, format="influx")
    assert isinstance(s.interval, float)


def test_from_mapping_ini_strings() -> None:
    s = SysinfoSettings.from_mapping({"interval": " 2.5 ", "enabled": "no", "format": "Influx"})
    assert (s.interval, s.enabled, s.format) == (2.5, False, "influx")
    for word, expected in (("true", True), ("yes", True), ("1", True), ("false", False), ("0", False)):
        assert SysinfoSettings.from_mapping({"enabled": word}).enabled is expected


def test_from_mapping_missing_keys_come_from_base() -> None:
    base = SysinfoSettings(enabled=False, topic="base", interval=7, format="influx")
    assert SysinfoSettings.from_mapping({}, base) == base
    s = SysinfoSettings.from_mapping({"interval": 1, "whatever": [1, 2]}, base)  # unknown key ignored
    assert s == SysinfoSettings(enabled=False, topic="base", interval=1, format="influx")


@pytest.mark.parametrize(("field", "value"), [
    ("interval", 0),
    ("interval", -5),
    ("interval", "0"),
    ("interval", True),
    ("interval", "fast"),
    ("interval", None),
    ("interval", math.nan),
    ("interval", math.inf),
    ("interval", [5]),
    ("topic", ""),
    ("topic", 5),
    ("topic", None),
    ("topic", "has space"),
    ("topic", ".."),
    ("enabled", "maybe"),
    ("enabled", 1),
    ("enabled", None),
    ("format", "xml"),
    ("format", 3),
])
def test_from_mapping_refuses(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        SysinfoSettings.from_mapping({field: value}, source="/logagent/10.0.0.5/collect_sysinfo/config")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("/logagent/10.0.0.5/collect_sysinfo/config: ")
    assert field in message and repr(value)[:20] in message


def test_from_mapping_refuses_non_object() -> None:
    with pytest.raises(ConfigError, match="sysinfo: expected an object"):
        SysinfoSettings.from_mapping([5], source="sysinfo")  # type: ignore[arg-type]


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ConfigError, match="interval"):
        SysinfoSettings(interval=0)


# ---------------------------------------------------------------------------- rate math

NAMES = {"bytes": "bytes_per_sec", "packets": "packets_per_sec"}


def test_compute_rates() -> None:
    assert compute_rates({"bytes": 100, "packets": 1}, {"bytes": 300, "packets": 5}, 2.0, NAMES) == {
        "bytes_per_sec": 100.0, "packets_per_sec": 2.0}


def test_compute_rates_reset_gives_no_rate_for_that_counter() -> None:
    rates = compute_rates({"bytes": 1000, "packets": 1}, {"bytes": 10, "packets": 5}, 1.0, NAMES)
    assert rates == {"packets_per_sec": 4.0}


@pytest.mark.parametrize("elapsed", [0.0, -1.0, math.nan, math.inf])
def test_compute_rates_bad_elapsed(elapsed: float) -> None:
    assert compute_rates({"bytes": 1}, {"bytes": 2}, elapsed, NAMES) == {}


def test_compute_rates_missing_and_nan() -> None:
    assert compute_rates(None, {"bytes": 2}, 1.0, NAMES) == {}
    assert compute_rates({"packets": 1}, {"bytes": 2, "packets": 3}, 1.0, NAMES) == {"packets_per_sec": 2.0}
    assert compute_rates({"bytes": math.nan}, {"bytes": 2}, 1.0, NAMES) == {}
    assert compute_rates({"bytes": 1}, {"bytes": math.inf}, 1.0, NAMES) == {}


def test_counter_rates_over_samples() -> None:
    tracker = CounterRates(NAMES)
    assert tracker.update({"eth0": {"bytes": 0, "packets": 0}}, now=10.0) == {"eth0": {}}
    assert tracker.update({"eth0": {"bytes": 500, "packets": 10}}, now=15.0) == {
        "eth0": {"bytes_per_sec": 100.0, "packets_per_sec": 2.0}}
    # any interval: rate is delta over the real elapsed time
    assert tracker.update({"eth0": {"bytes": 600, "packets": 10}}, now=15.5) == {
        "eth0": {"bytes_per_sec": 200.0, "packets_per_sec": 0.0}}


def test_counter_rates_reset_then_recovers() -> None:
    tracker = CounterRates(NAMES)
    tracker.update({"eth0": {"bytes": 1000, "packets": 50}}, now=0.0)
    assert tracker.update({"eth0": {"bytes": 20, "packets": 60}}, now=1.0) == {"eth0": {"packets_per_sec": 10.0}}
    # the reset value is the new baseline
    assert tracker.update({"eth0": {"bytes": 120, "packets": 60}}, now=2.0)["eth0"]["bytes_per_sec"] == 100.0


def test_counter_rates_devices_appear_and_vanish() -> None:
    tracker = CounterRates(NAMES)
    tracker.update({"eth0": {"bytes": 0}}, now=0.0)
    rates = tracker.update({"eth0": {"bytes": 10}, "veth1": {"bytes": 5000}}, now=1.0)
    assert rates == {"eth0": {"bytes_per_sec": 10.0}, "veth1": {}}  # new one: no rate yet
    assert tracker.update({"veth1": {"bytes": 5100}}, now=2.0) == {"veth1": {"bytes_per_sec": 100.0}}
    # eth0 vanished and came back: fresh baseline, even though its counter went on
    assert tracker.update({"eth0": {"bytes": 99}, "veth1": {"bytes": 5100}}, now=3.0)["eth0"] == {}


def test_counter_rates_zero_or_negative_elapsed() -> None:
    tracker = CounterRates(NAMES)
    tracker.update({"d": {"bytes": 0}}, now=5.0)
    assert tracker.update({"d": {"bytes": 10}}, now=5.0) == {"d": {}}
    assert tracker.update({"d": {"bytes": 20}}, now=4.0) == {"d": {}}
    assert tracker.update({"d": {"bytes": 30}}, now=5.0) == {"d": {"bytes_per_sec": 10.0}}


def test_counter_rates_never_negative() -> None:
    tracker = CounterRates(NAMES)
    values = [5, 3, 9, 0, 0, 100, 7]
    for step, value in enumerate(values):
        for rate in tracker.update({"x": {"bytes": value, "packets": -value}}, now=float(step))["x"].values():
            assert rate >= 0


# ---------------------------------------------------------------------------- cpu math

T0 = {"user": 100.0, "nice": 0.0, "system": 50.0, "idle": 800.0, "iowait": 50.0, "irq": 0.0,
      "softirq": 0.0, "steal": 0.0, "guest": 0.0, "guest_nice": 0.0}


def advance(times: dict[str, float], **deltas: float) -> dict[str, float]:
    return {k: v + deltas.get(k, 0.0) for k, v in times.items()}


def test_cpu_percentages() -> None:
    t1 = advance(T0, user=30, system=10, idle=50, iowait=10)
    assert cpu_percentages(T0, t1) == {"usage_percent": 40.0, "user": 30.0, "system": 10.0, "idle": 50.0,
                                       "iowait": 10.0}


def test_cpu_percentages_guest_not_counted_twice() -> None:
    # guest time is already inside user on Linux
    t1 = advance(T0, user=50, guest=50, idle=50)
    result = cpu_percentages(T0, t1)
    assert result is not None and result["usage_percent"] == 50.0 and result["user"] == 50.0


def test_cpu_percentages_counter_stepping_back_is_clamped() -> None:
    t1 = advance(T0, user=10, idle=90, iowait=-3)
    result = cpu_percentages(T0, t1)
    assert result is not None
    assert result["iowait"] == 0.0 and result["usage_percent"] == 10.0
    assert all(0.0 <= v <= 100.0 for v in result.values())


def test_cpu_percentages_no_time_passed() -> None:
    assert cpu_percentages(T0, dict(T0)) is None
    assert cpu_percentages(T0, advance(T0, user=-5)) is None


def test_cpu_percentages_platform_without_iowait() -> None:
    prev = {"user": 1.0, "nice": 0.0, "system": 1.0, "idle": 1.0}
    result = cpu_percentages(prev, {"user": 2.0, "nice": 0.0, "system": 2.0, "idle": 3.0})
    assert result == {"usage_percent": 50.0, "user": 25.0, "system": 25.0, "idle": 50.0}


def test_cpu_tracker_first_reading_is_baseline() -> None:
    tracker = CpuTracker()
    assert tracker.update({"cpu-total": T0, "cpu0": T0}) == {}
    result = tracker.update({"cpu-total": advance(T0, user=10, idle=10), "cpu0": advance(T0, idle=10)})
    assert result["cpu-total"]["usage_percent"] == 50.0 and result["cpu0"]["usage_percent"] == 0.0


def test_cpu_tracker_hotplug_keeps_only_total() -> None:
    tracker = CpuTracker()
    tracker.update({"cpu-total": T0, "cpu0": T0, "cpu1": T0})
    result = tracker.update({"cpu-total": advance(T0, user=10, idle=10), "cpu0": advance(T0, idle=1)})
    assert set(result) == {"cpu-total"}
    result = tracker.update({"cpu-total": advance(T0, user=20, idle=20), "cpu0": advance(T0, idle=2)})
    assert set(result) == {"cpu-total", "cpu0"}


# ---------------------------------------------------------------------------- fields

def statvfs(blocks: int, bfree: int, bavail: int, files: int = 100, ffree: int = 40, frsize: int = 4096) -> Any:
    return SimpleNamespace(f_frsize=frsize, f_bsize=4096, f_blocks=blocks, f_bfree=bfree, f_bavail=bavail,
                           f_files=files, f_ffree=ffree)


def test_disk_fields() -> None:
    fields = disk_fields(statvfs(blocks=1000, bfree=300, bavail=200))
    assert fields == {"total": 4096000, "used": 2867200, "free": 819200,
                      "used_percent": 700 / 900 * 100, "inodes_total": 100, "inodes_used": 60, "inodes_free": 40}


def test_disk_fields_zero_size_and_frsize_zero() -> None:
    assert disk_fields(statvfs(0, 0, 0)) is None
    fields = disk_fields(statvfs(10, 10, 10, frsize=0))
    assert fields is not None and fields["total"] == 40960 and fields["used_percent"] == 0.0


def test_clean_fields_drops_nan_and_odd_types() -> None:
    assert clean_fields({"a": 1, "b": 1.5, "c": math.nan, "d": math.inf, "e": None, "f": True, "g": "x"}) == {
        "a": 1, "b": 1.5, "f": True, "g": "x"}


# ---------------------------------------------------------------------------- sampler with fake psutil

def nic(sent: int, recv: int) -> Any:
    return SimpleNamespace(bytes_sent=sent, bytes_recv=recv, packets_sent=sent // 100, packets_recv=recv // 100,
                           errin=0, errout=0, dropin=0, dropout=0)


def test_sampler_net_rates_with_reset_and_new_interface(monkeypatch: pytest.MonkeyPatch) -> None:
    readings = iter([
        {"eth0": nic(1000, 5000)},
        {"eth0": nic(3000, 100), "eth1": nic(10, 10)},  # eth0 recv reset, eth1 new
        {"eth0": nic(4000, 300)},
    ])
    now = [98.0]

    def net_io_counters(pernic: bool = False) -> Any:
        now[0] += 2.0  # two seconds between net readings
        return next(readings)

    monkeypatch.setattr(psutil, "net_io_counters", net_io_counters)
    sampler = HostSampler(IP, HOST, clock=lambda: now[0])
    sampler.prime()
    nets = {m["tags"]["interface"]: m["fields"] for name, m in sampler.sample() if name == "net"}
    assert nets["eth0"]["bytes_sent_per_sec"] == 1000.0
    assert "bytes_recv_per_sec" not in nets["eth0"] and nets["eth0"]["bytes_recv"] == 100
    assert "packets_recv_per_sec" not in nets["eth0"]
    assert nets["eth1"]["bytes_sent"] == 10 and not any(k.endswith("_per_sec") for k in nets["eth1"])
    nets = {m["tags"]["interface"]: m["fields"] for name, m in sampler.sample() if name == "net"}
    assert set(nets) == {"eth0"} and nets["eth0"]["bytes_recv_per_sec"] == 100.0


def test_sampler_disk_skips_pseudo_filesystems(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    real = str(tmp_path)
    parts = [SimpleNamespace(device=dev, mountpoint=mnt, fstype=fs, opts="rw") for dev, mnt, fs in [
        ("/dev/sda1", real, "ext4"),
        ("/dev/sda1", real, "ext4"),  # listed twice
        ("tmpfs", "/run", "tmpfs"), ("proc", "/proc", "proc"), ("overlay", "/", "overlay"),
        ("/dev/loop0", "/snap/x", "squashfs"), ("sysfs", "/sys", "sysfs"), ("cgroup2", "/sys/fs/cgroup", "cgroup2"),
        ("devtmpfs", "/dev", "devtmpfs"),
        ("/dev/sda1", str(tmp_path / "missing"), "ext4"),  # not a directory (or gone)
    ]]
    monkeypatch.setattr(psutil, "disk_partitions", lambda all=False: parts)
    disks = [m for name, m in HostSampler(IP, HOST).sample() if name == "disk"]
    assert [d["tags"] for d in disks] == [{"host": HOST, "ip": IP, "path": real, "device": "/dev/sda1",
                                          "fstype": "ext4"}]
    assert disks[0]["fields"]["total"] == os.statvfs(real).f_blocks * os.statvfs(real).f_frsize


def test_sampler_one_failing_measurement_does_not_stop_others(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> Any:
        raise OSError("no /proc/swaps")

    monkeypatch.setattr(psutil, "swap_memory", broken)
    before = metric("logagent_sysinfo_errors_total", measurement="swap")
    names = {name for name, _ in HostSampler(IP, HOST).sample()}
    assert "swap" not in names and {"mem", "system"} <= names
    assert metric("logagent_sysinfo_errors_total", measurement="swap") == before + 1


def test_sampler_nan_never_reaches_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psutil, "getloadavg", lambda: (math.nan, 1.0, math.inf))
    system = next(m for name, m in HostSampler(IP, HOST).sample() if name == "system")
    assert "load1" not in system["fields"] and "load15" not in system["fields"] and system["fields"]["load5"] == 1.0
    assert b"NaN" not in orjson.dumps(system) and b"null" not in orjson.dumps(system)
    assert sysinfo.encode_message(system, "influx").count(b"load") == 1  # type: ignore[union-attr]


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
    if any(p.fstype not in sysinfo.PSEUDO_FILESYSTEMS and os.path.isdir(p.mountpoint)
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


def test_sample_cpu_cost() -> None:
    """Not a benchmark: guards against a sample becoming expensive (it runs every few seconds)."""
    sampler = HostSampler(IP, HOST)
    sampler.prime()
    rounds = 20
    start = time.process_time()
    for _ in range(rounds):
        messages = sampler.sample()
        for _, message in messages:
            sysinfo.encode_message(message, "json")
    per_sample = (time.process_time() - start) / rounds
    assert per_sample < 0.25
