"""Prometheus metrics of the agent, in one place so /metrics is documented by this file."""

from __future__ import annotations

import asyncio
from typing import Protocol

from prometheus_client import Counter, Gauge
from prometheus_client.metrics import MetricWrapperBase

from logagent.runtime.names import escape_controls

LINES_READ = Counter("logagent_lines_read", "Lines read from a file", ["path"])
BYTES_READ = Counter("logagent_bytes_read", "Bytes read from a file", ["path"])
DECODE_ERRORS = Counter("logagent_decode_errors", "Lines with bytes invalid in the file's encoding "
                        "(shipped with U+FFFD in their place)", ["path"])
MALFORMED_LINES = Counter("logagent_malformed_lines", "Lines of a container log (format cri, docker or auto) "
                          "not in that format: shipped as they are, without time and stream", ["path"])
LINES_TRUNCATED = Counter("logagent_lines_truncated", "Lines cut at max_line_bytes", ["path"])
FILE_ERRORS = Counter("logagent_file_errors", "Errors opening or reading a file", ["path", "reason"])
FILES_OPEN = Gauge("logagent_files_open", "Collected files with an open descriptor")
FILES_TRACKED = Gauge("logagent_files_tracked", "Collected files known to the tailers")
UNACKED_BYTES = Gauge("logagent_unacked_bytes", "Bytes read from a file but not yet acknowledged by Kafka",
                      ["path"])
PARTIAL_LINE_BYTES = Gauge("logagent_partial_line_bytes", "Bytes of a last line without its newline, held "
                           "until the newline comes (never shipped cut in two)", ["path"])
ROTATIONS = Counter("logagent_rotations", "Rotations followed", ["path", "kind"])

SPOOL_BYTES = Gauge("logagent_spool_bytes", "Bytes of rotated-away files kept in the spool until Kafka has them")
SPOOL_WRITTEN = Counter("logagent_spool_written_bytes", "Bytes copied into the spool (rotated-away bytes Kafka "
                        "had not acknowledged yet)")
SPOOL_FILES = Gauge("logagent_spool_files", "Rotated-away files with bytes in the spool")
SPOOL_REFUSED_BYTES = Counter("logagent_spool_refused_bytes", "Bytes of rotated-away files the full spool could "
                              "not keep (lost if the agent stops before Kafka takes them)")
SPOOL_REFUSED_LINES = Counter("logagent_spool_refused_lines", "Lines of rotated-away files the full spool could "
                              "not keep (lost if the agent stops before Kafka takes them)")
LOST_BYTES = Counter("logagent_bytes_lost", "Bytes known to be lost, where their number is known: the part of a "
                     "rotated-away file the agent knew of but Kafka did not have, when the file is found nowhere "
                     "(rotated_away), its copy cannot be read (unreadable_copy) or ends short of it "
                     "(incomplete_copy)", ["reason"])
FILES_LOST = Counter("logagent_files_lost", "Earlier files of a collected path whose lines may be lost, counted at "
                     "the start that finds it: a known file found nowhere (rotated_away: not by inode, not in the "
                     "spool, not in a copy; it may have held lines written after the agent stopped), a rotated "
                     "copy that cannot be opened, decompressed or read to its end (unreadable_copy)", ["reason"])
RECOVERED_FILES = Counter("logagent_rotated_files_recovered", "Rotated-away files found again and read to their "
                          "end (at start, or after generations were missed)", ["source"])

KUBELET_REQUESTS = Counter("logagent_kubelet_requests", "List requests to the node's kubelet (/pods) for pods' "
                           "labels and annotations, one per [kubernetes] metadata_interval", ["outcome"])
KUBELET_PODS = Gauge("logagent_kubelet_pods", "Pods whose labels are known (listed by the kubelet within the last "
                     "24 h), kept under data_dir")

QUEUE_DEPTH = Gauge("logagent_queue_depth", "Messages waiting in the bounded queue")
QUEUE_CAPACITY = Gauge("logagent_queue_capacity", "Capacity of the bounded queue ([kafka] chan_size)")
DELIVERED = Counter("logagent_messages_delivered", "Messages acknowledged by Kafka", ["topic"])
FAILED = Counter("logagent_messages_failed", "Messages Kafka refused (they are retried)", ["topic", "reason"])
PRODUCER_FULL = Counter("logagent_kafka_producer_queue_full", "Times librdkafka's local queue was full "
                        "and the producer waited (broker slower than the files grow, or down)")
TRANSACTIONS = Counter("logagent_kafka_transactions", "exactly_once: Kafka transactions ended, by outcome "
                       "(committed; aborted: their lines are sent again)", ["outcome"])
KAFKA_UP = Gauge("logagent_kafka_up", "1 when the producer has a broker connection")

SYSINFO_SAMPLES = Counter("logagent_sysinfo_samples", "Sysinfo messages queued", ["measurement"])
SYSINFO_DROPPED = Counter("logagent_sysinfo_dropped", "Sysinfo messages dropped because the queue was full")
SYSINFO_ERRORS = Counter("logagent_sysinfo_errors", "Errors while sampling host metrics", ["measurement"])

CONFIG_REVISION = Gauge("logagent_etcd_config_revision", "etcd revision of the applied configuration")
CONFIG_ERRORS = Counter("logagent_config_errors", "Refused configuration values", ["key"])
ETCD_ERRORS = Counter("logagent_etcd_errors", "etcd connection or request errors")
ETCD_UP = Gauge("logagent_etcd_up", "1 while the etcd watch is established")

TASK_CRASHES = Counter("logagent_task_crashes", "Unexpected exceptions in supervised tasks", ["task"])
REGISTRY_ERRORS = Counter("logagent_registry_errors", "Failures reading or writing the offset registry")
REGISTRY_ENTRIES = Gauge("logagent_registry_entries", "Files in the offset registry (live, and finished ones kept "
                         "so that their rotated copies are not read again)")
REGISTRY_PRUNED = Counter("logagent_registry_pruned", "Finished files forgotten by the registry", ["reason"])

# Per-file series are capped so /metrics stays small with 10,000 collected files: the first
# MAX_PATH_SERIES paths get their own label, later ones share OTHER_PATHS.
MAX_PATH_SERIES = 1000
OTHER_PATHS = "(other)"
_labelled_paths: set[str] = set()


def path_label(path: str) -> str:
    """The `path` label value for per-file metrics, given the name's display form
    (opener.display_name). Control characters are escaped once more in case a raw name comes
    here: a label is scraped into dashboards and alerts, and must stay one line."""
    path = escape_controls(path)
    if path in _labelled_paths:
        return path
    if len(_labelled_paths) < MAX_PATH_SERIES:
        _labelled_paths.add(path)
        return path
    return OTHER_PATHS


# The per-file metrics: their first label is `path`.
_PER_PATH: tuple[MetricWrapperBase, ...] = (LINES_READ, BYTES_READ, DECODE_ERRORS, LINES_TRUNCATED, FILE_ERRORS,
                                            UNACKED_BYTES, PARTIAL_LINE_BYTES, ROTATIONS)


def forget_path(label: str) -> None:
    """A path no longer collected (its entry removed, or its file gone with nothing after it): its
    series leave /metrics and its place under MAX_PATH_SERIES is free for another path. Without
    this, a folder where files with new names come and go kept the first 1,000 names' series for
    ever, and every later file shared OTHER_PATHS."""
    if label == OTHER_PATHS or label not in _labelled_paths:
        return
    _labelled_paths.discard(label)
    for metric in _PER_PATH:
        # prometheus_client keeps a metric's children by their label values; remove() wants them all.
        for values in [v for v in list(metric._metrics) if v and v[0] == label]:
            metric.remove(*values)


class Deferred(Protocol):
    def flush_metrics(self) -> None:
        """Put the counts kept since the last call into their series (and set the gauges they own)."""


# Counted per line, put into their series when the metrics are read. A series' inc() or set() takes a
# lock (~0.8 us); a file's reader did six of them per line, and at 10,000 files written once a second
# each those were a tenth of the agent's CPU (issue 23). Owners add up plain ints and `defer()`
# themselves; `flush()`, on the loop, runs before /metrics is rendered, before `total()`, and at the
# latest FLUSH_AFTER seconds after the first deferred count (so no finished owner is kept alive by a
# scrape that never comes). Between scrapes a file then costs one flush, whatever it read meanwhile.
FLUSH_AFTER = 10.0
_deferred: set[Deferred] = set()


_flush_timer: asyncio.AbstractEventLoop | None = None  # the loop a flush is timed on


def defer(owner: Deferred) -> None:
    """`owner` has counts not in its series yet: its flush_metrics() runs at the next flush()."""
    global _flush_timer
    if _flush_timer is None or _flush_timer.is_closed():
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a unit test's direct call): its reader flushes
            loop = None
        if loop is not None:
            loop.call_later(FLUSH_AFTER, flush)
            _flush_timer = loop
    _deferred.add(owner)


def flush() -> None:
    """Every deferred count into its series. On the event loop (the owners' counts change there)."""
    global _flush_timer
    _flush_timer = None
    while _deferred:
        _deferred.pop().flush_metrics()


def total(metric: MetricWrapperBase) -> float:
    """The sum of a counter's (or gauge's) samples over all its labels (the fleet status's numbers)."""
    flush()
    return sum(sample.value for family in metric.collect() for sample in family.samples
               if not sample.name.endswith("_created"))
