"""Producer configuration and its log filter (the delivery path is proven end to end in integration)."""

from __future__ import annotations

import logging

from logagent.config import KafkaSettings
from logagent.producer import RepeatFilter, producer_config


def test_producer_defaults_never_drop_and_operator_keys_win():
    conf = producer_config(KafkaSettings(address="127.0.0.1:1", producer={"linger.ms": "50", "acks": "1"}))
    assert conf["bootstrap.servers"] == "127.0.0.1:1"
    assert conf["message.timeout.ms"] == "0"  # no delivery timeout: Kafka down means wait
    assert conf["enable.idempotence"] == "true" and conf["compression.type"] == "lz4"
    assert conf["linger.ms"] == "50" and conf["acks"] == "1"


def test_repeat_filter_lets_a_message_through_once_per_interval():
    f = RepeatFilter(interval=60)

    def rec(msg: str) -> logging.LogRecord:
        return logging.LogRecord("x", logging.ERROR, __file__, 1, msg, None, None)

    assert f.filter(rec("connect failed (after 302ms in state CONNECT)"))
    assert not f.filter(rec("connect failed (after 299ms in state CONNECT)"))
    assert f.filter(rec("another problem"))
