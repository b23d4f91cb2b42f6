"""The producer's configuration: the agent's defaults under the operator's keys."""

from __future__ import annotations

from logagent.config.settings import KafkaSettings
from logagent.sinks.kafka.config import producer_config


def test_producer_defaults_never_drop_and_operator_keys_win():
    conf = producer_config(KafkaSettings(address="127.0.0.1:1", producer={"linger.ms": "50", "acks": "1"}))
    assert conf["bootstrap.servers"] == "127.0.0.1:1"
    assert conf["message.timeout.ms"] == "0"  # no delivery timeout: Kafka down means wait
    assert conf["enable.idempotence"] == "true" and conf["compression.type"] == "lz4"
    assert conf["linger.ms"] == "50" and conf["acks"] == "1"


def test_no_operator_key_means_the_agent_defaults():
    conf = producer_config(KafkaSettings(address="127.0.0.1:1"))
    assert conf["acks"] == "all" and conf["enable.idempotence"] == "true" and conf["compression.type"] == "lz4"
    # one request in flight: no request overtaken by the next around a topic's creation (KAFKA-15591)
    assert conf["max.in.flight.requests.per.connection"] == "1"
