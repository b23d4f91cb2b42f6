"""KafkaProbe with a fake sink: it asks at once, then every `every` seconds, always off the event
loop and with its own short timeout; a crash in the check is logged, counted and the probe goes on
(it runs under runtime/supervise.spawn); start and stop are safe to call twice, and stop does not
wait for a check that hangs in its thread. The probe against a real broker (/readyz) is in
tests/integration."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time

import pytest

from logagent.runtime import metrics
from logagent.sinks.kafka.probe import KafkaProbe
from tests.kit import eventually


class FakeSink:
    """check_connection as the probe sees it: records each call (when, on which thread, with
    which timeout); `crash` calls raise first; `hold` makes a call hang until `release` is set."""

    def __init__(self, crash: int = 0) -> None:
        self.calls: list[tuple[float, int, float]] = []  # (monotonic start, thread id, timeout)
        self.crash = crash
        self.hold = False
        self.release = threading.Event()
        self.returned = 0

    def check_connection(self, timeout: float = 5.0) -> bool:
        self.calls.append((time.monotonic(), threading.get_ident(), timeout))
        if self.crash:
            self.crash -= 1
            raise RuntimeError("probe boom")
        if self.hold:
            self.release.wait(10)
        self.returned += 1
        return True


async def stop(probe: KafkaProbe) -> None:
    """probe.stop(), which must not wait: a stop that hangs fails the test instead."""
    await asyncio.wait_for(probe.stop(), 1)


def probe_tasks() -> list[asyncio.Task[object]]:
    """The probe's tasks still running on this loop (the supervised task is named "kafka probe")."""
    return [t for t in asyncio.all_tasks() if t.get_name() == "kafka probe" and not t.done()]


async def test_checks_at_once_then_every_interval_off_the_loop_with_its_timeout():
    sink = FakeSink()
    probe = KafkaProbe(sink, every=0.05, timeout=1.5)
    probe.start()
    try:
        await eventually(lambda: len(sink.calls) >= 4, what="four checks")
    finally:
        await stop(probe)
    loop_thread = threading.get_ident()
    assert all(thread != loop_thread for _, thread, _ in sink.calls), "check_connection ran on the loop"
    assert all(timeout == 1.5 for _, _, timeout in sink.calls)
    starts = [when for when, _, _ in sink.calls]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.045, f"checks closer than `every`: {gaps}"


async def test_first_check_does_not_wait_for_the_interval():
    sink = FakeSink()
    probe = KafkaProbe(sink, every=3600)
    probe.start()
    try:
        await eventually(lambda: sink.calls, what="the first check")
    finally:
        await stop(probe)  # cancels the hour-long wait
    assert len(sink.calls) == 1
    assert not probe_tasks()


async def test_a_crashing_check_is_logged_counted_and_the_probe_goes_on(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.ERROR, logger="logagent.supervise")
    sink = FakeSink(crash=1)
    crashes = metrics.TASK_CRASHES.labels("kafka_probe")
    before = crashes._value.get()
    probe = KafkaProbe(sink, every=0.01)
    probe.start()
    try:
        # The restart waits the supervisor's first backoff (about 0.5 s).
        await eventually(lambda: sink.returned >= 2, timeout=5, what="checks after the crash")
    finally:
        await stop(probe)
    assert crashes._value.get() - before == 1
    logged = [r for r in caplog.records if "kafka probe crashed" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert "probe boom" in str(logged[0].exc_info[1])


async def test_start_and_stop_are_safe_twice():
    sink = FakeSink()
    probe = KafkaProbe(sink, every=3600)
    await stop(probe)  # never started
    probe.start()
    probe.start()  # no second loop
    await eventually(lambda: sink.calls, what="the first check")
    assert len(probe_tasks()) == 1
    await stop(probe)
    await stop(probe)
    assert not probe_tasks()


async def test_it_starts_again_after_a_stop():
    sink = FakeSink()
    probe = KafkaProbe(sink, every=3600)
    probe.start()
    await eventually(lambda: len(sink.calls) == 1, what="the first check")
    await stop(probe)
    probe.start()
    try:
        await eventually(lambda: len(sink.calls) == 2, what="a check after the restart")
    finally:
        await stop(probe)


async def test_stop_does_not_wait_for_a_hanging_check():
    """A metadata request cannot be cancelled in its thread: stop returns without waiting for it."""
    sink = FakeSink()
    sink.hold = True
    probe = KafkaProbe(sink, every=0.01)
    probe.start()
    try:
        await eventually(lambda: sink.calls, what="a check under way")
        await stop(probe)
        assert not probe_tasks()
        assert sink.returned == 0  # stop did not wait for it
    finally:
        sink.release.set()
    # Let its thread end before the loop closes (the default executor would wait for it).
    await eventually(lambda: sink.returned == 1, what="the hanging check to return")
