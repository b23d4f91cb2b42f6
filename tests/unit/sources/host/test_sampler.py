"""The host sampler: fields, and sampling with a fake psutil."""

from __future__ import annotations

import math
import os
import time
from types import SimpleNamespace
from typing import Any

import orjson
import psutil
import pytest
from prometheus_client import REGISTRY

from logagent.sources.host import reporter as sysinfo
from logagent.sources.host.sampler import HostSampler, clean_fields, disk_fields

IP, HOST = "10.0.0.5", "web-1"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


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
