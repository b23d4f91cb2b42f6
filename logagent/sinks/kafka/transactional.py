"""The exactly_once sink: the lines of a short interval and the offsets they reach, in one Kafka
transaction (KIP-618's design for Kafka Connect sources, applied to files).

A transaction takes batches from the queue for `[kafka] transaction_interval` seconds after its
first one (or `transaction_max_messages` messages), then one record per file whose offset moved
(pipeline/checkpoint.py, to the compacted offsets topic: sinks/kafka/offsets.py) and the host's
transaction record (who wrote it, its sequence number). Only when it commits are its batches
acknowledged to their owners: a file's offset, its registry entry and its spool move over
committed lines only, exactly as they move over acknowledged ones in at_least_once.

Two transactional producers (`<transactional id>-0` and `-1`) alternate: once every message of
transaction N is written (all delivery reports in: so N+1's messages land after N's in every
partition, and a file's lines stay in order), N commits in a worker thread while N+1 fills on the
other producer. N+1 commits only after N committed; if N aborts, N+1 is aborted too, so no line is
ever committed after a gap.

Faults:
- An abortable error (a message refused, the commit refused) aborts the transaction (and the one
  after it). Its batches are reported failed: each file's AckTracker rewinds it to its last
  committed offset (the one place offsets rewind) and its lines are read and sent again, in a new
  transaction. Batches of the same files still in the queue, read before that rewind, are failed
  as they come (their owner was "poisoned" at that generation), never produced.
- Kafka down: a commit waits (retried every 10 s, said every minute); produce waits; the queue
  fills and the tailers wait: the files are the buffer.
- A fatal error (librdkafka reports a transaction the coordinator aborted for its
  transaction.timeout.ms as a fenced producer too): if another agent took the transactional id
  over (the fence came before the open transaction could have timed out, or the host's
  transaction record names another process), this one says so at CRITICAL and stops with exit
  status 3 (errors.Fenced). Otherwise the producers are made anew (init_transactions), the host's
  transaction record says which open transactions committed, and the others are failed and rewound.
- Sysinfo samples travel in the same transactions; one in an aborted transaction is sent again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException, Producer

from logagent.config.settings import KafkaSettings, redact
from logagent.errors import Fenced, KafkaError
from logagent.pipeline.batch import Batch, BatchOwner
from logagent.pipeline.buffer import BatchQueue
from logagent.pipeline.checkpoint import TXN_KEY, Checkpoint, Checkpointed
from logagent.runtime import metrics
from logagent.runtime.supervise import spawn
from logagent.runtime.wait import wait_event
from logagent.sinks.kafka.config import producer_config
from logagent.sinks.kafka.limits import MessageLimits
from logagent.sinks.kafka.log import LibrdkafkaLog
from logagent.sinks.kafka.offsets import Committed, OffsetsTopic, TxnRecord, new_instance
from logagent.sinks.kafka.sink import KafkaSink

log = logging.getLogger("logagent.producer")

PRODUCERS = 2  # alternating: one commits while the other fills
CALL_TIMEOUT = 10.0  # seconds a blocking transactional call may take before it is retried
FENCED_CODES = {RdKafkaError._FENCED, getattr(RdKafkaError, "PRODUCER_FENCED", -1)}


class _Txn:
    """One transaction: its batches, and its messages' delivery reports (counted in the poll thread)."""

    __slots__ = ("seq", "slot", "begun", "batches", "last", "produced", "reported", "error", "sealed",
                 "delivered", "messages", "settled")

    def __init__(self, seq: int, slot: int) -> None:
        self.seq = seq
        self.slot = slot  # which producer
        self.begun = 0.0  # time.monotonic() of its first message (the coordinator's clock starts about then)
        self.batches: list[tuple[Batch, list[bytes] | None]] = []  # (batch, values kept to resend if ownerless)
        self.last: dict[BatchOwner, Batch] = {}  # each owner's last batch in it: its checkpoint
        self.produced = 0  # messages handed to librdkafka (the loop writes it)
        self.reported = 0  # delivery reports (the poll thread writes it)
        self.error: Any = None  # the first delivery error
        self.sealed = False
        self.delivered = asyncio.Event()
        self.messages = 0  # log messages, for the size cap and the metrics
        self.settled = False  # its batches were reported (committed, or failed)


class _Outcome:
    COMMITTED = "committed"
    ABORTED = "aborted"
    FATAL = "fatal"


class TransactionalSink(KafkaSink):
    """KafkaSink's interface (start, stop, drain, connected ...), with transactions (module docstring)."""

    def __init__(self, settings: KafkaSettings, queue: BatchQueue, host_id: str, transactional_id: str,
                 on_fatal: Callable[[BaseException], None] | None = None,
                 producer_factory: Callable[[dict[str, Any]], Any] = Producer,
                 limits_factory: Callable[[dict[str, Any]], MessageLimits] = MessageLimits) -> None:
        super().__init__(settings, queue, on_fatal, producer_factory, limits_factory)
        self.host_id = host_id
        self.transactional_id = transactional_id
        self.instance = new_instance()
        self._producers: list[Any] = []
        self._conf: dict[str, Any] = {}
        self._offsets: OffsetsTopic | None = None
        self.committed: Committed | None = None  # what start() read back: the agent hands it to the registry
        self._seq = 0
        self._slot = 0
        self._committing: tuple[_Txn, asyncio.Future[tuple[str, Any]]] | None = None
        self._poisoned: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._to_resend: list[Batch] = []  # ownerless batches (sysinfo) of aborted transactions
        self._dead = False
        self._poll_threads: list[threading.Thread] = []  # one a producer: _poll_slot
        self._txn_timeout = 60.0
        self._last_wait_log = 0.0

    # ---- start: the offsets topic, the producers, the host's committed offsets

    async def start(self) -> None:
        """Make sure of the offsets topic, init the producers (which aborts what a previous process
        left open), claim the transactions and read back the committed offsets. Waits for Kafka
        (retrying, said every 10 s): before that, nothing may be read from the files."""
        if self._producers:
            return
        self._loop = asyncio.get_running_loop()
        conf = producer_config(self._settings)
        conf["error_cb"] = self._on_error
        conf["logger"] = LibrdkafkaLog()
        self._conf = conf
        self._txn_timeout = float(conf.get("transaction.timeout.ms", 60000)) / 1000.0
        self._offsets = OffsetsTopic(conf, self._settings.offsets_topic, self.host_id)
        shown = " ".join(f"{k}={redact(k, str(v))}" for k, v in sorted(conf.items()) if k not in ("error_cb", "logger"))
        log.info("kafka transactional producers starting (exactly_once): transactional.id=%s-{0,1} %s",
                 self.transactional_id, shown)
        self._running.set()
        self._poll_threads = [threading.Thread(target=self._poll_slot, args=(slot,), name=f"kafka-poll-{slot}",
                                               daemon=True) for slot in range(PRODUCERS)]
        for thread in self._poll_threads:
            thread.start()
        try:
            await self._until_connected(self._connect)
        except BaseException:
            self._running.clear()
            raise
        self._limits = self._limits_factory(conf)
        self._producer = self._producers[0]  # what check_connection and topic_problem ask
        self._drain_task = spawn("kafka drain", "kafka-drain", self._drain_or_fenced, fatal=self._fatal)

    async def _until_connected(self, step: Callable[[], None]) -> None:
        """Run a blocking step in a thread until Kafka answers it; a refusal for good raises."""
        said = 0.0
        while True:
            try:
                await asyncio.to_thread(step)
                return
            except KafkaError as exc:
                if not exc.retriable or not self._running.is_set():
                    raise
                if time.monotonic() - said >= 10.0:
                    said = time.monotonic()
                    log.warning("exactly_once: waiting for Kafka before reading any file: %s", exc)
                await asyncio.sleep(1.0)

    def _connect(self) -> None:
        """Blocking: the topic, fresh producers with their transactions initialised, the claim, the read."""
        assert self._offsets is not None
        self._offsets.ensure()
        self._new_producers()
        committed = self._offsets.read()
        self._claim()
        self.committed = committed
        self._connected = True
        metrics.KAFKA_UP.set(1)
        log.info("exactly_once: offsets topic %s partition %d: %d file offsets of host %s read back "
                 "(read_committed); transactions claimed by process %s", self._offsets.topic,
                 self._offsets.partition, len(committed.checkpoints), self.host_id, self.instance)

    def _new_producers(self) -> None:
        """Blocking: replace the producers; init_transactions fences any earlier producer with the
        same transactional.id and aborts (or completes) what it left open."""
        old, self._producers = self._producers, []
        for producer in old:
            try:
                producer.purge()
                producer.flush(0)
            except (KafkaException, RuntimeError):
                pass
        producers = []
        for i in range(PRODUCERS):
            conf = dict(self._conf, **{"transactional.id": f"{self.transactional_id}-{i}"})
            try:
                producers.append(self._producer_factory(conf))
            except KafkaException as exc:
                raise KafkaError(f"invalid [kafka.producer] configuration for transactions: "
                                 f"{exc.args[0].str()}", retriable=False) from exc
        # Side by side: each takes 0.05-1 s (coordinator lookup, the producer id); one after the
        # other they were most of a start's time (measured: 0.6-1.1 s of ~1.7 s).
        with ThreadPoolExecutor(PRODUCERS, thread_name_prefix="kafka-init") as pool:
            for done in [pool.submit(self._call, p.init_transactions, "init_transactions") for p in producers]:
                done.result()
        self._producers = producers

    def _call(self, fn: Callable[[float], None], what: str) -> None:
        """A blocking transactional call; KafkaError(retriable) when it may work later."""
        try:
            fn(CALL_TIMEOUT)
        except KafkaException as exc:
            err = exc.args[0]
            raise KafkaError(f"{what}: {err.str()}", retriable=not err.fatal()) from exc

    def _claim(self) -> None:
        """Blocking: a first transaction with only the host's transaction record, naming this process."""
        producer = self._producers[0]
        producer.begin_transaction()
        producer.produce(*self._txn_record(), None)
        self._call(producer.commit_transaction, "commit_transaction")

    def _txn_record(self) -> tuple[str, bytes, bytes, int]:
        """(topic, value, key, partition) of the host's transaction record, naming this process."""
        assert self._offsets is not None
        record = TxnRecord(self.instance, self._seq, time.time())
        return self._offsets.topic, record.value(), f"{self.host_id}/{TXN_KEY}".encode(), self._offsets.partition

    # ---- the transactions

    async def _drain(self) -> None:
        while True:
            txn = await self._fill()
            await self._seal(txn)
            if not await self._settle_committing(txn) or txn.settled:
                continue  # the one before failed, and took this one down with it
            if txn.error is not None:
                await self._fail_open([txn], txn.error)
                continue
            future = asyncio.ensure_future(asyncio.to_thread(self._commit, self._producers[txn.slot]))
            self._committing = (txn, future)

    async def _next_batch(self, txn: _Txn, timeout: float | None) -> Batch | None:
        """The next batch from the queue, waiting up to `timeout` (None: for ever); the outcome of a
        commit that ends meanwhile is taken at once (its files' offsets move without waiting)."""
        batch = self._queue.get_nowait()
        if batch is not None:
            return batch
        get = asyncio.ensure_future(self._queue.get())
        try:
            while True:
                waiters: set[asyncio.Future[Any]] = {get}
                if self._committing is not None:
                    waiters.add(self._committing[1])
                done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if get in done:
                    return get.result()
                if not done:
                    return None
                if not await self._settle_committing(txn):
                    return None  # `txn` failed with the one before it
        finally:
            if not get.done():
                get.cancel()  # an item it had not taken yet stays in the queue
                try:
                    await get
                except asyncio.CancelledError:
                    pass

    async def _fill(self) -> _Txn:
        """A new transaction with the batches of one interval (at least one)."""
        self._seq += 1
        txn = _Txn(self._seq, self._slot)
        self._slot = (self._slot + 1) % PRODUCERS
        producer = self._producers[txn.slot]
        try:
            producer.begin_transaction()
        except KafkaException as exc:  # the producer failed while idle (fenced, fatal)
            await self._recover([], exc.args[0])
            producer = self._producers[txn.slot]
            producer.begin_transaction()
        resend, self._to_resend = self._to_resend, []
        for again in resend:
            await self._add(txn, producer, again)
        deadline: float | None = time.monotonic() + self._settings.transaction_interval if resend else None
        cap = self._settings.transaction_max_messages
        while txn.messages < cap and txn.error is None and not txn.settled:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            got = await self._next_batch(txn, left)
            if got is None:
                if txn.settled or deadline is not None:
                    break
                continue
            if self._stale(got):
                continue
            if deadline is None:
                deadline = time.monotonic() + self._settings.transaction_interval
            await self._add(txn, producer, got)
        return txn

    def _stale(self, batch: Batch) -> bool:
        """A batch of a file whose earlier batch was in an aborted transaction, read before the file
        rewound: failed at once (the file reads it again), never produced after the gap."""
        owner = batch.owner
        if not self._poisoned or owner is None:
            return False
        generation = self._poisoned.get(owner)
        if generation is None:
            return False
        if batch.generation > generation:
            del self._poisoned[owner]  # the file has rewound: its batches are good again
            return False
        batch.error = "its file's earlier lines were in an aborted transaction"
        batch.remaining = 0
        owner.batch_done(batch)
        return True

    async def _add(self, txn: _Txn, producer: Any, batch: Batch) -> None:
        """Produce a batch's messages into the transaction (waiting while librdkafka's queue is full)."""
        if not txn.begun:
            txn.begun = time.monotonic()
        values = batch.values
        n = len(values)
        kept = values if batch.owner is None else None
        txn.batches.append((batch, kept))
        txn.messages += n
        self._in_producer += n
        self._idle.clear()
        if batch.owner is not None:
            txn.last[batch.owner] = batch
        if n and max(map(len, values)) > (fit := await self._fit_for(batch.topic, batch.key)):
            values = [v if len(v) <= fit else self._cut(batch.topic, v, fit, batch.owner) or v for v in values]
        on_delivery = self._delivery_callback_for(txn)
        produce = producer.produce
        topic, key = batch.topic, batch.key
        i = 0
        while i < n:
            try:
                for i in range(i, n):  # noqa: B020 - resumes where BufferError stopped it
                    produce(topic, values[i], key, -1, on_delivery)
                    txn.produced += 1
                i = n
            except BufferError:
                metrics.PRODUCER_FULL.inc()
                await asyncio.sleep(0.005)
            except KafkaException as exc:
                txn.error = exc.args[0]
                return
        if kept is None:
            batch.values = []  # librdkafka holds copies

    async def _produce_records(self, txn: _Txn, producer: Any, records: list[tuple[str, bytes, bytes, int]],
                               on_delivery: Callable[[Any, Any], None]) -> None:
        """The transaction's own records (its files' offsets, the transaction record), waiting while
        librdkafka's queue is full: taken for an error, a full queue aborted the transaction, and
        every file in it read its lines again (at a restart with many files owed: 16,213 messages of
        ~48 files, whose generations then went out of order)."""
        i = 0
        while i < len(records):
            try:
                producer.produce(*records[i], on_delivery)
            except BufferError:
                metrics.PRODUCER_FULL.inc()
                await asyncio.sleep(0.005)
                continue
            except KafkaException as exc:
                txn.error = exc.args[0]
                return
            txn.produced += 1
            i += 1

    def _delivery_callback_for(self, txn: _Txn) -> Callable[[Any, Any], None]:
        loop = self._loop
        assert loop is not None

        def on_delivery(err: Any, msg: Any) -> None:  # the poll thread
            if err is not None and txn.error is None:
                txn.error = err
            txn.reported += 1
            if txn.sealed and txn.reported >= txn.produced:
                loop.call_soon_threadsafe(txn.delivered.set)
        return on_delivery

    async def _seal(self, txn: _Txn) -> None:
        """The transaction's offset records and its transaction record; then wait until every
        message of it is written (so the next transaction's land after them)."""
        if txn.settled:
            return
        producer = self._producers[txn.slot]
        on_delivery = self._delivery_callback_for(txn)
        if txn.error is None:
            assert self._offsets is not None
            topic, partition = self._offsets.topic, self._offsets.partition
            records = []
            for owner, batch in txn.last.items():
                if isinstance(owner, Checkpointed):
                    checkpoint: Checkpoint | None = owner.checkpoint(batch)
                    if checkpoint is not None:
                        records.append((topic, checkpoint.value(), checkpoint.key(self.host_id), partition))
            records.append(self._txn_record())
            await self._produce_records(txn, producer, records, on_delivery)
        txn.sealed = True
        if txn.reported >= txn.produced or txn.error is not None:
            return
        while not txn.delivered.is_set() and txn.error is None and not txn.settled:
            if not await wait_event(txn.delivered, 1.0):
                self._say_waiting("the transaction's messages wait for Kafka")

    def _say_waiting(self, what: str) -> None:
        now = time.monotonic()
        if now - self._last_wait_log >= 60.0:
            self._last_wait_log = now
            log.warning("exactly_once: %s (nothing is dropped; the files are the buffer)", what)

    def _commit(self, producer: Any) -> tuple[str, Any]:
        """Blocking (a worker thread): commit, retried while Kafka does not answer; an abortable
        refusal aborts. Returns (outcome, error)."""
        def abort_if_abortable(err: Any) -> tuple[str, Any] | None:
            return self._abort(producer, err) if err.txn_requires_abort() else None

        return self._until_answered("a commit", lambda: producer.commit_transaction(CALL_TIMEOUT),
                                    (_Outcome.COMMITTED, None), abort_if_abortable)

    def _abort(self, producer: Any, why: Any) -> tuple[str, Any]:
        """Blocking: abort, retried while Kafka does not answer."""
        return self._until_answered("an abort", lambda: producer.abort_transaction(CALL_TIMEOUT),
                                    (_Outcome.ABORTED, why))

    def _until_answered(self, what: str, call: Callable[[], object], done: tuple[str, Any],
                        on_refusal: Callable[[Any], tuple[str, Any] | None] | None = None) -> tuple[str, Any]:
        """Blocking: `call` (a commit or an abort) until Kafka answers, then `done`. A fatal error ends
        it FATAL; then `on_refusal` may end it with its own outcome; while stopping, an error ends it
        FATAL too (unknown: the next start reads what committed); any other error waits and retries."""
        while True:
            try:
                call()
                return done
            except KafkaException as exc:
                err = exc.args[0]
                if err.fatal():
                    return _Outcome.FATAL, err
                outcome = on_refusal(err) if on_refusal is not None else None
                if outcome is not None:
                    return outcome
                if not self._running.is_set():
                    return _Outcome.FATAL, err
                self._say_waiting(f"{what} waits for Kafka: {err.str()}")

    async def _settle_committing(self, open_txn: _Txn) -> bool:
        """Wait for the commit under way, and acknowledge its batches: True. When it did not commit,
        its batches fail, and so do those of `open_txn` (aborted: it must not commit after a gap):
        False."""
        if self._committing is None:
            return True
        txn, future = self._committing
        outcome, err = await future
        self._committing = None
        if outcome == _Outcome.COMMITTED:
            self._finish(txn, None)
            return True
        if outcome == _Outcome.ABORTED:
            self._finish(txn, err)
            await self._fail_open([open_txn], err)
        else:
            await self._recover([txn, open_txn], err)
        return False

    async def _fail_open(self, open_txns: list[_Txn], err: Any) -> None:
        """Abort `open_txns` (not committing) after a failure; their batches fail and rewind."""
        for txn in open_txns:
            if txn.settled:
                continue
            if _fatal(err):
                await self._recover(open_txns, err)
                return
            outcome, abort_err = await asyncio.to_thread(self._abort, self._producers[txn.slot], err)
            if outcome == _Outcome.FATAL:
                await self._recover(open_txns, abort_err)
                return
            self._finish(txn, err)

    def _finish(self, txn: _Txn, err: Any) -> None:
        """Report a settled transaction's batches to their owners, in order: acknowledged when it
        committed; failed (each file rewinds to its committed offset) when it did not."""
        txn.settled = True
        if err is None:
            metrics.TRANSACTIONS.labels("committed").inc()
        else:
            metrics.TRANSACTIONS.labels("aborted").inc()
            log.warning("exactly_once: transaction %d aborted (%s): its %d messages are sent again in a new "
                        "transaction", txn.seq, _text(err), txn.messages)
            if self._limits is not None:
                for batch, _ in txn.batches:
                    self._limits.forget(batch.topic)
        for batch, kept in txn.batches:
            n = batch.count
            self._in_producer -= n
            batch.remaining = 0
            if err is None:
                self._count_delivered(batch.topic, n)
            else:
                batch.error = err
                metrics.FAILED.labels(batch.topic, _reason(err)).inc(n)
                if batch.owner is None:
                    if kept is not None:
                        batch.values = kept
                        batch.error = None
                        self._to_resend.append(batch)
                    continue
                generation = self._poisoned.get(batch.owner, -1)
                self._poisoned[batch.owner] = max(generation, batch.generation)
            if batch.owner is not None:
                batch.owner.batch_done(batch)
        if self._in_producer <= 0:
            self._in_producer = 0
            self._idle.set()
        if err is None:
            self._connected = True
            metrics.KAFKA_UP.set(1)

    async def _recover(self, txns: list[_Txn], err: Any) -> None:
        """A fatal error with `txns` unsettled: stop if another agent took over (Fenced); else new
        producers, and the host's transaction record tells which of `txns` committed."""
        assert self._offsets is not None
        begun = [t.begun for t in txns if t.begun]
        age = time.monotonic() - min(begun) if begun else 0.0
        fenced = _code(err) in FENCED_CODES
        if fenced and age < 0.9 * self._txn_timeout:
            raise self._fenced(f"fenced {age:.1f}s into a transaction, before its transaction.timeout.ms "
                               f"({self._txn_timeout:g}s) could have aborted it")
        log.error("exactly_once: the producer failed (%s); checking who holds transactional.id %s", _text(err),
                  self.transactional_id)
        committed = await self._read_committed()
        if committed.txn is not None and committed.txn.instance != self.instance:
            raise self._fenced(f"the host's last transaction was written by process {committed.txn.instance}")
        await self._until_connected(self._new_producers)
        self._producer = self._producers[0]
        committed = await self._read_committed()
        if committed.txn is not None and committed.txn.instance != self.instance:
            raise self._fenced(f"the host's last transaction was written by process {committed.txn.instance}")
        last = committed.txn.seq if committed.txn is not None else -1
        log.warning("exactly_once: new producers; transactions up to %d committed, %s aborted", last,
                    ", ".join(str(t.seq) for t in txns if t.seq > last) or "none")
        for txn in sorted(txns, key=lambda t: t.seq):
            if not txn.settled:
                self._finish(txn, None if txn.seq <= last else err)

    async def _read_committed(self) -> Committed:
        assert self._offsets is not None
        result: list[Committed] = []

        def read() -> None:
            assert self._offsets is not None
            result.append(self._offsets.read())
        await self._until_connected(read)
        return result[0]

    def _fenced(self, why: str) -> Fenced:
        self._dead = True
        log.critical("exactly_once: another agent took over transactional.id %s (two agents with [agent] id %s?): "
                     "%s. This one stops with exit status 3, which systemd does not restart (restarting would "
                     "fence the other agent, which would fence this one again)", self.transactional_id,
                     self.host_id, why)
        return Fenced(f"transactional.id {self.transactional_id} was taken over by another agent")

    # ---- KafkaSink's parts that differ

    def _poll_slot(self, slot: int) -> None:
        """Serve the delivery reports of the producer in `slot` (a thread each: one thread polling
        both in turn, 50 ms each, held a sealing transaction's last reports up to 50 ms behind
        the other producer's poll, and the transactions' pipeline waited on it: measured, sealing
        took 65 ms a transaction of 20,000 lines with one thread, 35 ms with a thread each, and
        lines/s rose accordingly (bench/RESULTS.md, Optimisation log))."""
        while self._running.is_set():
            producers = self._producers  # replaced whole by _new_producers
            if len(producers) <= slot:
                time.sleep(0.05)
                continue
            try:
                producers[slot].poll(0.1)
            except KafkaException:
                time.sleep(0.05)  # poll() raises a fatal error once failed: the transactions' path has it
            except Exception:  # a callback raised: log it, keep polling
                log.exception("error in a kafka delivery callback")

    def _on_error(self, err: Any) -> None:  # poll thread
        if err.fatal():
            # Not the agent's end: the transactions' path decides (a timed-out transaction is
            # reported as fenced too; _recover tells the two apart).
            log.error("kafka producer fatal error: %s (exactly_once recovers or stops)", err.str())
            return
        super()._on_error(err)

    async def _drain_or_fenced(self) -> None:
        """The drain; a takeover ends it without a crash report (_fenced said it at CRITICAL) and
        stops the agent, with exit status 3."""
        try:
            await self._drain()
        except Fenced as exc:
            self._fatal(exc)
        finally:
            self._dead = True  # ended, crashed or cancelled: drain() no longer waits on it

    def _fatal(self, exc: BaseException) -> None:
        self._dead = True
        super()._fatal(exc)

    async def drain(self, timeout: float) -> bool:
        if self._dead:
            return False
        return await super().drain(timeout)

    async def stop(self, timeout: float = 30.0) -> bool:
        """Drain (every queued batch committed) under a deadline, then stop."""
        if not self._producers:
            self._running.clear()
            return True
        clean = await self._drain_and_end_draining(timeout)
        if self._committing is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._committing[1]), 5.0)
            except (TimeoutError, Exception):  # noqa: BLE001 - the next start reads what committed
                pass
        if not clean:
            log.warning("shutdown deadline reached with %d messages not committed; the next start resumes "
                        "from the offsets committed with the lines", self.pending)
        self._running.clear()
        threads, self._poll_threads = self._poll_threads, []
        for thread in threads:
            await asyncio.to_thread(thread.join, 5)
        producers, self._producers = self._producers, []
        self._producer = None
        for producer in producers:
            try:
                await asyncio.to_thread(producer.flush, 0)
            except KafkaException:
                pass  # failed (fenced): nothing of it is owed, the next start reads what committed
        return clean


def _code(err: Any) -> int | None:
    return err.code() if isinstance(err, RdKafkaError) else None


def _fatal(err: Any) -> bool:
    return isinstance(err, RdKafkaError) and err.fatal()


def _text(err: Any) -> str:
    return err.str() if isinstance(err, RdKafkaError) else str(err)


def _reason(err: Any) -> str:
    return err.name() if isinstance(err, RdKafkaError) else type(err).__name__
