"""Host metrics: sample the host with psutil every N seconds, emit Telegraf-shaped messages.

Pieces, top to bottom:

- ``SysinfoSettings`` (in config/sysinfo.py, re-exported here): the ``[sysinfo]`` section /
  ``collect_sysinfo`` etcd value, validated without importing psutil.
- ``compute_rates``, ``CounterRates``, ``cpu_percentages``, ``CpuTracker``, ``disk_fields``:
  pure math over counter readings; unit tests drive them with fake numbers.
- ``HostSampler``: reads psutil (blocking, so it runs off the event loop) and builds one
  message per measurement and device.
- ``SysinfoReporter``: the asyncio task that samples every ``interval`` and calls ``emit``.

CPU percentages and per-second rates need two readings. When its task starts (and when
it is enabled again after a pause) the reporter takes a baseline reading and emits
nothing; the first sample goes out one interval later and already carries cpu
percentages and rates. A device first seen in a sample gets its counters but no rates.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
import psutil

from logagent.config.sysinfo import SysinfoSettings as SysinfoSettings  # re-exported (agent.py imports it here)
from logagent.metrics import SYSINFO_DROPPED, SYSINFO_ERRORS, SYSINFO_SAMPLES, TASK_CRASHES
from logagent.sources.host.influx import encode_line

log = logging.getLogger("logagent.sysinfo")

Emit = Callable[[str, bytes, bytes], bool]
"""emit(topic, key, value) -> False when the queue is full; must never block."""

Counters = Mapping[str, float]
Row = tuple[dict[str, str], dict[str, Any]]  # (tags, fields) of one message

MEASUREMENTS = ("cpu", "mem", "swap", "disk", "diskio", "net", "system")


# ---------------------------------------------------------------------------- pure math

def compute_rates(
    prev: Counters | None,
    cur: Counters,
    elapsed: float,
    names: Mapping[str, str],
) -> dict[str, float]:
    """Per-second rates ``{rate_field: value}`` for the counters in names (``{counter: rate_field}``).

    No rate for a counter missing from either reading, one that went down (a reset or
    wrap: never a negative rate), or any rate when elapsed <= 0 or there is no prev.
    """
    if prev is None or not (elapsed > 0) or not math.isfinite(elapsed):
        return {}
    rates: dict[str, float] = {}
    for counter, rate_name in names.items():
        before, after = prev.get(counter), cur.get(counter)
        if before is None or after is None:
            continue
        delta = after - before
        if not delta >= 0:  # negative is a reset; NaN fails the comparison too
            continue
        rate = delta / elapsed
        if math.isfinite(rate):
            rates[rate_name] = rate
    return rates


class CounterRates:
    """Turns successive counter readings of many devices into per-second rates.

    A device seen for the first time gets no rates. A device missing from a reading is
    forgotten, so when it comes back (its counters maybe restarted) it starts afresh.
    """

    def __init__(self, names: Mapping[str, str]) -> None:
        self._names = dict(names)
        self._prev: dict[str, tuple[float, dict[str, float]]] = {}

    def update(self, readings: Mapping[str, Counters], now: float) -> dict[str, dict[str, float]]:
        """Rates per device for this reading (``now`` in monotonic seconds); keeps it as the baseline."""
        rates: dict[str, dict[str, float]] = {}
        for device, counters in readings.items():
            last = self._prev.get(device)
            rates[device] = compute_rates(last[1], counters, now - last[0], self._names) if last else {}
        self._prev = {device: (now, dict(counters)) for device, counters in readings.items()}
        return rates

    def reset(self) -> None:
        """Forget every baseline."""
        self._prev.clear()


# Guest time is already counted inside user/nice (Linux), so it is not added again.
_CPU_NOT_IN_TOTAL = frozenset({"guest", "guest_nice"})
_CPU_PERCENT_FIELDS = ("user", "system", "idle", "iowait")


def cpu_percentages(prev: Counters, cur: Counters) -> dict[str, float] | None:
    """usage_percent, user, system, idle, iowait (those the platform has) between two
    cpu_times readings (as dicts); None when no cpu time passed between them."""
    deltas: dict[str, float] = {}
    for name, after in cur.items():
        before = prev.get(name)
        if before is None:
            continue
        delta = after - before
        # Some Linux counters (iowait) can step back a little; psutil clamps them too.
        deltas[name] = delta if delta > 0 else 0.0
    total = sum(v for k, v in deltas.items() if k not in _CPU_NOT_IN_TOTAL)
    if not (total > 0) or not math.isfinite(total):
        return None
    busy = total - deltas.get("idle", 0.0) - deltas.get("iowait", 0.0)
    result = {"usage_percent": min(100.0, max(0.0, busy / total * 100.0))}
    for name in _CPU_PERCENT_FIELDS:
        if name in deltas:
            result[name] = deltas[name] / total * 100.0
    return result


CPU_TOTAL = "cpu-total"


class CpuTracker:
    """Keeps the last cpu_times per cpu name (cpu-total, cpu0, ...) and gives percentages."""

    def __init__(self) -> None:
        self._prev: dict[str, dict[str, float]] = {}

    def update(self, readings: Mapping[str, Counters]) -> dict[str, dict[str, float]]:
        """Percentages per cpu name for this reading; keeps it as the baseline."""
        prev = self._prev
        if set(prev) != set(readings):
            # Online cpus changed: psutil numbers cores by position, so cpuN may now be
            # another core. Only cpu-total still compares like with like.
            prev = {CPU_TOTAL: prev[CPU_TOTAL]} if CPU_TOTAL in prev else {}
        result: dict[str, dict[str, float]] = {}
        for name, times in readings.items():
            before = prev.get(name)
            percent = cpu_percentages(before, times) if before is not None else None
            if percent is not None:
                result[name] = percent
        self._prev = {name: dict(times) for name, times in readings.items()}
        return result

    def reset(self) -> None:
        """Forget the baseline."""
        self._prev.clear()


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


def encode_message(message: Mapping[str, Any], fmt: str) -> bytes | None:
    """Kafka value of one message dict: Telegraf JSON, or one line-protocol line (ns timestamp)."""
    if fmt == "influx":
        line = encode_line(message["name"], message["tags"], message["fields"],
                           message["timestamp"] * 1_000_000_000)
        return line.encode() if line is not None else None
    return orjson.dumps(message)


# ---------------------------------------------------------------------------- psutil

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


class _ErrorLog:
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
        self._errors = _ErrorLog()

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


# ---------------------------------------------------------------------------- reporter

class SysinfoReporter:
    """The asyncio task that samples the host every ``interval`` seconds and emits messages.

    Call its methods from the event loop's thread.
    """

    def __init__(self, settings: SysinfoSettings, emit: Emit, ip: str, host: str) -> None:
        self._settings = settings
        self._emit = emit
        self._key = ip.encode()
        self._sampler = HostSampler(ip=ip, host=host)
        self._errors = _ErrorLog()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None  # made in start(): an Event binds to one loop

    @property
    def settings(self) -> SysinfoSettings:
        """The settings in force."""
        return self._settings

    async def start(self) -> None:
        """Start the sampling task; a no-op while it runs."""
        if self._task is not None and not self._task.done():
            return
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sysinfo-reporter")
        self._task.add_done_callback(self._task_done)

    async def stop(self) -> None:
        """Cancel the task and wait until it has ended; a no-op when not running."""
        task = self._task
        if task is None:
            return
        task.cancel()
        # wait() rather than `await task`: it does not swallow our caller's own cancellation.
        await asyncio.wait({task})
        if self._task is task:
            self._task = None

    def update(self, settings: SysinfoSettings) -> None:
        """Apply new settings now: the sleeping task wakes and re-plans with them."""
        if not isinstance(settings, SysinfoSettings):
            raise TypeError(f"expected SysinfoSettings, got {type(settings).__name__}")
        if settings != self._settings:
            log.info("sysinfo settings: %s", settings)
        self._settings = settings
        if self._wake is not None:
            self._wake.set()

    def sample(self) -> list[tuple[str, dict[str, Any]]]:
        """One sample as message dicts, without emitting. Blocking (psutil): not on the loop."""
        return self._sampler.sample()

    # -- the task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        wake = self._wake
        assert wake is not None
        last: float | None = None  # loop time of the last reading; None: no baseline yet
        while True:
            wake.clear()  # before reading settings, so an update() after this wakes the wait below
            settings = self._settings
            if not settings.enabled:
                last = None  # a baseline from before the pause would average over it
                await wake.wait()
                continue
            try:
                if last is None:
                    last = loop.time()
                    await asyncio.to_thread(self._sampler.prime)
                if await self._sleep(wake, last + settings.interval - loop.time()):
                    continue  # settings changed while waiting: plan again with them
                # Set before sampling, so a failure below still waits a full interval.
                last = loop.time()
                messages = await asyncio.to_thread(self._encode_sample, settings.format)
                if self._settings.enabled:
                    self._send(settings.topic, messages)
            except Exception as exc:  # noqa: BLE001 - never let the loop die; the next interval retries
                self._errors.report("reporter", exc)

    @staticmethod
    async def _sleep(wake: asyncio.Event, delay: float) -> bool:
        """Sleep delay seconds; True when update() woke us first."""
        if delay <= 0:
            return wake.is_set()
        try:
            await asyncio.wait_for(wake.wait(), delay)
        except TimeoutError:
            return False
        return True

    def _encode_sample(self, fmt: str) -> list[tuple[str, bytes]]:
        """Sample and encode (in a worker thread: both cost cpu)."""
        encoded = []
        for measurement, message in self._sampler.sample():
            try:
                value = encode_message(message, fmt)
            except Exception as exc:  # noqa: BLE001 - counted and logged; the other measurements still go
                self._errors.report(measurement, exc, "encode")
                continue
            if value is not None:
                encoded.append((measurement, value))
        return encoded

    def _send(self, topic: str, messages: list[tuple[str, bytes]]) -> None:
        for measurement, value in messages:
            try:
                queued = self._emit(topic, self._key, value)
            except Exception as exc:  # noqa: BLE001 - counted and logged; the other measurements still go
                self._errors.report(measurement, exc, "emit")
                continue
            if queued:
                SYSINFO_SAMPLES.labels(measurement=measurement).inc()
            else:  # queue full: metrics give way to log lines
                SYSINFO_DROPPED.inc()

    @staticmethod
    def _task_done(task: asyncio.Task[None]) -> None:
        # The loop catches everything; this is the last net so nothing ends silently.
        if not task.cancelled() and task.exception() is not None:
            TASK_CRASHES.labels(task="sysinfo").inc()
            log.error("sysinfo reporter task died", exc_info=task.exception())
