"""Metric labels: one line each, and per-file series that follow their files."""

from __future__ import annotations

import asyncio

from logagent.runtime import metrics


def test_metric_labels_hold_no_control_character():
    assert metrics.path_label("/var/log/a\nb\x1b\u2028.log") == "/var/log/a\\x0ab\\x1b\\xe2\\x80\\xa8.log"


def test_a_forgotten_path_leaves_metrics_and_frees_its_place():
    label = metrics.path_label("/var/log/forget-me.log")
    metrics.LINES_READ.labels(label).inc()
    metrics.ROTATIONS.labels(label, "truncate").inc()
    metrics.forget_path(label)
    assert not [v for m in (metrics.LINES_READ, metrics.ROTATIONS) for v in list(m._metrics) if v[0] == label]
    assert label not in metrics._labelled_paths
    metrics.forget_path(metrics.OTHER_PATHS)  # the shared label is never forgotten


class _Counts:
    """An owner of deferred counts, as a file's reader is."""

    def __init__(self, label: str) -> None:
        self.series = metrics.LINES_READ.labels(label)
        self.n = 0
        self.flushes = 0

    def flush_metrics(self) -> None:
        self.flushes += 1
        self.series.inc(self.n)
        self.n = 0


async def test_deferred_counts_reach_their_series_when_read_or_within_flush_after(monkeypatch):
    """issue 23: per-line counts are plain ints until a flush: before /metrics is rendered, in total(),
    and at the latest FLUSH_AFTER seconds after the first deferred one."""
    monkeypatch.setattr(metrics, "FLUSH_AFTER", 0.1)
    metrics.flush()
    owner = _Counts(metrics.path_label("/var/log/deferred.log"))
    before = owner.series._value.get()
    owner.n += 3
    metrics.defer(owner)
    owner.n += 2
    metrics.defer(owner)  # already due: one flush for both
    assert owner.series._value.get() == before
    await asyncio.sleep(0.3)
    assert owner.series._value.get() == before + 5 and owner.flushes == 1
    owner.n += 4
    metrics.defer(owner)
    assert metrics.total(metrics.LINES_READ) >= before + 9 and owner.series._value.get() == before + 9
    assert owner.flushes == 2 and not metrics._deferred
