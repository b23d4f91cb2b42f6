"""Metric labels: one line each, and per-file series that follow their files."""

from __future__ import annotations

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
