"""Rate and CPU math over counter readings."""

from __future__ import annotations

import math

import pytest

from logagent.sources.host.rates import CounterRates, CpuTracker, compute_rates, cpu_percentages

IP, HOST = "10.0.0.5", "web-1"



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
