"""The batch producer (sinks/kafka/batched.py and its C module) against the real broker: batches go
out whole and in order per key, reports come back folded per batch and count every message, a full
local queue stops a batch where it is and the rest follows, a message the broker refuses for its size
is reported with its value, bad settings and an unreachable cluster are errors; and the agent
delivers a file's lines end to end on either producer (`[kafka] batch_producer`)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from logagent.sinks.kafka.batched import MSG_SIZE_TOO_LARGE, QUEUE_FULL, BatchProducer, unavailable
from tests.kit import KafkaReader, need_compiled, new_topic, wait_until


@pytest.fixture(autouse=True)
def built() -> None:
    need_compiled(unavailable(), "the batch producer")


def producer(kafka: str, **extra: Any) -> BatchProducer:
    return BatchProducer({"bootstrap.servers": kafka, "acks": "all", "enable.idempotence": True,
                          "linger.ms": 5, "compression.type": "lz4", **extra})


def drain(p: BatchProducer, want: int, timeout: float = 30.0) -> list[tuple[int, int, int, bytes | None]]:
    """Poll until the reports count `want` messages; returns them all."""
    got: list[tuple[int, int, int, bytes | None]] = []
    deadline = time.monotonic() + timeout
    while sum(n for _, n, _, _ in got) < want and time.monotonic() < deadline:
        got += p.poll(0.1)
    assert sum(n for _, n, _, _ in got) == want, f"{sum(n for _, n, _, _ in got)} of {want} reports in {timeout}s"
    return got


def read_back(kafka: str, topic: str, n: int) -> list[Any]:
    """The topic's messages: `n` of them, then whatever else comes within a quiet second."""
    with KafkaReader(kafka, topic) as reader:
        reader.read(n)
        return reader.settle(quiet=1.0)


def test_batches_go_out_in_order_per_key_and_reports_fold_per_batch(kafka: str) -> None:
    topic = new_topic("batched")
    p = producer(kafka)
    sent: dict[bytes, list[bytes]] = {}
    for token in range(1, 41):
        key = f"127.0.0.1:/var/log/f{token % 4}.log".encode()
        values = [f"{token}:{i}".encode() for i in range(250)]
        assert p.produce(topic, key, values, 0, token) == (250, 0)
        sent.setdefault(key, []).extend(values)
    reports = drain(p, 40 * 250)
    assert all(err == 0 and value is None for _, _, err, value in reports)
    per_token = Counter()
    for token, n, _, _ in reports:
        per_token[token] += n
    assert per_token == dict.fromkeys(range(1, 41), 250)
    assert len(reports) < 40 * 250 / 10, f"{len(reports)} reports for 10,000 messages: not folded"
    got: dict[bytes, list[bytes]] = {}
    for m in read_back(kafka, topic, 10_000):
        got.setdefault(m.key(), []).append(m.value())
    assert got == sent, "every message once, in order per key"
    p.close()


def test_a_full_queue_stops_a_batch_where_it_is_and_the_rest_follows(kafka: str) -> None:
    topic = new_topic("batched-full")
    p = producer(kafka, **{"queue.buffering.max.messages": 50})
    values = [f"m{i}".encode() for i in range(400)]
    start, stops, reported = 0, 0, 0
    deadline = time.monotonic() + 30
    while start < len(values) and time.monotonic() < deadline:
        reached, err = p.produce(topic, b"k", values, start, 7)
        if err:
            assert err == QUEUE_FULL and start <= reached < len(values)
            stops += 1
            reported += sum(n for _, n, e, _ in p.poll(0.05) if e == 0)
        start = reached
    assert start == 400 and stops > 0, "the queue of 50 must have filled"
    drain(p, 400 - reported)
    assert [m.value() for m in read_back(kafka, topic, 400)] == values
    p.close()


def test_a_message_the_broker_refuses_for_its_size_comes_back_with_its_value(kafka: str) -> None:
    topic = new_topic("batched-small")
    admin = AdminClient({"bootstrap.servers": kafka})
    admin.create_topics([NewTopic(topic, 1, 1, config={"max.message.bytes": "2000"})])[topic].result(30)
    p = producer(kafka, **{"compression.type": "none", "linger.ms": 0})
    big = b"x" * 5000
    small = [b"a" * 10, b"b" * 10]
    assert p.produce(topic, b"k", [small[0]], 0, 1) == (1, 0)
    drain(p, 1)  # the first on its own: the big one must not share its record batch
    assert p.produce(topic, b"k", [big], 0, 2) == (1, 0)
    [(token, n, err, value)] = drain(p, 1)
    assert (token, n, err, value) == (2, 1, MSG_SIZE_TOO_LARGE, big)
    assert p.produce(topic, b"k", [small[1]], 0, 3) == (1, 0)
    assert drain(p, 1) == [(3, 1, 0, None)]
    assert [m.value() for m in read_back(kafka, topic, 2)] == small
    p.close()


def test_metadata_errors_and_bad_settings(kafka: str) -> None:
    topic = new_topic("batched-md")
    p = producer(kafka)
    md = p.list_topics(timeout=10)
    assert len(md.brokers) >= 1
    # Asking creates the topic where the broker auto-creates topics (the first answer may still say
    # unknown: so it is with confluent-kafka's list_topics too).
    wait_until(lambda: (info := p.list_topics(topic=topic, timeout=10).topics[topic]).error is None
               and len(info.partitions) == 1, timeout=10, what="the topic's metadata")
    p.close()
    p.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        p.produce(topic, None, [b"x"], 0, 1)
    with pytest.raises(KafkaException, match=r"no\.such\.setting"):
        producer(kafka, **{"no.such.setting": "1"})
    errors: list[KafkaError] = []
    dead = BatchProducer({"bootstrap.servers": "127.0.0.1:1", "error_cb": errors.append,
                          "reconnect.backoff.max.ms": 100})
    with pytest.raises(KafkaException):
        dead.list_topics(timeout=1)
    assert dead.produce(topic, None, [b"waits"], 0, 1) == (1, 0)
    assert dead.flush(0.5) == 1, "nothing is dropped: the message waits for a broker"
    wait_until(lambda: bool(dead.poll(0.1) or errors), timeout=10, what="an error report")
    assert any(e.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN) for e in errors)
    dead.close()


@pytest.mark.parametrize("batch_producer", ["auto", "off"])
def test_the_agent_delivers_on_either_producer(make_agent: Any, kafka: str, logdir: Any, batch_producer: str) -> None:
    topic = new_topic(f"agent-{batch_producer}")
    log = logdir / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(5000)))
    agent = make_agent(files=[{"path": str(log), "topic": topic, "start": "beginning"}],
                       extra={"kafka": {"batch_producer": batch_producer}})
    with KafkaReader(kafka, topic) as reader:
        reader.read(5000)
        reader.settle(quiet=1.0)
        data = reader.data()
        keys = {m.key() for m in reader.messages}
    assert data == [f"line {i}" for i in range(5000)]
    assert keys == {f"127.0.0.1:{log}".encode()}
    started = [line for line in agent.log_text().splitlines() if "kafka producer started" in line]
    want = "the batch producer" if batch_producer == "auto" else "confluent-kafka's produce()"
    assert started and want in started[0], started
    assert agent.stop() == 0
