"""Producer configuration and its log filter (the delivery path is proven end to end in integration)."""

from __future__ import annotations

import logging

from logagent.config.settings import KafkaSettings
from logagent.sinks.kafka.sink import RepeatFilter, producer_config


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


def test_fit_message_cuts_data_to_the_limit_and_flags_it():
    import orjson

    from logagent.pipeline.message import MessageFormat, fit_message

    fmt = MessageFormat("10.0.0.5", "web-1", "/var/log/app.log", "web")
    [value] = fmt.build([(7, "é\x01".encode() * 50_000, False)], b"2026-11-29T00:00:00.000000Z")
    for limit in (300_000, 100_000, 2_000, 300):
        out, path = fit_message(value, limit)
        doc = orjson.loads(out)
        assert len(out) <= limit and doc["truncated"] is True and path == "/var/log/app.log"
        assert doc["offset"] == 7 and doc["module"] == "web" and "é\x01".startswith(doc["data"][:2])
    assert fit_message(value, 100) is None  # not even the envelope fits
    assert fit_message(b"cpu,host=a usage=1 1", 10) is None  # not a log message: left alone


def test_coordinator_load_is_info_while_a_fresh_broker_settles():
    from logagent.sinks.kafka.sink import SettlingFilter

    f = SettlingFilter(grace=60)

    def rec(msg: str) -> logging.LogRecord:
        return logging.LogRecord("x", logging.WARNING, __file__, 1, msg, None, None)

    early = rec("Failed to acquire idempotence PID from broker 1: Broker: Coordinator load in progress: retrying")
    assert f.filter(early) and early.levelno == logging.INFO
    other = rec("connect to ipv4#127.0.0.1:9092 failed")
    assert f.filter(other) and other.levelno == logging.WARNING
    f.started -= 120  # still not resolved a minute on: that is worth a warning
    late = rec("Failed to acquire idempotence PID from broker 1: Broker: Coordinator load in progress: retrying")
    assert f.filter(late) and late.levelno == logging.WARNING
