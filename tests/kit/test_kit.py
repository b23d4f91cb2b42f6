"""The test kit's own checks: its /metrics parser against prometheus_client's, and the delivery
tally that the integration and fault suites judge by."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.kit import check_delivery, metric_sum, parse_metrics, split_sample, tally

HOSTILE = ['/var/log/plain.log', '/var/log/with space.log', 'quote " inside', 'back\\slash', 'new\nline',
           'brace } and {', 'comma, equals=x', 'x="y"', '', 'é line separator \u2028', 'next line \x85']


def exposition() -> str:
    """What the agent serves (prometheus_client's text format), with label values that need escaping."""
    registry = CollectorRegistry()
    lines = Counter("logagent_lines_read", "lines", ["path"], registry=registry)
    unacked = Gauge("logagent_unacked_bytes", "bytes", ["path", "topic"], registry=registry)
    latency = Histogram("logagent_test_latency_seconds", "seconds", registry=registry)
    for i, path in enumerate(HOSTILE):
        lines.labels(path).inc(i + 1)
        unacked.labels(path, "t").set(-i * 1.5)
        unacked.labels(path, "other_t").set(1e300)
    Gauge("logagent_test_odd", "odd values", ["kind"], registry=registry).labels("nan").set(math.nan)
    latency.observe(0.2)
    return generate_latest(registry).decode()


def test_parse_metrics_agrees_with_prometheus_client_on_every_sample() -> None:
    body = exposition()
    ours = parse_metrics(body)
    reference = [s for family in text_string_to_metric_families(body) for s in family.samples]
    assert len(ours) == len(reference)
    for sample in reference:
        got = metric_sum(ours, sample.name, **sample.labels)  # all its labels: exactly this sample
        if math.isnan(sample.value):
            assert math.isnan(got), sample
        else:
            assert got == sample.value, sample
    assert {split_sample(key) == (s.name, s.labels) for key, s in zip(ours, reference, strict=True)} == {True}


def test_metric_sum_matches_labels_exactly() -> None:
    samples = parse_metrics(exposition())
    assert metric_sum(samples, "logagent_lines_read_total") == sum(range(1, len(HOSTILE) + 1))
    assert metric_sum(samples, "logagent_lines_read_total", path='quote " inside') == 3
    assert metric_sum(samples, "logagent_lines_read_total", path="new\nline") == 5
    # A label value is compared whole: 't' is not a part of 'other_t', nor '/var/log' of a path.
    assert metric_sum(samples, "logagent_unacked_bytes", topic="t") == sum(-i * 1.5 for i in range(len(HOSTILE)))
    assert metric_sum(samples, "logagent_lines_read_total", path="/var/log") == 0
    assert metric_sum(samples, "logagent_lines_read") == 0  # the served name has _total
    assert metric_sum(None, "logagent_lines_read_total") == 0


def test_tally_counts_missing_duplicated_and_unexpected_lines() -> None:
    t = tally(["a", "b", "c", "d", "e"], ["a", "a", "c", "zz", "c", "e", "zz"])
    assert (t.written, t.delivered, t.missing, t.duplicated) == (5, 5, ["b", "d"], 2)
    assert t.gaps == [(1, 1), (3, 1)] and t.dup_runs == [1, 1] and t.unexpected == ["zz", "zz"]


def test_check_delivery_wants_every_line_in_order_and_counts_every_duplicate() -> None:
    check_delivery(["a", "b"], ["a", "x", "b", "a"], max_dups=1)
    with pytest.raises(AssertionError, match="1 of 2 lines missing"):
        check_delivery(["a", "b"], ["a"])
    with pytest.raises(AssertionError, match="out of order"):
        check_delivery(["a", "b"], ["b", "a"])
    with pytest.raises(AssertionError, match="1 duplicated lines"):
        check_delivery(["a"], ["a", "x", "x"])  # a line nobody wrote, twice, is a duplicate too
    check_delivery(["a"], ["a", "a", "a"], max_dups=None)
