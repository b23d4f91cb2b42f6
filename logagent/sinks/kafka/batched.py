"""The batch producer: librdkafka driven a batch at a time, through the agent's C module (issue 23).

confluent-kafka's `Producer` costs two Python calls per message: `produce()` on the way in and the
delivery callback on the way back (a `Message` object built for each). At a million lines that is
most of the agent's CPU. `_batchproduce` (C, `_batchproduce.c`) owns a librdkafka producer of its
own, the very librdkafka confluent-kafka runs (found in the process's memory map once
confluent-kafka is imported), and takes a batch per call: `produce(topic, key, values, start,
token)`. Its delivery reports come back from `poll()` folded, one `(token, n, error, value)` tuple
per run of one batch's successes, one per failure. What it does not do (transactions: exactly_once
keeps confluent-kafka's Producer; the configuration's callbacks) stays in Python.

`make_producer` gives the batch producer when the module is built and `[kafka] batch_producer` is
`auto` (the default), confluent-kafka's `Producer` otherwise; the sink drives either
(sinks/kafka/sink.py), with the same guarantees: a batch is acknowledged when every message in it
is, in order, nothing is dropped.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any

from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException, Producer

log = logging.getLogger("logagent.producer")

_batchproduce: ModuleType | None
try:
    from logagent.sinks.kafka import _batchproduce
except ImportError as exc:  # not built (no compiler or no Python headers where it was installed)
    _batchproduce = None
    _WHY_NOT = f"the module is not built ({exc})"
else:
    _WHY_NOT = ""

QUEUE_FULL = RdKafkaError._QUEUE_FULL
MSG_SIZE_TOO_LARGE = RdKafkaError.MSG_SIZE_TOO_LARGE

# librdkafka's syslog levels -> the logging module's, as confluent-kafka maps them.
_LEVELS = {0: logging.CRITICAL, 1: logging.CRITICAL, 2: logging.CRITICAL, 3: logging.ERROR, 4: logging.WARNING,
           5: logging.INFO, 6: logging.INFO, 7: logging.DEBUG}


@functools.cache
def librdkafka_path() -> str | None:
    """The librdkafka confluent-kafka loaded: the shared object of that name in this process's
    memory map (confluent-kafka's wheels ship it in `confluent_kafka.libs/`, a source build links the
    system's). Looked up once: a loaded library stays where it is."""
    import confluent_kafka.cimpl  # noqa: F401 - loads librdkafka, if nothing did yet

    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").split(None, 5)[-1] if line.count(" ") >= 5 else ""
                name = path.rsplit("/", 1)[-1]
                if name.startswith("librdkafka") and not name.startswith("librdkafka++") and ".so" in name:
                    return path
    except OSError:
        return None
    return None


def unavailable() -> str:
    """Why the batch producer cannot run here ("" when it can)."""
    if _WHY_NOT:
        return _WHY_NOT
    if librdkafka_path() is None:
        return "confluent-kafka's librdkafka is not in this process's memory map"
    return ""


class ClusterMetadata:
    """What `list_topics()` answers, in the shape the sink reads of confluent-kafka's."""

    def __init__(self, brokers: int, topic: str | None, topic_error: int, partitions: int) -> None:
        self.brokers = dict.fromkeys(range(brokers))
        self.topics: dict[str, TopicMetadata] = {}
        if topic is not None:
            self.topics[topic] = TopicMetadata(topic_error, partitions)


class TopicMetadata:
    def __init__(self, error: int, partitions: int) -> None:
        self.error = RdKafkaError(error) if error else None
        self.partitions = dict.fromkeys(range(partitions))


class BatchProducer:
    """A librdkafka producer a batch at a time (module docstring). `conf` is confluent-kafka's form:
    librdkafka's keys, plus `error_cb` and `logger`, called from `poll()`'s thread."""

    def __init__(self, conf: dict[str, Any]) -> None:
        if why := unavailable():
            raise RuntimeError(f"the batch producer cannot run: {why}")
        assert _batchproduce is not None
        path = librdkafka_path()
        assert path is not None
        self._error_cb: Callable[[RdKafkaError], None] | None = conf.get("error_cb")
        self._logger: Any = conf.get("logger")
        plain = {k: _text(v) for k, v in conf.items() if k not in ("error_cb", "logger")}
        try:
            self._native = _batchproduce.Producer(path, plain)
        except ValueError as exc:
            raise KafkaException(RdKafkaError(RdKafkaError._INVALID_ARG, str(exc))) from exc
        # produce(topic, key, values, start, token) -> (reached, error): the C call itself, no wrapper.
        self.produce: Callable[[str, bytes | None, list[bytes], int, int], tuple[int, int]] = self._native.produce

    def poll(self, timeout: float) -> list[tuple[int, int, int, bytes | None]]:
        """Serve librdkafka for up to `timeout` seconds; its errors and log lines go to `error_cb` and
        `logger`; returns the delivery reports, (token, n, error, value), in librdkafka's order."""
        reports: list[tuple[int, int, int, bytes | None]]
        reports, events = self._native.poll(timeout)
        for kind, code, fatal, text in events:
            self._event(kind, code, fatal, text)
        return reports

    def _event(self, kind: int, code: int, fatal: int, text: str) -> None:
        if kind == 1:
            if self._logger is not None:
                self._logger.log(_LEVELS.get(code, logging.INFO), "%s", text)
        elif self._error_cb is not None:
            self._error_cb(RdKafkaError(code, text, fatal=bool(fatal)))
        else:
            log.warning("kafka: %s", text)

    def flush(self, timeout: float = -1) -> int:
        """Wait up to `timeout` seconds (-1: no limit) for every report, then serve them (the reports
        are returned by the next `poll()`); returns how many messages are still without one."""
        return int(self._native.flush(1e9 if timeout < 0 else timeout))

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> ClusterMetadata:
        err, brokers, topic_error, partitions = self._native.metadata(topic, 30.0 if timeout < 0 else timeout)
        if err:
            raise KafkaException(RdKafkaError(err))
        return ClusterMetadata(brokers, topic, topic_error, partitions)

    def __len__(self) -> int:
        return int(self._native.outq_len())

    def close(self) -> None:
        """Destroy the librdkafka producer (what it still holds is dropped: flush first)."""
        self._native.close()


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def make_producer(conf: dict[str, Any], batch_producer: str = "auto") -> Any:
    """The batch producer when `batch_producer` is "auto" and it can run, else confluent-kafka's."""
    if batch_producer == "auto":
        why = unavailable()
        if not why:
            return BatchProducer(conf)
        log.info("kafka: the batch producer cannot run (%s): on confluent-kafka's produce()", why)
    return Producer(conf)
