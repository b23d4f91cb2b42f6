"""Host sampler: reads the host with psutil (blocking: run it off the event loop) and builds one
Telegraf-shaped message dict per measurement and device.

Measurements: cpu, mem, swap, disk (real filesystems only), diskio, net, system. One failing
measurement is counted and logged (once per kind of error) and the others still go out.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import psutil

from logagent.runtime.metrics import SYSINFO_ERRORS
from logagent.sources.host.rates import CPU_TOTAL, CounterRates, CpuTracker

log = logging.getLogger("logagent.sysinfo")

Row = tuple[dict[str, str], dict[str, Any]]  # (tags, fields) of one message

MEASUREMENTS = ("cpu", "mem", "swap", "disk", "diskio", "net", "system")


def disk_fields(st: Any) -> dict[str, int | float] | None:
    """Fields of a ``disk`` message from an os.statvfs result; None for a zero-size filesystem.

    Like df (and psutil): free is what an unprivileged user may still use, used_percent
    is used / (used + free).
    """
    block = st.f_frsize or st.f_bsize
    total = st.f_blocks * block
    if total <= 0:
        return None
    free = st.f_bavail * block
    used = (st.f_blocks - st.f_bfree) * block
    return {
        "total": total,
        "used": used,
        "free": free,
        "used_percent": used / (used + free) * 100.0 if used + free > 0 else 0.0,
        "inodes_total": st.f_files,
        "inodes_used": st.f_files - st.f_ffree,
        "inodes_free": st.f_ffree,
    }


def clean_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Fields with a value that both formats can carry: bool, int, str, finite float."""
    return {
        key: value
        for key, value in fields.items()
        if isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value))
    }



# Not storage (or not the host's own): reporting them would be noise or duplicates.
PSEUDO_FILESYSTEMS = frozenset({
    "proc", "sysfs", "tmpfs", "devtmpfs", "devfs", "devpts", "overlay", "aufs", "squashfs",
    "cgroup", "cgroup2", "mqueue", "debugfs", "tracefs", "securityfs", "pstore", "bpf",
    "autofs", "configfs", "fusectl", "hugetlbfs", "nsfs", "ramfs", "rpc_pipefs",
    "binfmt_misc", "efivarfs", "selinuxfs", "iso9660", "nullfs",
})

DISKIO_RATES = {"read_bytes": "read_bytes_per_sec", "write_bytes": "write_bytes_per_sec",
                "reads": "reads_per_sec", "writes": "writes_per_sec"}
NET_RATES = {"bytes_sent": "bytes_sent_per_sec", "bytes_recv": "bytes_recv_per_sec",
             "packets_sent": "packets_sent_per_sec", "packets_recv": "packets_recv_per_sec"}


class ErrorLog:
    """Counts every sampling error; logs a warning with traceback the first time a kind of
    error shows, then only at debug, so a broken source cannot flood the log every interval."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()

    def report(self, measurement: str, exc: BaseException, detail: str = "") -> None:
        SYSINFO_ERRORS.labels(measurement=measurement).inc()
        what = f"{measurement} {detail}" if detail else measurement
        key = (measurement, f"{detail}|{type(exc).__name__}")
        if key in self._seen:
            log.debug("sysinfo: %s failed again: %s", what, exc)
            return
        if len(self._seen) > 256:  # bounded: details can vary
            self._seen.clear()
        self._seen.add(key)
        log.warning("sysinfo: %s failed (repeats logged at debug): %r", what, exc, exc_info=exc)

    def recovered(self, measurement: str) -> None:
        """A measurement works again: its next failure is worth a warning."""
        self._seen = {key for key in self._seen if key[0] != measurement}


class HostSampler:
    """Reads the host with psutil and builds Telegraf-shaped message dicts.

    Blocking: call it off the event loop. A lock lets a thread left over from a cancelled
    task and a new one take turns on the shared baselines.
    """

    def __init__(self, ip: str, host: str, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._tags = {"host": host, "ip": ip}
        self._clock = clock
        self._wall = wall
        self._cpu = CpuTracker()
        self._diskio = CounterRates(DISKIO_RATES)
        self._net = CounterRates(NET_RATES)
        self._lock = threading.Lock()
        self._errors = ErrorLog()

    def prime(self) -> None:
        """Take a fresh baseline for cpu percentages and rates; emits nothing."""
        with self._lock:
            for tracker in (self._cpu, self._diskio, self._net):
                tracker.reset()
            # The collectors update the trackers; their first rows carry no news, so drop them.
            baselines: tuple[tuple[str, Callable[[], list[Row]]], ...] = (
                ("cpu", self._collect_cpu), ("diskio", self._collect_diskio), ("net", self._collect_net))
            for name, collect in baselines:
                try:
                    collect()
                except Exception as exc:  # noqa: BLE001 - the sample after will report it properly
                    log.debug("sysinfo: baseline of %s failed: %s", name, exc)

    def sample(self) -> list[tuple[str, dict[str, Any]]]:
        """One sample: ``[(measurement, {"name", "tags", "fields", "timestamp"}), ...]``.

        A measurement that fails is logged and counted; the others still come back.
        """
        collectors: tuple[tuple[str, Callable[[], Iterable[Row]]], ...] = (
            ("cpu", self._collect_cpu), ("mem", self._collect_mem), ("swap", self._collect_swap),
            ("disk", self._collect_disk), ("diskio", self._collect_diskio),
            ("net", self._collect_net), ("system", self._collect_system),
        )
        with self._lock:
            timestamp = int(self._wall())
            messages: list[tuple[str, dict[str, Any]]] = []
            for measurement, collect in collectors:
                try:
                    rows = list(collect())
                except Exception as exc:  # noqa: BLE001 - counted and logged; the other measurements still go
                    self._errors.report(measurement, exc)
                    continue
                self._errors.recovered(measurement)
                for tags, fields in rows:
                    fields = clean_fields(fields)
                    if fields:  # a message with no field carries nothing
                        messages.append((measurement, {"name": measurement, "tags": {**self._tags, **tags},
                                                       "fields": fields, "timestamp": timestamp}))
            return messages

    # -- readings (raw counters, for the trackers)

    @staticmethod
    def _read_cpu() -> dict[str, dict[str, float]]:
        readings = {CPU_TOTAL: psutil.cpu_times()._asdict()}
        for index, times in enumerate(psutil.cpu_times(percpu=True)):
            readings[f"cpu{index}"] = times._asdict()
        return readings

    @staticmethod
    def _read_diskio() -> dict[str, dict[str, float]]:
        readings: dict[str, dict[str, float]] = {}
        for name, c in (psutil.disk_io_counters(perdisk=True) or {}).items():
            fields: dict[str, float] = {"reads": c.read_count, "writes": c.write_count, "read_bytes": c.read_bytes,
                      "write_bytes": c.write_bytes, "read_time": c.read_time, "write_time": c.write_time}
            if hasattr(c, "busy_time"):  # Linux and FreeBSD only
                fields["io_time"] = c.busy_time
            readings[name] = fields
        return readings

    @staticmethod
    def _read_net() -> dict[str, dict[str, float]]:
        return {
            name: {"bytes_sent": c.bytes_sent, "bytes_recv": c.bytes_recv, "packets_sent": c.packets_sent,
                   "packets_recv": c.packets_recv, "err_in": c.errin, "err_out": c.errout,
                   "drop_in": c.dropin, "drop_out": c.dropout}
            for name, c in (psutil.net_io_counters(pernic=True) or {}).items()
        }

    # -- collectors (one per measurement)

    def _collect_cpu(self) -> list[Row]:
        percent = self._cpu.update(self._read_cpu())
        return [({"cpu": name}, fields) for name, fields in percent.items()]

    @staticmethod
    def _collect_mem() -> list[Row]:
        vm: dict[str, Any] = psutil.virtual_memory()._asdict()
        fields: dict[str, Any] = {key: vm.pop(key) for key in ("total", "available", "used", "free") if key in vm}
        fields["used_percent"] = vm.pop("percent")
        fields.update(vm)  # platform extras: buffers, cached, shared, active, ...
        return [({}, fields)]

    @staticmethod
    def _collect_swap() -> list[Row]:
        sw = psutil.swap_memory()
        return [({}, {"total": sw.total, "used": sw.used, "free": sw.free, "used_percent": sw.percent,
                      "sin": sw.sin, "sout": sw.sout})]

    def _collect_disk(self) -> list[Row]:
        rows: list[Row] = []
        seen: set[str] = set()
        seen_devices: set[int] = set()
        for part in psutil.disk_partitions(all=False):
            if part.fstype.lower() in PSEUDO_FILESYSTEMS or part.mountpoint in seen:
                continue
            seen.add(part.mountpoint)
            # A bind-mounted file (/etc/hosts in a container) repeats its filesystem.
            if not os.path.isdir(part.mountpoint):
                continue
            try:
                st = os.statvfs(part.mountpoint)
            except (PermissionError, FileNotFoundError) as exc:
                # Not ours to read, or unmounted since the listing: not an agent error.
                log.debug("sysinfo: skipping %s: %s", part.mountpoint, exc)
                continue
            except OSError as exc:  # EIO, ESTALE...: count it, keep the other disks
                self._errors.report("disk", exc, part.mountpoint)
                continue
            # Bind mounts (a systemd sandbox's /tmp, a container's volumes) repeat one filesystem:
            # report it once, under the first mountpoint listed.
            try:
                device = os.stat(part.mountpoint).st_dev
            except OSError:
                continue
            if device in seen_devices:
                continue
            seen_devices.add(device)
            fields = disk_fields(st)
            if fields is not None:
                rows.append(({"path": part.mountpoint, "device": part.device, "fstype": part.fstype}, fields))
        return rows

    def _collect_diskio(self) -> list[Row]:
        readings = self._read_diskio()
        rates = self._diskio.update(readings, self._clock())
        return [({"name": name}, {**counters, **rates[name]}) for name, counters in readings.items()]

    def _collect_net(self) -> list[Row]:
        readings = self._read_net()
        rates = self._net.update(readings, self._clock())
        return [({"interface": name}, {**counters, **rates[name]}) for name, counters in readings.items()]

    def _collect_system(self) -> list[Row]:
        load1, load5, load15 = psutil.getloadavg()
        return [({}, {"load1": load1, "load5": load5, "load15": load15,
                      "uptime": max(0, int(self._wall() - psutil.boot_time())),
                      "n_cpus": psutil.cpu_count()})]
