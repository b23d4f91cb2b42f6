"""librdkafka's log lines through the agent's log: repeats folded, a fresh broker's noise INFO."""

from __future__ import annotations

import logging

import pytest

from logagent.sinks.kafka.log import LibrdkafkaLog, RepeatFilter, SettlingFilter


def test_repeat_filter_lets_a_message_through_once_per_interval():
    f = RepeatFilter(interval=60)

    def rec(msg: str) -> logging.LogRecord:
        return logging.LogRecord("x", logging.ERROR, __file__, 1, msg, None, None)

    assert f.filter(rec("connect failed (after 302ms in state CONNECT)"))
    assert not f.filter(rec("connect failed (after 299ms in state CONNECT)"))
    assert f.filter(rec("another problem"))


def test_coordinator_load_is_info_while_a_fresh_broker_settles():
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


def test_each_producer_has_its_own_adapter_and_importing_attaches_nothing(caplog: pytest.LogCaptureFixture):
    assert not logging.getLogger("logagent.librdkafka").filters
    caplog.set_level(logging.INFO, logger="logagent.librdkafka")
    first, second = LibrdkafkaLog(), LibrdkafkaLog()
    for adapter in (first, first, second):  # librdkafka's own call: log(level, fmt, fac, name, text)
        adapter.log(logging.WARNING, "%s [%s] %s", "FAIL", "rdkafka#producer-1", "Connect to 127.0.0.1:1 failed")
    shown = [r for r in caplog.records if r.name == "logagent.librdkafka"]
    assert [r.getMessage() for r in shown] == ["FAIL [rdkafka#producer-1] Connect to 127.0.0.1:1 failed"] * 2
    assert not logging.getLogger("logagent.librdkafka").filters
