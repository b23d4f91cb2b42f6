"""The largest message each topic takes, learned from the cluster instead of guessed.

A message larger than what the broker accepts is refused for good (MESSAGE_TOO_LARGE):
retrying it would stick its file forever. The limit is the topic's `max.message.bytes`
(which inherits the broker's `message.max.bytes` unless set per topic); a topic that does
not exist yet will be created with the broker's. Both are asked with DescribeConfigs (an
AdminClient with the producer's connection and security settings), once per topic and
again after REFRESH seconds or when the broker refuses a message for its size. When the
cluster cannot be asked (down, or not allowed by ACLs) Kafka's default is assumed; ACLs that
allow describing the topic but not the broker still give the topic's own limit.

The broker checks the size of a whole record batch after compression, so `usable()`
leaves room for the batch and record framing, the key and a compressor's worst case.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

log = logging.getLogger("logagent.producer")

KAFKA_DEFAULT = 1048588  # message.max.bytes when nobody changed it
REFRESH = 300.0
RETRY = 30.0  # after a failed lookup (cluster down): the default meanwhile
TIMEOUT = 5.0


SMALLEST_FIT = 1024  # what usable() gives at least, whatever the limit


def usable(limit: int, key_len: int) -> int:
    """The largest message value that fits `limit` once framed (batch header, record header,
    key) and compressed (lz4's worst case on incompressible bytes is under 0.5 %)."""
    return max(SMALLEST_FIT, limit - 512 - key_len - limit // 200)


class MessageLimits:
    """Per topic: the broker's limit on one message (see the module docstring). Blocking:
    `lookup` runs in a worker thread."""

    def __init__(self, conf: dict[str, Any], admin_factory: Callable[[dict[str, Any]], AdminClient] = AdminClient,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._conf = {k: v for k, v in conf.items() if not callable(v)}
        self._conf["logger"] = logging.getLogger("logagent.librdkafka")
        self._admin_factory, self._clock = admin_factory, clock  # tests give a fake cluster and clock
        self._admin: AdminClient | None = None
        self._broker: tuple[int, float] | None = None  # (limit, when learned)
        self._topics: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def cached(self, topic: str) -> int | None:
        """The topic's limit when known and fresh; None when `lookup` should ask."""
        known = self._topics.get(topic)
        if known is None or self._clock() >= known[1]:
            return None
        return known[0]

    def forget(self, topic: str) -> None:
        """The broker refused a message for its size: ask again before the next one."""
        self._topics.pop(topic, None)
        self._broker = None

    def lookup(self, topic: str) -> int:
        """Ask the cluster (thread); remembers the answer, or the default for RETRY seconds."""
        with self._lock:
            cached = self.cached(topic)
            if cached is not None:
                return cached
            limit, fresh_for = self._ask(topic)
            self._topics[topic] = (limit, self._clock() + fresh_for)
            return limit

    def _ask(self, topic: str) -> tuple[int, float]:
        try:
            if self._admin is None:
                self._admin = self._admin_factory(self._conf)
            broker = self._broker  # a local: `forget` may clear the attribute from the loop meanwhile
            if broker is None or self._clock() >= broker[1]:
                broker = self._broker = self._ask_broker(self._admin)
            res = ConfigResource(ResourceType.TOPIC, topic)
            try:
                value = self._admin.describe_configs([res], request_timeout=TIMEOUT)[res].result(TIMEOUT)
                return int(value["max.message.bytes"].value), REFRESH
            except (KafkaException, TimeoutError):
                # Not created yet (auto-create gives it the broker's limit), or not ours to describe.
                return broker[0], RETRY
        except (KafkaException, ValueError, KeyError, TypeError, RuntimeError, TimeoutError) as exc:
            log.debug("cannot ask the cluster for the message size limit of %s (%s); assuming %d",
                      topic, exc, KAFKA_DEFAULT)
            return KAFKA_DEFAULT, RETRY

    def _ask_broker(self, admin: AdminClient) -> tuple[int, float]:
        """(the broker's message.max.bytes, until when it is fresh). A cluster that answers but will
        not describe its broker (ACLs) gives Kafka's default for RETRY seconds, and the topic is
        still asked; one that does not answer raises (the metadata request or a timeout)."""
        md = admin.list_topics(timeout=TIMEOUT)
        res = ConfigResource(ResourceType.BROKER, str(min(md.brokers)))
        try:
            value = admin.describe_configs([res], request_timeout=TIMEOUT)[res].result(TIMEOUT)
        except KafkaException as exc:
            log.debug("cannot describe broker %s (%s); assuming %d for topics that cannot be described either",
                      res.name, exc, KAFKA_DEFAULT)
            return KAFKA_DEFAULT, self._clock() + RETRY
        return int(value["message.max.bytes"].value), self._clock() + REFRESH
