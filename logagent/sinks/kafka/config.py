"""The Kafka sink's producer configuration: the agent's librdkafka defaults, under the
operator's `[kafka.producer]` keys (which win), and the bootstrap address of `[kafka] address`.
"""

from __future__ import annotations

from typing import Any

from logagent.config.settings import KafkaSettings

# Defaults under [kafka.producer]; the operator's keys win.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": "true",
    "compression.type": "lz4",
    "message.timeout.ms": "0",  # never expire a message: Kafka down means wait, not drop
    "linger.ms": "20",
    # One produce request in flight per broker: with more, a request refused while the broker was
    # still creating an auto-created topic (NOT_LEADER_OR_FOLLOWER) can be overtaken by the next one,
    # which the broker takes as the producer's first; the first request's lines are then reported
    # delivered but are not in the log (KAFKA-15591; seen here: a partition whose first batch starts at
    # sequence 4). One in flight keeps a partition's requests in order through any retry.
    "max.in.flight.requests.per.connection": "1",
    "batch.num.messages": "10000",
    "queue.buffering.max.messages": "20000",
    "queue.buffering.max.kbytes": "8192",  # bounds RSS (measured: 64 MiB here meant ~200 MB peak RSS)
    "socket.keepalive.enable": "true",
    # A max_line_bytes line grows when JSON-escaped; compression usually brings it under the
    # broker's own limit, which is the one that counts.
    "message.max.bytes": "16777216",
}


def producer_config(settings: KafkaSettings) -> dict[str, Any]:
    """librdkafka configuration: our defaults, then [kafka.producer], then the bootstrap address."""
    conf: dict[str, Any] = dict(PRODUCER_DEFAULTS)
    conf.update(settings.producer)
    conf["bootstrap.servers"] = settings.address
    return conf
