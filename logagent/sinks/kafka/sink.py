"""The Kafka sink: drains the queue into librdkafka.

Through the batch producer (batched.py: one call per batch, its reports folded per batch in C) where
it is built and `[kafka] batch_producer` is auto; else through confluent-kafka's Producer, one
`produce()` and one delivery callback (`_Delivery`) per message. Both count reports on the batch
(`batch.remaining`) in the poll thread; everything below holds for either.

librdkafka's poll runs in a thread of its own, off the event loop; delivery
reports are counted per batch in that thread (the only one that touches
`batch.remaining`), and the batches that one `poll()` completed are handed back to
the loop together: one `call_soon_threadsafe` (one self-pipe write, one loop wake-up)
per poll, not per batch. With 10,000 files each sending a line a second every batch
is one message, and a hand-over per batch was a fifth of the agent's CPU (issue 23's
profile). The loop then completes them in the order their last report came. Messages never time out
(`message.timeout.ms = 0`): with Kafka down the local queue fills, `produce`
raises BufferError, the drain task waits, the bounded queue fills and the
tailers stop reading. Nothing is dropped.

No message larger than its topic takes is sent (limits.MessageLimits learns the
limit): a log line that would not fit is cut to fit and flagged `truncated`. If the
broker still refuses one for its size (the limit was lowered meanwhile), that one
message is sent again, cut to fit, instead of failing its batch: a failed batch
makes its file rewind and send again every line after it.
"""

from __future__ import annotations

import asyncio
import logging
import queue as stdqueue
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException

from logagent.config.settings import KafkaSettings, redact
from logagent.errors import KafkaError
from logagent.pipeline.batch import Batch, BatchOwner
from logagent.pipeline.buffer import BatchQueue
from logagent.pipeline.message import fit_message
from logagent.runtime import metrics
from logagent.runtime.names import display_name
from logagent.runtime.supervise import spawn
from logagent.runtime.wait import wait_event
from logagent.sinks.kafka.batched import MSG_SIZE_TOO_LARGE, QUEUE_FULL, BatchProducer, make_producer
from logagent.sinks.kafka.config import producer_config
from logagent.sinks.kafka.limits import SMALLEST_FIT, MessageLimits, usable
from logagent.sinks.kafka.log import LibrdkafkaLog

log = logging.getLogger("logagent.producer")


class _Delivery:
    """One batch's delivery callback: librdkafka calls it in the poll thread, once per message.

    An object, not a closure: the closure named itself (to send a message again, cut), a reference
    cycle per batch that only the cyclic garbage collector frees. At 10,000 files x 1 line/s every
    batch is one line, and those collections showed as a quarter of the GIL's samples (issue 23)."""

    __slots__ = ("sink", "batch")

    def __init__(self, sink: KafkaSink, batch: Batch) -> None:
        self.sink = sink
        self.batch = batch

    def __call__(self, err: Any, msg: Any) -> None:
        batch, sink = self.batch, self.sink
        if err is not None and msg is not None and err.code() == RdKafkaError.MSG_SIZE_TOO_LARGE:
            # Refused for its size: send this one again, cut (on the loop); the batch waits.
            assert sink._loop is not None
            sink._loop.call_soon_threadsafe(sink._resend_smaller, batch, self, msg.value(), err)
            return
        if err is not None and batch.error is None:
            batch.error = err
        batch.remaining -= 1
        if batch.remaining == 0:
            sink._completed.append(batch)  # handed to the loop after this poll (_hand_over)


class KafkaSink:
    """Owns the Producer, its poll thread and the task that drains the queue."""

    def __init__(self, settings: KafkaSettings, queue: BatchQueue,
                 on_fatal: Callable[[BaseException], None] | None = None,
                 producer_factory: Callable[[dict[str, Any]], Any] | None = None,
                 limits_factory: Callable[[dict[str, Any]], MessageLimits] = MessageLimits) -> None:
        # The batch producer where it runs, else confluent-kafka's (batched.make_producer); tests give a
        # fake Producer and fake limits.
        self._producer_factory = producer_factory or (lambda conf: make_producer(conf, settings.batch_producer))
        self._batched = False  # the producer is a BatchProducer: a call per batch, reports folded (batched.py)
        # ... whose batches in flight are known by their token, id(batch), until done (_batches_done).
        self._tokens: dict[int, Batch] = {}
        self._limits_factory = limits_factory
        self._settings = settings
        self._queue = queue
        self._on_fatal = on_fatal
        self._producer: Any = None  # a BatchProducer or confluent-kafka's Producer (or a test's fake)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._poll_thread: threading.Thread | None = None
        self._running = threading.Event()
        self._in_producer = 0  # messages handed to librdkafka without a delivery report yet
        self._idle = asyncio.Event()
        self._room = asyncio.Event()  # set when a batch completes: librdkafka's queue has room again
        self._room_wanted = False  # ... and a batch waits for that (_produce)
        self._last_error_log = 0.0
        self._connected = False
        self._delivered: dict[str, int] = {}  # messages acknowledged per topic, not in their series yet
        self._due = False  # ... metrics.defer()red: flush_metrics() runs at the next metrics.flush()
        self._limits: MessageLimits | None = None
        # Reports the loop makes up for messages librdkafka never took (produce() raised), handed
        # to the poll thread so that only it counts batch.remaining down.
        self._unsent: stdqueue.SimpleQueue[tuple[Callable[[Any, Any], None], Any]] = stdqueue.SimpleQueue()
        self._cut_logged: dict[str, float] = {}
        # Batches whose last report came during the current poll (appended by the thread that runs
        # the callbacks, the poll thread; handed to the loop as one list after each poll).
        self._completed: list[Batch] = []

    @property
    def connected(self) -> bool:
        """True once a broker answered and until librdkafka reports all brokers down."""
        return self._connected

    async def start(self) -> None:
        """Create the producer and start polling and draining; safe to call twice."""
        if self._producer is not None:
            return
        self._loop = asyncio.get_running_loop()
        conf = producer_config(self._settings)
        conf["error_cb"] = self._on_error
        conf["logger"] = LibrdkafkaLog()  # through our handlers and format, repeats filtered
        try:
            self._producer = self._producer_factory(conf)
        except KafkaException as exc:
            raise KafkaError(f"invalid [kafka.producer] configuration: {exc.args[0].str()}",
                             retriable=False) from exc
        self._batched = isinstance(self._producer, BatchProducer)
        shown = " ".join(f"{k}={redact(k, str(v))}" for k, v in sorted(conf.items()) if k not in ("error_cb", "logger"))
        log.info("kafka producer started (%s): %s",
                 "the batch producer" if self._batched else "confluent-kafka's produce()", shown)
        self._limits = self._limits_factory(conf)
        self._running.set()
        self._poll_thread = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)
        self._poll_thread.start()
        self._drain_task = spawn("kafka drain", "kafka-drain", self._drain, fatal=self._fatal)

    def _fatal(self, exc: BaseException) -> None:
        if self._on_fatal:
            self._on_fatal(exc)

    async def _drain(self) -> None:
        queue = self._queue
        while True:
            batch: Batch | None = await queue.get()
            while batch is not None:  # then every batch queued meanwhile, with no coroutine per batch
                taken = self._produce_now(batch)
                if taken < batch.count:
                    await self._produce(batch, taken)
                batch = queue.get_nowait()

    def _produce_now(self, batch: Batch, limit: int | None = None) -> int:
        """Hand the batch's messages to librdkafka as far as it takes them without waiting; returns how
        many it took (the batch is then counted in flight), or -1, with nothing done, when the topic's
        largest message (`limit`, else the one cached) is not known yet: `_produce` asks the cluster."""
        assert self._limits is not None
        topic, key = batch.topic, batch.key
        if limit is None:
            if (limit := self._limits.cached(topic)) is None:
                return -1
            self._counted(batch)
        values = batch.values
        # Every topic takes SMALLEST_FIT bytes: most batches need no look at the topic's limit.
        if values and (longest := max(map(len, values))) > SMALLEST_FIT and \
                longest > (fit := usable(limit, len(key or b""))):
            batch.values = [v if len(v) <= fit else self._cut(topic, v, fit, batch.owner) or v for v in values]
        return self._send_from(batch, 0)

    def _counted(self, batch: Batch) -> None:
        """The batch is in flight from now on (until its last report)."""
        if self._in_producer <= 0:
            self._idle.clear()  # set again when the count is back at 0 (_batches_done)
        self._in_producer += batch.count

    def _send_from(self, batch: Batch, i: int) -> int:
        """produce() the batch's messages from the i-th on; returns where librdkafka's full queue stopped
        it (BufferError), or the batch's length once all are taken (or refused: their reports made up).
        A resumed batch gets another callback object: it counts on the batch itself (batch.remaining)."""
        assert self._producer is not None
        if self._batched:
            return self._send_batched(batch, i)
        produce = self._producer.produce
        topic, key, values = batch.topic, batch.key, batch.values
        on_delivery = _Delivery(self, batch)
        n = len(values)
        try:
            for i in range(i, n):  # noqa: B020 - the index reached is the result
                produce(topic, values[i], key, -1, on_delivery)  # positional: measurably cheaper
        except BufferError:
            return i
        except KafkaException as exc:
            self._refused(batch, on_delivery, exc.args[0], n - i)
        batch.values = []  # librdkafka holds copies: keep one copy in memory, not two
        return batch.count

    def _refused(self, batch: Batch, on_delivery: _Delivery, err: Any, count: int) -> None:
        """librdkafka refused a message of the batch at produce time: it and the `count` - 1 after it
        were never produced, so no report will come for them; make them up (failed)."""
        log.error("kafka refused a message for topic %s: %s", batch.topic, err.str())
        for _ in range(count):
            self._unsent.put((on_delivery, err))

    def _send_batched(self, batch: Batch, i: int) -> int:
        """_send_from through the BatchProducer: the messages from the i-th on in one call."""
        assert self._producer is not None
        token = id(batch)
        self._tokens[token] = batch
        values = batch.values
        reached, code = self._producer.produce(batch.topic, batch.key, values, i, token)
        if code == QUEUE_FULL:
            return int(reached)
        if code:
            self._refused(batch, _Delivery(self, batch), RdKafkaError(code), len(values) - reached)
        batch.values = []
        return batch.count

    def _fold(self, reports: list[tuple[int, int, int, bytes | None]]) -> None:
        """Poll thread: the BatchProducer's reports, (token, n, error, value), counted on their batches
        as _Delivery counts confluent-kafka's one by one."""
        tokens, completed = self._tokens, self._completed
        for token, n, code, value in reports:
            batch = tokens.get(token)
            if batch is None:  # not a batch of this sink's (cannot happen): nobody to tell
                log.error("kafka: %d delivery reports for an unknown batch", n)
                continue
            if code:
                err = RdKafkaError(code)
                if code == MSG_SIZE_TOO_LARGE and value is not None and self._loop is not None:
                    self._loop.call_soon_threadsafe(self._resend_smaller, batch, _Delivery(self, batch), value, err)
                    continue
                if batch.error is None:
                    batch.error = err
            batch.remaining -= n
            if batch.remaining == 0:
                completed.append(batch)

    async def _produce(self, batch: Batch, taken: int = -1) -> None:
        """Send a batch, waiting when librdkafka's local queue is full (broker slow or down): for a
        batch to complete, or 20 ms, whichever is first; never drop. `taken`: what _produce_now took."""
        if taken < 0:
            self._counted(batch)  # before the await: a stop's drain must wait for this batch
            taken = self._produce_now(batch, await self._limit_for(batch.topic))
        while taken < batch.count:
            metrics.PRODUCER_FULL.inc()
            self._room.clear()
            self._room_wanted = True
            await wait_event(self._room, 0.02)
            self._room_wanted = False
            taken = self._send_from(batch, taken)

    async def _fit_for(self, topic: str, key: bytes | None) -> int:
        """The largest value this topic takes with this key (asks the cluster the first time)."""
        return usable(await self._limit_for(topic), len(key or b""))

    async def _limit_for(self, topic: str) -> int:
        """The topic's max.message.bytes as the cluster says (asks it when not cached)."""
        assert self._limits is not None
        limit = self._limits.cached(topic)
        if limit is None:
            limit = await asyncio.to_thread(self._limits.lookup, topic)
        return limit

    def _cut(self, topic: str, value: bytes, fit: int, owner: BatchOwner | None = None) -> bytes | None:
        """A message cut to `fit` bytes (counted and logged); None when it cannot be cut (not a
        log message: metrics are small; or nothing left to cut)."""
        cut = fit_message(value, fit)
        if cut is None:
            return None
        out, path = cut
        # `path` is the message's (wire) form; the file's own display form when its tailer is known.
        shown = getattr(owner, "name", None)  # a tailer's; BatchOwner does not promise one
        path = shown if isinstance(shown, str) else display_name(path)
        metrics.LINES_TRUNCATED.labels(metrics.path_label(path)).inc()
        now = time.monotonic()
        if now - self._cut_logged.get(topic, -1e9) >= 60.0:
            self._cut_logged[topic] = now
            log.warning("topic %s takes messages up to its max.message.bytes: a line of %s (a %d-byte "
                        "message) was cut to %d bytes and flagged truncated", topic, path, len(value), len(out))
        return out

    def _resend_smaller(self, batch: Batch, on_delivery: Callable[[Any, Any], None], value: bytes,
                        err: Any) -> None:
        task = asyncio.ensure_future(self._resend(batch, on_delivery, value, err))

        def requeue_if_failed(t: asyncio.Future[None]) -> None:
            if not t.cancelled() and t.exception() is not None:
                self._unsent.put((on_delivery, err))

        task.add_done_callback(requeue_if_failed)

    async def _resend(self, batch: Batch, on_delivery: Callable[[Any, Any], None], value: bytes,
                      err: Any) -> None:
        assert self._limits is not None and self._producer is not None
        self._limits.forget(batch.topic)
        fit = await self._fit_for(batch.topic, batch.key)
        smaller = self._cut(batch.topic, value, fit, batch.owner) if len(value) > fit else None
        if smaller is None:
            # The message fits the topic: the record batch around it did not. librdkafka's batches
            # (batch.size, 1 MB by default) must fit the topic's max.message.bytes.
            now = time.monotonic()
            if now - self._cut_logged.get(":batch:" + batch.topic, -1e9) >= 60.0:
                self._cut_logged[":batch:" + batch.topic] = now
                log.error("topic %s refuses the producer's record batches as too large (its max.message.bytes "
                          "is about %d): set [kafka.producer] batch.size below that; retrying meanwhile",
                          batch.topic, fit)
            self._unsent.put((on_delivery, err))
            return
        while True:
            try:
                if self._batched:
                    _, code = self._producer.produce(batch.topic, batch.key, [smaller], 0, id(batch))
                    if code == QUEUE_FULL:
                        raise BufferError
                    if code:
                        raise KafkaException(RdKafkaError(code))
                else:
                    self._producer.produce(batch.topic, smaller, batch.key, -1, on_delivery)
                return
            except BufferError:
                await asyncio.sleep(0.05)

    def _hand_over(self) -> None:
        """Poll thread: the batches completed since the last call go to the loop in one call."""
        if not self._completed or self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._batches_done, self._take_completed())
        except RuntimeError:  # the loop is closed (shutdown): nobody waits for these any more
            pass

    def _take_completed(self) -> list[Batch]:
        """The batches completed so far, taken out of the list the callbacks append to (the same
        list object stays: they hold it)."""
        done = self._completed[:]
        del self._completed[:len(done)]
        return done

    def _batches_done(self, batches: list[Batch]) -> None:
        """On the loop: the batches one poll completed. The sink's own counts are kept for them all
        at once, then each batch's owner is told (at 10,000 files x 1 line/s each batch is one line:
        a call and a counter update per batch were a cost per line)."""
        if self._batched:
            tokens = self._tokens
            for batch in batches:
                tokens.pop(id(batch), None)
        if self._room_wanted:
            self._room.set()
        delivered: dict[str, int] = {}
        for batch in batches:
            n = batch.count
            self._in_producer -= n
            if batch.error is None:
                delivered[batch.topic] = delivered.get(batch.topic, 0) + n
            else:
                err = batch.error
                reason = err.name() if isinstance(err, RdKafkaError) else type(err).__name__
                metrics.FAILED.labels(batch.topic, reason).inc(n)
                if self._limits is not None:
                    self._limits.forget(batch.topic)  # the operator may be changing the topic: ask again
        if self._in_producer <= 0:
            self._in_producer = 0
            self._idle.set()
        if delivered:
            if not self._connected:
                self._connected = True
                metrics.KAFKA_UP.set(1)
            for topic, n in delivered.items():
                self._count_delivered(topic, n)
        for batch in batches:
            if batch.owner is not None:
                batch.owner.batch_done(batch)

    def _count_delivered(self, topic: str, n: int) -> None:
        """`n` messages of `topic` acknowledged: into logagent_messages_delivered_total at the next flush."""
        delivered = self._delivered
        delivered[topic] = delivered.get(topic, 0) + n
        if not self._due:
            self._due = True
            metrics.defer(self)

    def flush_metrics(self) -> None:
        """The acknowledgements counted since the last call into logagent_messages_delivered_total."""
        self._due = False
        delivered, self._delivered = self._delivered, {}
        for topic, n in delivered.items():
            metrics.DELIVERED.labels(topic).inc(n)

    def _poll_loop(self) -> None:
        producer = self._producer
        assert producer is not None
        unsent = self._unsent
        batched = self._batched
        while self._running.is_set():
            try:
                if batched:
                    self._fold(producer.poll(0.1))
                else:
                    producer.poll(0.1)
                while not unsent.empty():
                    callback, err = unsent.get_nowait()
                    callback(err, None)
            except Exception:  # a callback raised: log it, keep polling
                log.exception("error in a kafka delivery callback")
            self._hand_over()

    def _on_error(self, err: Any) -> None:  # poll thread
        code = err.code()
        if code == RdKafkaError._ALL_BROKERS_DOWN:
            self._connected = False
            metrics.KAFKA_UP.set(0)
        if err.fatal():
            log.critical("kafka producer fatal error: %s", err.str())
            if self._on_fatal and self._loop is not None:
                self._loop.call_soon_threadsafe(self._on_fatal, KafkaError(err.str(), retriable=False))
            return
        now = time.monotonic()
        if now - self._last_error_log > 10 or code == RdKafkaError._ALL_BROKERS_DOWN:
            self._last_error_log = now
            log.warning("kafka: %s (retrying, nothing is dropped)", err.str())

    def check_connection(self, timeout: float = 5.0) -> bool:
        """Ask the cluster for metadata (blocking: call off the loop); updates `connected`."""
        if self._producer is None:
            return False
        try:
            md = self._producer.list_topics(timeout=timeout)
            ok = len(md.brokers) > 0
        except KafkaException:
            ok = False
        self._connected = ok
        metrics.KAFKA_UP.set(1 if ok else 0)
        return ok

    def topic_problem(self, topic: str, timeout: float = 5.0) -> str | None:
        """Why `topic` cannot take a message: the error of its metadata (asking for it creates it where
        the broker auto-creates topics), no partitions, or no answer; None when it can. Blocking."""
        if self._producer is None:
            return "the producer is not running"
        try:
            md = self._producer.list_topics(topic=topic, timeout=timeout)
        except KafkaException as exc:
            return f"no metadata for topic {topic} within {timeout:g}s: {exc}"
        info = md.topics.get(topic)
        if info is None:
            return f"topic {topic} is not in the broker's metadata"
        if info.error is not None:
            return f"topic {topic}: {info.error.str()}"
        if not info.partitions:
            return f"topic {topic} has no partition"
        return None

    async def drain(self, timeout: float) -> bool:
        """Wait until the queue is empty and every produced message has a report, up to timeout."""
        deadline = time.monotonic() + timeout
        while not self._queue.empty() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        while self._in_producer > 0 and time.monotonic() < deadline:
            if not await wait_event(self._idle, max(0.01, deadline - time.monotonic())):
                break
        return self._queue.empty() and self._in_producer == 0

    @property
    def pending(self) -> int:
        return self._in_producer + self._queue.depth

    async def _drain_and_end_draining(self, timeout: float) -> bool:
        """The first step of every stop: drain under the deadline, then end the drain task (no batch is
        taken from the queue after it). Returns drain's verdict."""
        clean = await self.drain(timeout)
        if self._drain_task is not None:
            self._drain_task.cancel()
            try:
                await self._drain_task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - _drain_finished reported how it ended
                pass
            self._drain_task = None
        return clean

    async def stop(self, timeout: float = 30.0) -> bool:
        """Drain and flush under a deadline, then stop polling; safe to call twice.

        Returns True when everything queued was acknowledged.
        """
        if self._producer is None:
            return True
        clean = await self._drain_and_end_draining(timeout)
        if not clean:
            log.warning("shutdown deadline reached with %d messages unacknowledged; "
                        "they will be re-read from the registry offsets at next start", self.pending)
        self._running.clear()
        if self._poll_thread is not None:
            await asyncio.to_thread(self._poll_thread.join, 5)
            self._poll_thread = None
        # Deliver any reports that arrived after the poll thread stopped.
        producer, self._producer = self._producer, None
        await asyncio.to_thread(producer.flush, 0 if not clean else 1)
        if self._batched:
            # The reports flush() served. The producer is destroyed with its last reference, as
            # confluent-kafka's: a metadata request of the probe may still hold it for seconds.
            self._fold(producer.poll(0))
        self._batches_done(self._take_completed())  # completed by the reports flush() served
        return clean
