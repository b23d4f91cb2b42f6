"""Host metrics: sample the host with psutil every N seconds, emit Telegraf-shaped messages.

The host source, top to bottom:

- ``SysinfoSettings`` (config/sysinfo.py): the ``[sysinfo]`` section / ``collect_sysinfo``
  etcd value, validated without importing psutil.
- rates.py: per-second rates and CPU percentages, pure math over counter readings.
- sampler.py: ``HostSampler`` reads psutil (blocking, so it runs off the event loop) and
  builds one message per measurement and device.
- here: ``SysinfoReporter``, the asyncio task that samples every ``interval`` and calls
  ``emit``; ``encode_message``, the message as Telegraf JSON or an Influx line.

CPU percentages and per-second rates need two readings. When its task starts (and when
it is enabled again after a pause) the reporter takes a baseline reading and emits
nothing; the first sample goes out one interval later and already carries cpu
percentages and rates. A device first seen in a sample gets its counters but no rates.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from logagent.config.sysinfo import SysinfoSettings
from logagent.runtime.metrics import SYSINFO_DROPPED, SYSINFO_SAMPLES
from logagent.runtime.supervise import spawn
from logagent.runtime.wait import wait_event
from logagent.sources.host.influx import encode_line
from logagent.sources.host.sampler import ErrorLog, HostSampler

log = logging.getLogger("logagent.sysinfo")

Emit = Callable[[str, bytes, bytes], bool]
"""emit(topic, key, value) -> False when the queue is full; must never block."""


def encode_message(message: Mapping[str, Any], fmt: str) -> bytes | None:
    """Kafka value of one message dict: Telegraf JSON, or one line-protocol line (ns timestamp)."""
    if fmt == "influx":
        line = encode_line(message["name"], message["tags"], message["fields"],
                           message["timestamp"] * 1_000_000_000)
        return line.encode() if line is not None else None
    return orjson.dumps(message)


class SysinfoReporter:
    """The asyncio task that samples the host every ``interval`` seconds and emits messages.

    Call its methods from the event loop's thread.
    """

    def __init__(self, settings: SysinfoSettings, emit: Emit, ip: str, host: str) -> None:
        self._settings = settings
        self._emit = emit
        self._key = ip.encode()
        self._sampler = HostSampler(ip=ip, host=host)
        self._errors = ErrorLog()
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
        self._task = spawn("sysinfo reporter", "sysinfo", self._run)

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
        return await wait_event(wake, delay)

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
