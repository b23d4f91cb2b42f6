"""TransactionalSink's own logic (sinks/kafka/transactional.py's docstring) against a fake
transactional Producer, injected through the sink's producer factory: how batches are grouped into
transactions (the interval after the first batch, the size cap), which offset records go in one,
that owners hear of their batches only once they commit, and the faults: a refused message or
commit aborts (and the transaction open after it), the files rewind to their committed offsets and
send again, batches read before the rewind are failed unsent, sysinfo samples are sent again; a
fence soon after a transaction began, or a host record written by another process, is a takeover
(Fenced: exit status 3); a transaction timed out by the broker, or a fatal error, makes new
producers and the host's transaction record tells which transactions committed.

The fake broker (FakeCluster) keeps what a read_committed consumer would see (committed
transactions in order) apart from everything written (what read_uncommitted sees). The offsets
topic is the real OffsetsTopic's decoding over the fake's committed records (no admin client, no
consumer). The same promises through the real broker: tests/integration/test_exactly_once.py and
tests/integration/faults/test_exactly_once_faults.py."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

import pytest
from confluent_kafka import KafkaError, KafkaException

from logagent.config.settings import KafkaSettings
from logagent.errors import Fenced
from logagent.pipeline.batch import Batch
from logagent.pipeline.buffer import BatchQueue
from logagent.pipeline.checkpoint import TXN_KEY, Checkpoint
from logagent.runtime import metrics
from logagent.sinks.kafka import transactional
from logagent.sinks.kafka.offsets import Committed, OffsetsTopic, TxnRecord
from logagent.sinks.kafka.transactional import TransactionalSink
from logagent.sources.files.acks import Ack, AckTracker
from tests.kit import eventually
from tests.unit.sinks.kafka.test_sink import FakeLimits, FakeMessage

HOST = "host-1"
OFFSETS = "offsets"
TOPIC = "logs"
REFUSED = KafkaError(KafkaError.INVALID_RECORD, "the broker refuses this record")


class Record(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes
    partition: int


class FakeCluster:
    """The broker as transactional producers see it. `committed`: transactions in commit order
    (a read_committed consumer's view); `aborted`; `written`: every message (read_uncommitted).
    Tests steer it: `gate` holds commits, `reports` holds delivery reports, `refuse` picks the
    messages whose delivery fails, `plan` says what the next commits do."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.committed: list[list[Record]] = []
        self.aborted: list[list[Record]] = []
        self.written: list[Record] = []
        self.producers: list[FakeTxnProducer] = []
        self.gate = threading.Event()
        self.gate.set()
        self.reports = threading.Event()
        self.reports.set()
        self.refuse: Callable[[Record], bool] = lambda record: False
        self.full: Callable[[Record], bool] = lambda record: False  # produce() raises BufferError
        self.plan: deque[str] = deque()  # "refuse", "fenced", "fatal", "fatal_after_commit", "timeout_fenced"
        self.commit_waiting = threading.Event()  # a commit came to the closed gate

    def producer(self, conf: dict[str, Any]) -> FakeTxnProducer:
        """The sink's producer factory."""
        producer = FakeTxnProducer(self, conf)
        self.producers.append(producer)
        return producer

    def visible(self, topic: str = TOPIC) -> list[bytes]:
        """The values of `topic` a read_committed consumer reads."""
        return [r.value for txn in self.committed for r in txn if r.topic == topic]

    def written_values(self, topic: str = TOPIC) -> list[bytes]:
        return [r.value for r in self.written if r.topic == topic]

    def log_transactions(self) -> list[list[Record]]:
        """Committed transactions that carry messages of the log topic (not the start's claim)."""
        return [txn for txn in self.committed if any(r.topic == TOPIC for r in txn)]


class FakeTxnProducer:
    """A transactional confluent_kafka.Producer in small: produce() into the open transaction,
    delivery reports from poll(), commit and abort (by the cluster's plan)."""

    def __init__(self, cluster: FakeCluster, conf: dict[str, Any]) -> None:
        self.cluster = cluster
        self.conf = conf
        self.lock = threading.Lock()
        self.open: list[Record] | None = None
        self.first_produce = 0.0
        self.pending: deque[tuple[Record, Any]] = deque()
        self.inits = 0

    def init_transactions(self, timeout: float) -> None:
        self.inits += 1

    def begin_transaction(self) -> None:
        with self.lock:
            assert self.open is None, "begin_transaction with a transaction open"
            self.open, self.first_produce = [], 0.0

    def produce(self, topic: str, value: bytes, key: bytes | None, partition: int, on_delivery: Any) -> None:
        record = Record(topic, key, value, partition)
        if self.cluster.full(record):
            raise BufferError("Local: Queue full")
        with self.lock:
            assert self.open is not None, "produce outside a transaction"
            self.open.append(record)
            self.first_produce = self.first_produce or time.monotonic()
            self.pending.append((record, on_delivery))
        with self.cluster.lock:
            self.cluster.written.append(record)

    def poll(self, timeout: float) -> int:
        if not self.cluster.reports.is_set():
            time.sleep(min(timeout, 0.01))
            return 0
        with self.lock:
            reports, self.pending = list(self.pending), deque()
        for record, callback in reports:
            if callback is not None:
                err = REFUSED if self.cluster.refuse(record) else None
                callback(err, FakeMessage(record.topic, record.value, record.key))
        if not reports:
            time.sleep(min(timeout, 0.01))
        return len(reports)

    def commit_transaction(self, timeout: float) -> None:
        if not self.cluster.gate.is_set():
            self.cluster.commit_waiting.set()
        assert self.cluster.gate.wait(30), "a test held a commit for 30 s"
        action = self.cluster.plan.popleft() if self.cluster.plan else "commit"
        if action == "refuse":
            raise KafkaException(KafkaError(KafkaError.INVALID_TXN_STATE, "commit refused", txn_requires_abort=True))
        if action == "fenced":
            raise KafkaException(KafkaError(KafkaError._FENCED, "producer fenced", fatal=True))
        if action == "timeout_fenced":  # the coordinator aborted it for its transaction.timeout.ms
            limit = float(self.conf["transaction.timeout.ms"]) / 1000.0
            while time.monotonic() - self.first_produce < limit:
                time.sleep(0.01)
            raise KafkaException(KafkaError(KafkaError._FENCED, "timed out: fenced", fatal=True))
        if action == "fatal":
            raise KafkaException(KafkaError(KafkaError._FATAL, "fatal", fatal=True))
        self._end(self.cluster.committed)
        if action == "fatal_after_commit":  # the commit reached the broker, its answer did not
            raise KafkaException(KafkaError(KafkaError._FATAL, "fatal after the commit", fatal=True))

    def abort_transaction(self, timeout: float) -> None:
        self._end(self.cluster.aborted)

    def _end(self, into: list[list[Record]]) -> None:
        with self.lock:
            records, self.open = self.open or [], None
        with self.cluster.lock:
            into.append(records)

    def purge(self) -> None:
        with self.lock:
            self.pending.clear()

    def flush(self, timeout: float = 0) -> int:
        return 0


class ClusterOffsets(OffsetsTopic):
    """The real OffsetsTopic's record decoding (`_take`) over the fake cluster's committed records."""

    def __init__(self, cluster: FakeCluster, conf: dict[str, Any], topic: str, host_id: str) -> None:
        super().__init__(conf, topic, host_id)
        self.cluster = cluster

    def ensure(self, timeout: float = 10.0) -> None:
        self.partitions = 1

    def read(self, timeout: float = 30.0) -> Committed:
        out = Committed({}, None)
        for txn in list(self.cluster.committed):
            for record in txn:
                if record.topic == self.topic:
                    self._take(out, record.key, record.value)
        return out


class Recorder:
    """A batch owner with no offsets to commit (no checkpoint)."""

    def __init__(self) -> None:
        self.done: list[Batch] = []

    def batch_done(self, batch: Batch) -> None:
        self.done.append(batch)


class Pinned(Recorder):
    """A batch owner with a file's identity: its checkpoint is the batch's end offset (None when
    `forget` says the batch tells nothing of the file's offset any more)."""

    def __init__(self, uid: str, forget: bool = False) -> None:
        super().__init__()
        self.uid = uid
        self.forget = forget

    def checkpoint(self, batch: Batch) -> Checkpoint | None:
        if self.forget:
            return None
        return Checkpoint(self.uid, f"/var/log/{self.uid}.log", 8, 12, 1.0, "ab", 2, batch.end_offset)


class FileOwner:
    """A file of `lines` lines shipped as the file source ships one (sources/files/shipper.py, in
    small): batches of `chunk` lines put in order with the offset they reach and the AckTracker's
    generation; an acknowledgement moves the offset through the real AckTracker, a failure rewinds
    it to the last committed offset and the lines after it are put again."""

    def __init__(self, queue: BatchQueue, uid: str, lines: int, chunk: int = 50) -> None:
        self.queue, self.uid, self.lines, self.chunk = queue, uid, lines, chunk
        self.acks = AckTracker()
        self.read_pos = 0
        self.rewinds = 0
        self._wake = asyncio.Event()

    def line(self, i: int) -> bytes:
        return f"{self.uid} {i:06d}".encode()

    def expected(self) -> list[bytes]:
        return [self.line(i) for i in range(self.lines)]

    async def run(self) -> None:
        while True:
            if self.read_pos >= self.lines:
                self._wake.clear()
                await self._wake.wait()
                continue
            start, end = self.read_pos, min(self.read_pos + self.chunk, self.lines)
            batch = Batch(TOPIC, self.uid.encode(), [self.line(i) for i in range(start, end)], end, self,
                          self.acks.generation)
            self.acks.sent(batch)
            self.read_pos = end
            await self.queue.put(batch)

    def batch_done(self, batch: Batch) -> None:
        if self.acks.done(batch) is Ack.FAILED:
            self.read_pos = self.acks.rewind()
            self.rewinds += 1
            self._wake.set()

    def checkpoint(self, batch: Batch) -> Checkpoint | None:
        if batch.generation != self.acks.generation:
            return None
        return Checkpoint(self.uid, f"/var/log/{self.uid}.log", 8, 12, 1.0, "ab", 2, batch.end_offset, self.read_pos)


class Rig:
    """A TransactionalSink on a FakeCluster, its owners' tasks, and what on_fatal was handed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, interval: float = 0.05, cap: int = 20000,
                 producer: dict[str, str] | None = None) -> None:
        self.cluster = FakeCluster()
        self.queue = BatchQueue(100_000)
        self.fatal: list[BaseException] = []
        self.tasks: list[asyncio.Task[None]] = []
        cluster = self.cluster
        # start() makes its OffsetsTopic itself (no factory to inject): the module's name is replaced.
        monkeypatch.setattr(transactional, "OffsetsTopic",
                            lambda conf, topic, host_id: ClusterOffsets(cluster, conf, topic, host_id))
        settings = KafkaSettings(address="127.0.0.1:1", delivery="exactly_once", transaction_interval=interval,
                                 transaction_max_messages=cap, offsets_topic=OFFSETS, producer=producer or {})
        self.sink = TransactionalSink(settings, self.queue, HOST, f"logagent-{HOST}", on_fatal=self.fatal.append,
                                      producer_factory=cluster.producer,
                                      limits_factory=lambda conf: FakeLimits())  # type: ignore[arg-type,return-value]

    def ship(self, owner: FileOwner) -> FileOwner:
        self.tasks.append(asyncio.ensure_future(owner.run()))
        return owner

    def committed(self) -> Committed:
        return ClusterOffsets(self.cluster, {}, OFFSETS, HOST).read()

    async def close(self) -> bool:
        self.cluster.gate.set()
        self.cluster.reports.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        return await self.sink.stop(5)


@pytest.fixture
async def rig_of(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Rig]]:
    """rig_of(interval=..., cap=..., producer={...}) -> a Rig; its sink started by the test, always
    stopped at the end (commits and reports released first)."""
    rigs: list[Rig] = []

    def make(**kw: Any) -> Rig:
        rigs.append(Rig(monkeypatch, **kw))
        return rigs[-1]

    yield make
    for rig in rigs:
        await rig.close()


def values(prefix: str, n: int) -> list[bytes]:
    return [f"{prefix} {i:04d}".encode() for i in range(n)]


def counted(outcome: str) -> float:
    return metrics.TRANSACTIONS.labels(outcome)._value.get()


async def shipped_exactly_once(rig: Rig, owner: FileOwner, timeout: float = 10.0) -> None:
    """Wait until the file is acknowledged to its end; then a read_committed consumer has each of
    its lines once, in order, and the file's last committed offset record says its end."""
    await eventually(lambda: owner.acks.acked == owner.lines, timeout=timeout, what="the file acknowledged to its end")
    assert rig.cluster.visible() == owner.expected(), "read_committed: every line once, in order"
    assert rig.committed().checkpoints[owner.uid].offset == owner.lines


# ---------------------------------------------------------------- how batches make transactions


async def test_start_claims_the_transactions_and_reads_back_this_hosts_offsets(rig_of):
    rig = rig_of()
    mine = Checkpoint("8-12-1", "/var/log/a.log", 8, 12, 1.0, "ab", 2, 4096)
    theirs = Checkpoint("8-13-1", "/var/log/b.log", 8, 13, 1.0, "cd", 2, 99)
    rig.cluster.committed.append([Record(OFFSETS, mine.key(HOST), mine.value(), 0),
                                  Record(OFFSETS, theirs.key("host-2"), theirs.value(), 0)])
    await rig.sink.start()
    assert rig.sink.committed is not None and rig.sink.committed.checkpoints == {mine.uid: mine}
    assert [p.conf["transactional.id"] for p in rig.cluster.producers] == [f"logagent-{HOST}-0", f"logagent-{HOST}-1"]
    assert all(p.inits == 1 for p in rig.cluster.producers)
    claim = rig.committed().txn  # the first transaction: only the host's record, naming this process
    assert claim is not None and (claim.instance, claim.seq) == (rig.sink.instance, 0)


async def test_batches_within_one_interval_share_a_transaction_that_commits_after_it(rig_of):
    rig = rig_of(interval=1.0)
    await rig.sink.start()
    owner = Recorder()
    put = time.monotonic()
    await rig.queue.put(Batch(TOPIC, b"k", values("a", 10), 10, owner))
    await eventually(lambda: len(rig.cluster.written_values()) == 10, what="the first batch produced")
    await rig.queue.put(Batch(TOPIC, b"k", values("b", 10), 20, owner))  # inside the open interval
    await eventually(lambda: len(owner.done) == 2, what="both batches committed")
    committed_at = time.monotonic()
    [txn] = rig.cluster.log_transactions()
    assert [r.value for r in txn if r.topic == TOPIC] == values("a", 10) + values("b", 10)
    assert committed_at - put >= 1.0, "the transaction stays open for the interval after its first batch"
    await rig.queue.put(Batch(TOPIC, b"k", values("c", 10), 30, owner))  # after the interval: the next one
    await eventually(lambda: len(owner.done) == 3, what="the third batch committed")
    assert [[r.value for r in t if r.topic == TOPIC] for t in rig.cluster.log_transactions()][1] == values("c", 10)
    assert all(b.error is None for b in owner.done)


async def test_a_transaction_ends_at_transaction_max_messages(rig_of):
    rig = rig_of(interval=60.0, cap=100)  # only the cap can end a transaction within the test
    await rig.sink.start()
    owner = Recorder()
    batches = [Batch(TOPIC, b"k", values(f"b{i}", 50), 50 * (i + 1), owner) for i in range(6)]
    for batch in batches:
        await rig.queue.put(batch)
    await eventually(lambda: len(owner.done) == 6, timeout=10, what="three full transactions committed")
    sizes = [sum(1 for r in txn if r.topic == TOPIC) for txn in rig.cluster.log_transactions()]
    assert sizes == [100, 100, 100]
    assert rig.cluster.visible() == [v for i in range(6) for v in values(f"b{i}", 50)]


async def test_a_transaction_carries_one_offset_record_per_file_and_the_hosts_record(rig_of):
    """Each owner that is Checkpointed gets one record, for its last batch in the transaction; an
    owner without offsets, a checkpoint of None and a sysinfo sample (no owner) get none. The
    records come after the lines, and the host's transaction record names this process and the
    transaction's sequence number."""
    rig = rig_of(interval=1.0)
    a, b, plain, forgotten = Pinned("8-1-1"), Pinned("8-2-1"), Recorder(), Pinned("8-3-1", forget=True)
    batches = [Batch(TOPIC, b"a", values("a", 5), 100, a), Batch(TOPIC, b"b", values("b", 5), 70, b),
               Batch(TOPIC, b"a", values("a2", 5), 200, a), Batch(TOPIC, b"p", values("p", 5), 9, plain),
               Batch(TOPIC, b"f", values("f", 5), 9, forgotten), Batch("sysinfo", b"ip", [b'{"name": "cpu"}'])]
    for batch in batches:  # queued before the start: one transaction takes them all
        await rig.queue.put(batch)
    await rig.sink.start()
    await eventually(lambda: len(a.done) == 2 and b.done and plain.done and forgotten.done,
                     what="the transaction committed")
    [txn] = [t for t in rig.cluster.committed if any(r.topic == TOPIC for r in t)]
    offsets = [r for r in txn if r.topic == OFFSETS]
    assert [r.topic for r in txn] == [TOPIC] * 25 + ["sysinfo"] + [OFFSETS] * 3, "lines first, then the records"
    assert {r.key: Checkpoint.decode("-", r.value).offset for r in offsets[:-1]} == {
        f"{HOST}/8-1-1".encode(): 200, f"{HOST}/8-2-1".encode(): 70}, "each file's last batch: a's second"
    assert offsets[-1].key == f"{HOST}/{TXN_KEY}".encode()
    record = TxnRecord.decode(offsets[-1].value)
    assert record is not None and record.instance == rig.sink.instance and record.seq == 1


async def test_owners_hear_of_their_batches_only_once_the_transaction_commits(rig_of):
    rig = rig_of()
    await rig.sink.start()
    rig.cluster.gate.clear()
    rig.cluster.commit_waiting.clear()
    owner = Pinned("8-1-1")
    await rig.queue.put(Batch(TOPIC, b"k", values("x", 20), 20, owner))
    await eventually(lambda: rig.cluster.commit_waiting.is_set(), what="the commit under way")
    assert rig.sink.pending == 20 and owner.done == [], "written, every report in, not committed: not acknowledged"
    rig.cluster.gate.set()
    await eventually(lambda: len(owner.done) == 1, what="the batch acknowledged")
    assert owner.done[0].error is None and rig.sink.pending == 0


# ---------------------------------------------------------------- aborts: rewind, send again


async def test_a_refused_message_aborts_and_its_file_sends_again_from_the_committed_offset(rig_of):
    rig = rig_of()
    await rig.sink.start()
    owner = FileOwner(rig.queue, "8-1-1", 1000)
    refused = owner.line(437)
    once = [True]

    def refuse(record: Record) -> bool:
        hit = record.value == refused and once[0]
        once[0] = once[0] and not hit
        return hit

    rig.cluster.refuse = refuse
    aborted = counted("aborted")
    rig.ship(owner)
    await shipped_exactly_once(rig, owner)
    assert owner.rewinds == 1 and counted("aborted") == aborted + 1
    assert rig.cluster.written_values().count(refused) == 2, "read_uncommitted: the aborted copy, then the resent one"
    assert rig.cluster.aborted and refused in [r.value for r in rig.cluster.aborted[0]]


async def test_a_full_queue_at_the_transactions_own_records_waits_and_aborts_nothing(rig_of):
    """librdkafka's queue full when the offset records and the transaction record are produced (the
    lines filled it): the sink waits for room, as for lines. Taken for an error it aborted the
    transaction, and every file in it read its lines again."""
    rig = rig_of()
    await rig.sink.start()
    owner = FileOwner(rig.queue, "8-1-1", 1000)
    full = {OFFSETS: 3}  # the first three tries of each kind of record meet a full queue

    def is_full(record: Record) -> bool:
        if record.topic == OFFSETS and full[OFFSETS] > 0:
            full[OFFSETS] -= 1
            return True
        return False

    rig.cluster.full = is_full
    aborted, waited = counted("aborted"), metrics.PRODUCER_FULL._value.get()
    rig.ship(owner)
    await shipped_exactly_once(rig, owner)
    assert owner.rewinds == 0 and counted("aborted") == aborted and not rig.cluster.aborted
    assert metrics.PRODUCER_FULL._value.get() >= waited + 3


async def test_a_refused_commit_aborts_it_and_the_transaction_open_after_it(rig_of):
    """N+1 fills while N commits; N is refused: N+1 must not commit after the gap, so it is aborted
    too, and both transactions' lines are sent again, once."""
    rig = rig_of(cap=400)  # the file's 2,000 lines make several transactions
    await rig.sink.start()
    rig.cluster.gate.clear()
    owner = rig.ship(FileOwner(rig.queue, "8-1-1", 2000, chunk=20))
    second = rig.cluster.producers[1]
    await eventually(lambda: rig.cluster.commit_waiting.is_set() and bool(second.open), timeout=5,
                     what="a commit held, and lines in the transaction after it")
    rig.cluster.plan.append("refuse")
    rig.cluster.gate.set()
    await shipped_exactly_once(rig, owner)
    assert len(rig.cluster.aborted) == 2 and all(rig.cluster.aborted), "both transactions aborted, with lines"
    resent = {r.value for txn in rig.cluster.aborted for r in txn if r.topic == TOPIC}
    assert all(rig.cluster.written_values().count(v) == 2 for v in resent)


async def test_batches_read_before_the_rewind_are_failed_and_never_produced(rig_of):
    rig = rig_of(cap=10)  # each batch fills a transaction
    await rig.sink.start()
    owner = Recorder()
    rig.cluster.reports.clear()  # the first transaction waits for its reports
    first = Batch(TOPIC, b"k", values("first", 10), 10, owner, generation=0)
    await rig.queue.put(first)
    await eventually(lambda: len(rig.cluster.written_values()) == 10, what="the first batch produced")
    stale = Batch(TOPIC, b"k", values("stale", 10), 20, owner, generation=0)  # read before the rewind
    fresh = Batch(TOPIC, b"k", values("fresh", 10), 10, owner, generation=1)  # read again after it
    await rig.queue.put(stale)
    await rig.queue.put(fresh)
    rig.cluster.refuse = lambda record: record.value.startswith(b"first")
    rig.cluster.reports.set()
    await eventually(lambda: len(owner.done) == 3, what="all three batches reported")
    assert [b.error is not None for b in owner.done] == [True, True, False]
    assert owner.done[1] is stale and "aborted transaction" in str(stale.error)
    assert not any(v.startswith(b"stale") for v in rig.cluster.written_values()), "a stale batch is never produced"
    assert rig.cluster.visible() == values("fresh", 10)


async def test_a_sysinfo_sample_in_an_aborted_transaction_is_sent_again_once(rig_of):
    rig = rig_of(interval=1.0)  # the sample and the refused lines in one transaction
    sample = b'{"name": "cpu", "fields": {"usage_percent": 1.0}}'
    owner = Recorder()
    await rig.queue.put(Batch("sysinfo", b"127.0.0.1", [sample]))
    await rig.queue.put(Batch(TOPIC, b"k", values("bad", 3), 3, owner))
    rig.cluster.refuse = lambda record: record.value.startswith(b"bad")
    await rig.sink.start()
    await eventually(lambda: rig.cluster.visible("sysinfo") == [sample], what="the sample committed")
    assert rig.cluster.written_values("sysinfo") == [sample, sample], "aborted once, sent again once"
    assert owner.done and owner.done[0].error is not None


# ---------------------------------------------------------------- fatal errors: takeover or recovery


async def test_a_fence_soon_after_a_transaction_began_is_a_takeover_exit_3(rig_of, caplog):
    rig = rig_of()
    await rig.sink.start()
    rig.cluster.plan.append("fenced")
    owner = Pinned("8-1-1")
    with caplog.at_level(logging.CRITICAL, "logagent.producer"):
        await rig.queue.put(Batch(TOPIC, b"k", values("x", 10), 10, owner))
        await eventually(lambda: rig.fatal, what="on_fatal")
    [exc] = rig.fatal
    assert isinstance(exc, Fenced) and exc.exit_status == 3
    assert "another agent took over transactional.id logagent-host-1" in caplog.text
    assert owner.done == [], "nothing of the fenced transaction is acknowledged"
    assert await rig.sink.drain(1.0) is False
    assert all(p.inits == 1 for p in rig.cluster.producers), "no new producers: they would fence the other agent"


async def test_a_fatal_error_after_another_process_wrote_the_hosts_record_is_a_takeover(rig_of, caplog):
    rig = rig_of()
    await rig.sink.start()
    other = TxnRecord("another-process", 7, time.time())
    rig.cluster.committed.append([Record(OFFSETS, f"{HOST}/{TXN_KEY}".encode(), other.value(), 0)])
    rig.cluster.plan.append("fatal")
    with caplog.at_level(logging.CRITICAL, "logagent.producer"):
        await rig.queue.put(Batch(TOPIC, b"k", values("x", 10), 10, Pinned("8-1-1")))
        await eventually(lambda: rig.fatal, what="on_fatal")
    assert isinstance(rig.fatal[0], Fenced) and rig.fatal[0].exit_status == 3
    assert "written by process another-process" in caplog.text
    assert len(rig.cluster.producers) == 2, "no new producers: they would fence the other agent"


async def test_a_transaction_the_broker_timed_out_rewinds_on_new_producers(rig_of, caplog):
    """librdkafka says "fenced" for a transaction the coordinator aborted for its
    transaction.timeout.ms too: coming after that timeout, it is no takeover. New producers are
    made, the host's record says the transaction did not commit, and its lines go again."""
    rig = rig_of(producer={"transaction.timeout.ms": "300"})
    await rig.sink.start()
    rig.cluster.plan.append("timeout_fenced")
    with caplog.at_level(logging.WARNING, "logagent.producer"):
        owner = rig.ship(FileOwner(rig.queue, "8-1-1", 500))
        await shipped_exactly_once(rig, owner)
    assert rig.fatal == []
    assert len(rig.cluster.producers) == 4 and all(p.inits == 1 for p in rig.cluster.producers), "new producers"
    assert owner.rewinds == 1
    assert "new producers; transactions up to 0 committed, 1" in caplog.text


async def test_a_commit_that_reached_the_broker_before_a_fatal_error_is_not_sent_again(rig_of, caplog):
    """The host's transaction record, committed with the lines, tells that the transaction whose
    commit raised did commit: its batches are acknowledged, not sent again (read_uncommitted sees
    its lines once too), and the next batches go on the new producers."""
    rig = rig_of()
    await rig.sink.start()
    rig.cluster.plan.append("fatal_after_commit")
    owner = Pinned("8-1-1")
    with caplog.at_level(logging.WARNING, "logagent.producer"):
        await rig.queue.put(Batch(TOPIC, b"k", values("x", 10), 10, owner))
        await eventually(lambda: owner.done, what="the batch reported")
    assert owner.done[0].error is None, "committed: acknowledged"
    assert rig.fatal == [] and len(rig.cluster.producers) == 4
    assert "new producers; transactions up to 1 committed" in caplog.text
    await rig.queue.put(Batch(TOPIC, b"k", values("y", 10), 20, owner))
    await eventually(lambda: len(owner.done) == 2, what="the next batch committed")
    assert rig.cluster.written_values() == rig.cluster.visible() == values("x", 10) + values("y", 10)
