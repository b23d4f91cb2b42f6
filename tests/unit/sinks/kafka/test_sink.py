"""KafkaSink's own paths with a fake Producer (as aiokafka tests its accumulator): batches complete
in the loop once every report is in, a full librdkafka queue (BufferError) waits and loses nothing, a
stop's drain waits for a batch that is still looking up its topic's limit, too-large messages are
cut before produce and cut again when the broker refuses one. Each runs twice: on confluent-kafka's
per-message interface and on the batch producer's (a call per batch, reports folded per batch:
FakeBatchProducer over the same fake librdkafka). Delivery through a real broker is in
tests/integration and tests/integration/test_batch_producer.py."""

from __future__ import annotations

import json
import threading
from collections import deque
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from logagent.config.settings import KafkaSettings
from logagent.pipeline.batch import Batch
from logagent.pipeline.buffer import BatchQueue
from logagent.pipeline.message import MessageFormat
from logagent.runtime import metrics
from logagent.sinks.kafka.batched import MSG_SIZE_TOO_LARGE, QUEUE_FULL, BatchProducer
from logagent.sinks.kafka.sink import KafkaSink
from tests.kit import eventually


class FakeMessage:
    def __init__(self, topic: str, value: bytes, key: bytes | None) -> None:
        self._topic, self._value, self._key = topic, value, key

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return self._topic


class FakeProducer:
    """librdkafka as the sink sees it: a bounded local queue (BufferError when full) and delivery
    reports handed out by poll(). `refuse(size)`: the broker refuses messages above that size."""

    def __init__(self, conf: dict[str, Any], capacity: int = 1000) -> None:
        self.conf = conf
        self.capacity = capacity
        self.pending: deque[tuple[FakeMessage, Any]] = deque()
        self.delivered: list[FakeMessage] = []
        self.lock = threading.Lock()
        self.refuse_above: int | None = None
        self.hold = threading.Event()  # set: reports are not handed out (a slow broker)
        self.broken = b"\x00broken"  # a message holding this is refused by the broker (INVALID_RECORD) ...
        self.invalid = b"\x00invalid"  # ... and one holding this by produce() itself (INVALID_ARG)

    def produce(self, topic: str, value: bytes, key: bytes | None, partition: int, on_delivery: Any) -> None:
        if self.invalid in value:
            raise KafkaException(KafkaError(KafkaError._INVALID_ARG))
        with self.lock:
            if len(self.pending) >= self.capacity:
                raise BufferError("Local: Queue full")
            self.pending.append((FakeMessage(topic, value, key), on_delivery))

    def poll(self, timeout: float) -> int:
        if self.hold.is_set():
            threading.Event().wait(timeout)
            return 0
        with self.lock:
            reports, self.pending = list(self.pending), deque()
        for msg, callback in reports:
            if self.refuse_above is not None and len(msg.value()) > self.refuse_above:
                callback(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), msg)
            elif self.broken in msg.value():
                callback(KafkaError(KafkaError.INVALID_RECORD), msg)
            else:
                self.delivered.append(msg)
                callback(None, msg)
        if not reports:
            threading.Event().wait(min(timeout, 0.01))
        return len(reports)

    def flush(self, timeout: float = 0) -> int:
        return 0

    def list_topics(self, timeout: float = 0) -> Any:
        raise AssertionError("not used")


class FakeBatchProducer(BatchProducer):
    """The batch producer's interface over FakeProducer: one call per batch, and the reports folded as
    the C module folds them (a run of one token's successes is one report; a failure is one)."""

    def __init__(self, fake: FakeProducer) -> None:  # no librdkafka: BatchProducer.__init__ is not run
        self.fake = fake
        self.reports: list[tuple[int, int, int, bytes | None]] = []
        self.produce = self._produce  # type: ignore[assignment]

    def _produce(self, topic: str, key: bytes | None, values: list[bytes], start: int, token: int) -> tuple[int, int]:
        def report(err: Any, msg: FakeMessage) -> None:  # called in the poll thread, by fake.poll()
            code = err.code() if err is not None else 0
            last = self.reports[-1] if self.reports else None
            if not code and last is not None and last[0] == token and last[2] == 0:
                self.reports[-1] = (token, last[1] + 1, 0, None)
            else:
                self.reports.append((token, 1, code, msg.value() if code == MSG_SIZE_TOO_LARGE else None))

        for i in range(start, len(values)):
            try:
                self.fake.produce(topic, values[i], key, -1, report)
            except BufferError:
                return i, QUEUE_FULL
            except KafkaException as exc:
                return i, exc.args[0].code()
        return len(values), 0

    def poll(self, timeout: float) -> list[tuple[int, int, int, bytes | None]]:
        self.fake.poll(timeout)
        out, self.reports = self.reports, []
        return out

    def flush(self, timeout: float = -1) -> int:
        return 0

    def close(self) -> None:
        pass


class FakeLimits:
    """MessageLimits without a cluster: a fixed limit; `lookup` can be held to look slow."""

    def __init__(self, limit: int = 1_000_000) -> None:
        self.limit = limit
        self.known: set[str] = set()
        self.release = threading.Event()
        self.release.set()
        self.lookups = 0

    def cached(self, topic: str) -> int | None:
        return self.limit if topic in self.known else None

    def lookup(self, topic: str) -> int:
        self.lookups += 1
        self.release.wait(10)
        self.known.add(topic)
        return self.limit

    def forget(self, topic: str) -> None:
        self.known.discard(topic)


class Owner:
    def __init__(self) -> None:
        self.done: list[Batch] = []

    def batch_done(self, batch: Batch) -> None:
        self.done.append(batch)


def messages(n: int, size: int = 20) -> list[bytes]:
    fmt = MessageFormat("127.0.0.1", "h", "/var/log/a.log")
    return fmt.build([(i * 100, b"x" * size + str(i).encode(), False) for i in range(n)], b"2026-11-29T00:00:00Z")


@pytest.fixture(params=["produce", "batched"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which producer interface the sink drives: confluent-kafka's, or the batch producer's."""
    return str(request.param)


class Rig:
    def __init__(self, kind: str, capacity: int = 1000, limit: int = 1_000_000) -> None:
        self.queue = BatchQueue(100_000)
        self.producers: list[FakeProducer] = []
        self.limits = FakeLimits(limit)

        def make(conf: dict[str, Any]) -> FakeProducer | FakeBatchProducer:
            producer = FakeProducer(conf, capacity)
            self.producers.append(producer)
            return FakeBatchProducer(producer) if kind == "batched" else producer

        self.sink = KafkaSink(KafkaSettings(address="127.0.0.1:1"), self.queue, producer_factory=make,
                              limits_factory=lambda conf: self.limits)  # type: ignore[arg-type,return-value]

    @property
    def producer(self) -> FakeProducer:
        return self.producers[0]


async def test_a_batch_is_done_once_every_report_is_in_and_in_order(kind: str) -> None:
    rig = Rig(kind)
    await rig.sink.start()
    owner = Owner()
    before = metrics.DELIVERED.labels("t1")._value.get()
    batches = [Batch("t1", b"k", messages(50), end_offset=50 * (i + 1), owner=owner) for i in range(4)]
    for b in batches:
        await rig.queue.put(b)
    await eventually(lambda: len(owner.done) == 4, timeout=5.0)
    assert all(b.remaining == 0 and b.error is None for b in owner.done)
    assert [m.value() for m in rig.producer.delivered] == [v for b in batches for v in messages(50)]
    metrics.flush()  # counted per batch, into the series when the metrics are read
    assert metrics.DELIVERED.labels("t1")._value.get() - before == 200
    assert await rig.sink.stop(5) is True


async def test_a_full_librdkafka_queue_waits_and_loses_nothing(kind: str) -> None:
    rig = Rig(kind, capacity=7)
    await rig.sink.start()
    owner = Owner()
    full_before = metrics.PRODUCER_FULL._value.get()
    values = messages(100)
    await rig.queue.put(Batch("t2", b"k", list(values), end_offset=100, owner=owner))
    await eventually(lambda: len(owner.done) == 1, timeout=5.0)
    assert [m.value() for m in rig.producer.delivered] == values, "every message once, in order"
    assert metrics.PRODUCER_FULL._value.get() > full_before
    assert await rig.sink.stop(5) is True


async def test_a_stop_waits_for_a_batch_still_looking_up_its_topic_limit(kind: str) -> None:
    """Found by the image test: a batch taken off the queue and waiting for its topic's limit was
    invisible to the drain, and a SIGTERM in the first second stopped 'clean' without it."""
    rig = Rig(kind)
    await rig.sink.start()
    rig.limits.release.clear()  # the first lookup of this topic hangs
    owner = Owner()
    await rig.queue.put(Batch("t3", b"k", messages(10), end_offset=10, owner=owner))
    await eventually(lambda: rig.limits.lookups == 1 and rig.queue.empty(), timeout=5.0)
    assert await rig.sink.drain(0.3) is False, "the drain must see the batch in flight"
    rig.limits.release.set()
    assert await rig.sink.drain(5) is True and len(owner.done) == 1
    assert await rig.sink.stop(5) is True


async def test_messages_above_the_limit_are_cut_before_produce_and_a_refused_one_is_resent_cut(kind: str) -> None:
    rig = Rig(kind, limit=3000)
    await rig.sink.start()
    owner = Owner()
    big = messages(1, size=10_000)[0]
    await rig.queue.put(Batch("t4", b"k", [big], end_offset=1, owner=owner))
    await eventually(lambda: len(owner.done) == 1, timeout=5.0)
    [sent] = rig.producer.delivered
    doc = json.loads(sent.value())
    assert len(sent.value()) <= 3000 and doc["truncated"] is True and doc["data"].startswith("xxx")
    # The topic's limit is lowered below what the agent learned: the broker refuses the message; the
    # agent asks again (the cluster now says 2000) and sends that message alone again, cut.
    rig.producer.refuse_above = 1500
    rig.limits.limit = 2000
    await rig.queue.put(Batch("t4", b"k", [big] + messages(3), end_offset=2, owner=owner))
    await eventually(lambda: len(owner.done) == 2, timeout=5.0)
    assert owner.done[1].error is None, "the batch does not fail: its file does not rewind"
    resent = [json.loads(m.value()) for m in rig.producer.delivered[1:]]
    assert sum(1 for d in resent if d.get("truncated")) == 1 and len(resent) == 4
    assert await rig.sink.stop(5) is True


async def test_a_cut_line_names_its_file_escaped_in_the_log_and_the_label(kind: str, caplog: Any) -> None:
    # Issue 20 item 5: the cut message's `path` is the name itself (a newline in it); the log line and
    # the label show it escaped, and the same label as the file's tailer when the batch has one.
    rig = Rig(kind, limit=3000)
    await rig.sink.start()
    name = "/var/log/x\n2026-12-06 00:00:00,000 CRITICAL logagent.agent: FORGED.log"
    shown = "/var/log/x\\x0a2026-12-06 00:00:00,000 CRITICAL logagent.agent: FORGED.log"
    big = MessageFormat("127.0.0.1", "h", name).build([(0, b"x" * 10_000, False)], b"2026-11-29T00:00:00Z")[0]
    owner = Owner()
    before = metrics.LINES_TRUNCATED.labels(shown)._value.get()
    with caplog.at_level("WARNING", "logagent.producer"):
        await rig.queue.put(Batch("t-cut-name", b"k", [big], end_offset=1, owner=owner))
        await eventually(lambda: len(owner.done) == 1, timeout=5.0)
    assert json.loads(rig.producer.delivered[0].value())["path"] == name
    assert f"a line of {shown} (a " in caplog.text and FORGED_LINE not in caplog.text
    assert metrics.LINES_TRUNCATED.labels(shown)._value.get() == before + 1
    owner.name = "/var/log/its tailer's label"  # type: ignore[attr-defined]
    labelled = metrics.LINES_TRUNCATED.labels("/var/log/its tailer's label")._value.get()
    await rig.queue.put(Batch("t-cut-name", b"k", [big], end_offset=2, owner=owner))
    await eventually(lambda: len(owner.done) == 2, timeout=5.0)
    assert metrics.LINES_TRUNCATED.labels("/var/log/its tailer's label")._value.get() == labelled + 1
    assert await rig.sink.stop(5) is True


FORGED_LINE = "\n2026-12-06 00:00:00,000 CRITICAL"


async def test_a_message_the_broker_refuses_fails_its_batch_once_every_report_is_in(kind: str) -> None:
    rig = Rig(kind)
    await rig.sink.start()
    owner = Owner()
    values = messages(10)
    values[4] += rig.producer.broken
    await rig.queue.put(Batch("t5", b"k", list(values), end_offset=10, owner=owner))
    await rig.queue.put(Batch("t5", b"k", messages(3), end_offset=13, owner=owner))
    await eventually(lambda: len(owner.done) == 2, timeout=5.0)
    failed, fine = owner.done
    assert failed.error is not None and failed.error.code() == KafkaError.INVALID_RECORD and failed.remaining == 0
    assert fine.error is None and fine.end_offset == 13
    assert await rig.sink.stop(5) is True


async def test_a_message_produce_refuses_fails_its_batch_with_the_rest_never_sent(kind: str) -> None:
    rig = Rig(kind)
    await rig.sink.start()
    owner = Owner()
    values = messages(10)
    values[6] += rig.producer.invalid
    await rig.queue.put(Batch("t6", b"k", list(values), end_offset=10, owner=owner))
    await eventually(lambda: len(owner.done) == 1, timeout=5.0)
    [batch] = owner.done
    assert batch.error is not None and batch.error.code() == KafkaError._INVALID_ARG and batch.remaining == 0
    assert [m.value() for m in rig.producer.delivered] == values[:6], "nothing after the refused one is sent"
    assert await rig.sink.stop(5) is True
