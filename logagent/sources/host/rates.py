"""Host rates: per-second rates and CPU percentages from two counter readings.

Pure math over readings; unit tests drive it with made-up numbers. A counter that went
backwards (a reboot, a wrap, a device replaced) gives no rate, never a negative one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

Counters = Mapping[str, float]


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
