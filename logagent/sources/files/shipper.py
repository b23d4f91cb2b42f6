"""What every reader of a file's bytes shares, and the part of it that ships.

- `Shipper`: bytes at file offsets become lines (LineSplitter, multiline), lines become
  messages (MessageFormat), messages go on the queue as batches (waiting when it is full:
  the file is the buffer), and Kafka's acknowledgements move the registry offset in order
  (AckTracker). A live file (tailer.FileTailer) and an earlier generation of a path
  (generations.CopyTailer) are both Shippers.
- `TailOptions`, `TailContext`: the numbers and the shared parts (queue, registry,
  descriptors, claims, spool, allow-list) every reader gets.
- `Route` (topic, module, fields: changed in place to retarget) and `SourceSpec` (encoding,
  multiline, format: changing them restarts the reader from its acknowledged offset).
- A container log's line whose first records are in one file and the rest in the next file of
  its path (the runtime reopened its log in the middle of it) is joined by the next file's
  reader: the earlier one hands it over (`successor`, `accept_carry`) and is acknowledged to its
  end only once the next one has the whole line acknowledged (`carry_delivered`).
- `Claims`: one file is read by one reader only, whatever names lead to it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from logagent.pipeline.batch import Batch, error_text
from logagent.pipeline.buffer import BatchQueue
from logagent.pipeline.checkpoint import Checkpoint
from logagent.pipeline.message import Line, MessageFormat, json_plain, utc_timestamp
from logagent.runtime import metrics
from logagent.runtime.backoff import Backoff
from logagent.runtime.names import display_name, wire_name
from logagent.sources.files.acks import Ack, AckTracker
from logagent.sources.files.budget import FdBudget
from logagent.sources.files.container import Chain, Joiner, Record
from logagent.sources.files.entry import path_allowed
from logagent.sources.files.lines import LineSplitter, resolve_encoding
from logagent.sources.files.multiline import Aggregator, MultilineSpec
from logagent.sources.files.registry import Registry, RegistryEntry
from logagent.sources.files.spool import Spool, SpoolFile

log = logging.getLogger("logagent.tailer")


@dataclass
class Route:
    """Where a file's lines go; replaced in place to retarget without re-reading."""

    topic: str
    module: str = ""
    fields: dict[str, Any] | None = None


@dataclass(frozen=True)
class SourceSpec:
    """How a file's bytes become events: its encoding and optional multiline joining.
    Changing these restarts the file's tailer (from its acknowledged offset)."""

    encoding: str = "utf-8"
    multiline: MultilineSpec | None = None
    format: str = "plain"  # or a container runtime's (sources/files/container.py)


@dataclass(frozen=True)
class TailOptions:
    ip: str
    host: str
    host_id: str = ""  # `[agent] id` (the ip when auto): the first part of every message's msgid
    max_line_bytes: int = 1024 * 1024
    read_buffer_bytes: int = 256 * 1024
    stat_interval: float = 1.0
    rotate_wait: float = 2.0
    close_inactive: float = 300.0


class Claims:
    """One tailer per file (device, inode), whatever names lead to it: a symlink alias, a
    second glob, a folder reached twice. The first tailer to open a file holds it."""

    def __init__(self) -> None:
        self._by_id: dict[tuple[int, int], Shipper] = {}

    def claim(self, key: tuple[int, int], tailer: Shipper) -> Shipper | None:
        """Take the file for `tailer`; the holder when another live tailer has it."""
        holder = self._by_id.get(key)
        if holder is not None and holder is not tailer and not holder.finished:
            return holder
        self._by_id[key] = tailer
        return None

    def holder(self, key: tuple[int, int]) -> Shipper | None:
        holder = self._by_id.get(key)
        return None if holder is None or holder.finished else holder

    def release(self, tailer: Shipper) -> None:
        key = (tailer.dev, tailer.ino)
        if self._by_id.get(key) is tailer:
            del self._by_id[key]


@dataclass(kw_only=True)
class TailContext:
    """What every tailer shares: options, the queue, the registry, descriptors, claims and the
    allow-list (replaced in place on SIGHUP, so running tailers see the new one)."""

    opts: TailOptions
    queue: BatchQueue
    registry: Registry
    budget: FdBudget
    allowed_paths: tuple[str, ...]
    claims: Claims = field(default_factory=Claims)
    spool: Spool | None = None  # where rotated-away bytes Kafka does not have yet are kept

    def allowed(self, real_path: str) -> bool:
        return path_allowed(real_path, self.allowed_paths)


class ReaderStatus(TypedDict):
    """One reader as GET /files shows it (docs/monitoring.md)."""

    path: str  # the path collected (as logs show it)
    entry: str  # the collect entry it belongs to
    topic: str
    source: str  # what is read: "current file", or an earlier file's kind and where it is now
    state: str  # what it does or waits for, in words
    read: int  # the file offset read up to
    acked: int  # every byte before it is acknowledged by Kafka (the registry's offset)
    in_flight: int  # batches sent, not answered yet
    partial_bytes: int  # a last line without its newline, held
    kafka_failures: int  # pauses after batches Kafka refused, in a row (0 once one is acknowledged)


class _NoGauge:
    def set(self, value: float) -> None:
        pass


class Shipper:
    """Bytes at file offsets -> lines -> messages -> batches; acknowledgements in order."""

    # Slots, not a __dict__: past 30 attributes CPython gives each instance a dict of its own (no shared
    # keys), and every attribute read is a probe into that ~1.6 KB table. At 10,000 files each line finds
    # its file's state out of the CPU's caches, and those probes were a large part of what a line cost
    # (issue 23). What a line touches comes first: the few cache lines it reads together.
    __slots__ = (
        # read, split, built, batched and acknowledged: every line
        "read_pos", "acks", "fp", "fp_len", "_splitter", "_format", "_events", "_joiner", "encoding",
        "route", "_key", "_queue", "_registry", "dev", "ino", "path", "reg_key", "_uid", "_due",
        "_n_lines", "_n_bytes", "_began", "_carry_mark", "_carried_from", "_carry_handed", "_spooled",
        "retry", "finished", "after", "_wake", "spec", "_id_uid", "_ids_epoch", "_acked_at",
        "_key_epoch", "_entry",
        # the rest
        "name", "wire", "origin", "ctx", "opts", "announce", "prepare", "reading_done", "complete",
        "successor", "_carry_delivered", "carry_sent", "_carry_in", "_carry_need",
        "_carry_batch", "_label", "_lines", "_bytes", "_decode_errors", "_replaced_logged",
        "_replaced_since_log", "_malformed_logged", "_malformed_since_log", "_unacked", "_held",
        "_gauges_final", "_shown",
        "__weakref__",  # exactly_once keeps batch owners in a WeakKeyDictionary (transactional.py)
    )

    def __init__(self, path: str, route: Route, ctx: TailContext, spec: SourceSpec | None = None) -> None:
        self.path = path  # the name as the OS takes it
        self.name = display_name(path)  # the name as logs, labels and status show it (no control character)
        self.wire = wire_name(path)  # the name as the messages' `path` and key carry it (JSON escapes it)
        self.origin = path  # the collect entry this file belongs to (set by the runner)
        self.ctx = ctx
        self.opts = ctx.opts
        self.spec = spec or SourceSpec()
        self.announce = True  # log the start at INFO (the runner turns it off past its first files)
        self.prepare: Callable[[], Awaitable[None]] | None = None  # awaited before the first read (a pod's labels)
        self.encoding = ""  # resolved from spec.encoding (and a BOM) once the file has bytes
        self._queue = ctx.queue
        self._registry = ctx.registry
        self.route = route
        self.dev = self.ino = 0
        self.fp, self.fp_len = "", 0
        self.read_pos = 0
        self.acks = AckTracker()
        self.reg_key = ""  # this file's key in the registry
        self._uid = ""  # its entry's uid: where registry.archive moves it when a new file takes the inode
        self._key_epoch = -1  # registry.epoch when reg_key and _entry were last looked up (_entry_key)
        self._entry: RegistryEntry | None = None  # the entry under reg_key then
        self._acked_at = -1e9  # time.monotonic() of the last acknowledgement that moved the offset
        self.after: Shipper | None = None  # the earlier generation of this path, read first
        self.reading_done = asyncio.Event()  # set when this file is read to its end (or closed)
        self.complete = False  # read to its end (not merely stopped): only then can it be done
        self._spooled: SpoolFile | None = None
        self._splitter = LineSplitter(self.opts.max_line_bytes)
        self._events: Aggregator | None = None
        self._joiner = Joiner(self.spec.format, self.opts.max_line_bytes) if self.spec.format != "plain" else None
        self._began = False  # bytes of this file were read (a line carried from an earlier file can no longer join)
        # A line this file ended with, continued by the next file of the path (carried there):
        self.successor: Shipper | None = None  # the next file of the path, once its reader exists
        self._carry_handed = False  # handed over, and not yet acknowledged in the next file
        self._carry_delivered = False  # ... now acknowledged there: this file is acknowledged to its end
        # An earlier run sent the line an earlier file of the path ended with, joined to this file's
        # first records, and acknowledged this file past them (the registry's mark_joined): a restart
        # that reads the earlier file again does not send its part of that line once more.
        self.carry_sent = False
        # A line an earlier file of the path began, which this file goes on with:
        self._carry_in: list[Chain] = []  # as it was handed over (seeded again after a rewind)
        self._carried_from: list[Shipper] = []  # the files it began in, told when it is acknowledged
        self._carry_need = 0  # ... acknowledged past this offset of this file
        self._carry_mark = False  # the next batch holds the carried line
        self._carry_batch: Batch | None = None
        self._wake = asyncio.Event()
        self.retry = Backoff()  # after Kafka refused a batch: the wait before reading it again
        self.finished = False
        self._key = f"{self.opts.ip}:{self.wire}".encode()
        self._label = metrics.path_label(self.name)  # its per-file series (metrics.forget_path when gone)
        self._lines = metrics.LINES_READ.labels(self._label)
        self._bytes = metrics.BYTES_READ.labels(self._label)
        self._decode_errors = metrics.DECODE_ERRORS.labels(self._label)
        self._replaced_logged = -1e9
        self._replaced_since_log = 0
        self._malformed_logged = -1e9
        self._malformed_since_log = 0
        # A gauge shared by many files would say nothing: files past the label cap have none.
        own = self._label != metrics.OTHER_PATHS
        self._unacked = metrics.UNACKED_BYTES.labels(self._label) if own else _NoGauge()
        self._held = metrics.PARTIAL_LINE_BYTES.labels(self._label) if own else _NoGauge()
        # Counted per read and per batch, put into the series above when the metrics are read
        # (metrics.defer): a series' update takes a lock, and there were six per line.
        self._n_lines = self._n_bytes = 0
        self._due = False  # deferred: flush_metrics() runs at the next metrics.flush()
        self._gauges_final = False  # closed: its gauges say 0 from now on
        self._shown = (0, 0)  # what the gauges say (held, unacked)
        self._id_uid = ""  # the file uid in the format's msgid prefix
        self._ids_epoch = -1  # registry.epoch when _id_uid was last checked
        self._format = self._make_format(route)

    # ---- offsets

    @property
    def label(self) -> str:
        """The `path` label of this file's metrics."""
        return self._label

    @property
    def acked(self) -> int:
        """Every byte before this offset is acknowledged by Kafka."""
        return self.acks.acked

    @property
    def generation(self) -> int:
        return self.acks.generation

    @property
    def unacked(self) -> int:
        """Batches in flight."""
        return self.acks.pending

    @property
    def resume_offset(self) -> int:
        """Where a restart must begin: never inside a line, nor inside a multiline event."""
        pending = self._events.pending_start if self._events is not None else None
        if self._joiner is not None:
            pending = self._joiner.pending_start
        return self._splitter.resume_offset if pending is None else pending

    # ---- what GET /files shows

    def status(self) -> ReaderStatus:
        """This reader now, for an operator: where it is and what it waits for."""
        return ReaderStatus(path=self.name, entry=display_name(self.origin), topic=self.route.topic,
                            source=self._source(), state=self._state(), read=self.read_pos, acked=self.acked,
                            in_flight=self.acks.pending, partial_bytes=self._splitter.pending,
                            kafka_failures=self.retry.failures)

    def _source(self) -> str:
        return "current file"

    def _state(self) -> str:
        if self.finished:
            return "finished"
        if self.after is not None and not self.after.reading_done.is_set():
            return "waiting for an earlier file of its path to be read first"
        if self.acks.failed is not None or self.retry.failures:
            return "Kafka refused a batch: reading it again after a pause"
        if self.reading_done.is_set():
            return "read to its end: waiting for Kafka to acknowledge it"
        if self.acks.pending:
            return "sending"
        return "following (its last line waits for a newline)" if self._splitter.pending \
            else "following (all read is acknowledged)"

    # ---- routing and decoding

    def _make_format(self, route: Route) -> MessageFormat:
        self._id_uid = self._file_uid()
        return MessageFormat(self.opts.ip, self.opts.host, self.wire, route.module, route.fields,
                             self.encoding or "utf-8", f"{self.opts.host_id or self.opts.ip}/{self._id_uid}/")

    def _file_uid(self) -> str:
        """The file's uid (device, inode, first seen; a copytruncate starts a new one): with the line's
        offset, what makes a message's msgid stable across re-sends and restarts."""
        key = self._entry_key()
        entry = self._registry.get(key) if key else None
        return entry.uid if entry is not None else f"{self.dev}-{self.ino}-0"

    def _same_ids(self) -> None:
        """Before building messages: a format whose msgid prefix names the file's current uid (looked up
        again only when the registry's keys or uids changed since the last look: registry.epoch)."""
        epoch = self._registry.epoch
        if epoch == self._ids_epoch:
            return
        self._ids_epoch = epoch
        if self._file_uid() != self._id_uid:
            self._format = self._make_format(self.route)

    def retarget(self, route: Route) -> None:
        """New topic/module/fields for the lines not read yet; nothing is re-read."""
        self.route = route
        self._format = self._make_format(route)

    def _resolve_encoding(self, head: bytes) -> None:
        """Pick the codec (a UTF-16/32 BOM decides the byte order) and build the line machinery."""
        self.encoding = resolve_encoding(self.spec.encoding, head)
        self._splitter = LineSplitter(self.opts.max_line_bytes, self.encoding)
        self._splitter.reset(self.read_pos)
        if self.spec.multiline is not None:
            self._events = Aggregator(self.spec.multiline, self.encoding, self.opts.max_line_bytes)
        self._format = self._make_format(self.route)

    # ---- bytes to batches

    async def _ship_chunk(self, data: bytes, offset: int) -> None:
        """Lines completed by `data` (at file offset `offset`) onto the queue."""
        values = self._chunk(data, offset)
        if values:
            await self._enqueue(values)
        else:
            await asyncio.sleep(0)  # a long line without newline must not starve the loop

    def _chunk(self, data: bytes, offset: int) -> list[bytes]:
        """The messages of the lines `data` (at file offset `offset`) completes, counted."""
        self._n_bytes += len(data)
        self._began = True
        values = self._messages(data, offset)
        if not self._due:
            self._metrics_due()
        return values

    def _messages(self, data: bytes, offset: int) -> list[bytes]:
        """Messages for what `data` completes; plain single-line UTF-8 takes the fast path."""
        if self._ids_epoch != self._registry.epoch:
            self._same_ids()
        if self._joiner is not None:
            records = self._joiner.push(self._splitter.feed(data, offset))
            return self._build_records(records) if records else []
        if self._events is None:
            splitter = self._splitter
            timestamp = utc_timestamp()
            if self.encoding == "utf-8":  # split, checked and built in one call (LineSplitter.feed_built)
                built = splitter.feed_built(data, offset, self._format, timestamp)
                if built is not None:
                    return built
            held = splitter.held
            fast = splitter.feed_plain(data, offset)
            if fast is not None:
                start, parts = fast
                if not parts:
                    return []
                plain = self.encoding == "utf-8" and json_plain(data) and (not held or json_plain(held))
                values = self._format.build_plain(start, parts, timestamp, plain)
                if self._format.replaced:
                    self._count_replaced(start)
                return values
        lines = self._splitter.feed(data, offset)
        if lines and self._events is not None:
            lines = self._events.push(lines)
        return self._build(lines) if lines else []

    def _build(self, lines: list[Line]) -> list[bytes]:
        self._same_ids()
        truncated = sum(1 for line in lines if line[2])
        if truncated:
            metrics.LINES_TRUNCATED.labels(self._label).inc(truncated)
            log.warning("%s: %d line(s) or event(s) cut at their size limit, offset %d",
                        self.name, truncated, lines[0][0])
        values = self._format.build(lines, utc_timestamp())
        self._count_replaced(lines[0][0])
        return values

    def _build_records(self, records: list[Record]) -> list[bytes]:
        """Messages of a container log's lines (counting the cut and the malformed ones)."""
        self._same_ids()
        joiner = self._joiner
        assert joiner is not None
        truncated = sum(1 for record in records if record[2])
        if truncated:
            metrics.LINES_TRUNCATED.labels(self._label).inc(truncated)
            log.warning("%s: %d line(s) cut at max_line_bytes, offset %d", self.name, truncated, records[0][0])
        if joiner.malformed:
            metrics.MALFORMED_LINES.labels(self._label).inc(joiner.malformed)
            self._count_malformed(joiner.malformed, records[0][0])
            joiner.malformed = 0
        if joiner.carried_done is not None:
            # The line an earlier file began ends here: those files are acknowledged to their end once
            # this batch is, and this file's offset is past the record that ended it.
            self._carry_need, self._carry_mark = joiner.carried_done + 1, True
            joiner.carried_done = None
        values = self._format.build_records(records, utc_timestamp())
        self._count_replaced(records[0][0])
        return values

    def _count_malformed(self, n: int, offset: int) -> None:
        """Say (at most once a minute) that lines were not in the entry's container format."""
        self._malformed_since_log += n
        now = time.monotonic()
        if now - self._malformed_logged >= 60.0:
            log.warning("%s: %d line(s) are not in format %r; shipped as they are (no time, no stream); first "
                        "near offset %d", self.name, self._malformed_since_log, self.spec.format, offset)
            self._malformed_logged, self._malformed_since_log = now, 0

    def _count_replaced(self, offset: int) -> None:
        """Count lines whose bytes were invalid in the encoding; say so (at most once a minute)."""
        n = self._format.replaced
        if not n:
            return
        self._decode_errors.inc(n)
        self._replaced_since_log += n
        now = time.monotonic()
        if now - self._replaced_logged >= 60.0:
            log.warning("%s: %d line(s) had bytes that are not valid %s (binary content?), shipped with "
                        "U+FFFD in their place; first near offset %d", self.name, self._replaced_since_log,
                        self.encoding, offset)
            self._replaced_logged, self._replaced_since_log = now, 0

    async def _ship(self, lines: list[Line]) -> None:
        await self._enqueue(self._build(lines))

    async def _enqueue(self, values: list[bytes]) -> None:
        """Queue one batch of messages; waits while the queue is full (the file is the buffer)."""
        await self._queue.put(self._batch(values))

    def _batch(self, values: list[bytes]) -> Batch:
        """The next batch of this file (in flight from now on: acknowledgements wait for it)."""
        self._n_lines += len(values)
        batch = Batch(self.route.topic, self._key, values, self.resume_offset, self, self.acks.generation)
        if self._carry_mark:
            self._carry_batch, self._carry_mark = batch, False
        self.acks.sent(batch)
        if not self._due:
            self._metrics_due()
        return batch

    def _metrics_due(self) -> None:
        """Counts or gauges of this file changed: flush_metrics() at the next metrics.flush()."""
        if not self._due:
            self._due = True
            metrics.defer(self)

    def flush_metrics(self) -> None:
        """Lines and bytes read since the last call into their series; the gauges set from the state."""
        self._due = False
        lines, size, self._n_lines, self._n_bytes = self._n_lines, self._n_bytes, 0, 0
        if lines:
            self._lines.inc(lines)
        if size:
            self._bytes.inc(size)
        if not self._gauges_final:  # set when changed only: most files show 0 and 0 most of the time
            held, unacked = self._splitter.pending, max(0, self.read_pos - self.acks.acked)
            if held != self._shown[0]:
                self._held.set(held)
            if unacked != self._shown[1]:
                self._unacked.set(unacked)
            self._shown = (held, unacked)

    def _zero_gauges(self) -> None:
        """Closed for good: its gauges say 0 (what is still counted goes into the counters)."""
        self._gauges_final = True
        self._unacked.set(0)
        self._held.set(0)

    async def _flush_held(self) -> None:
        """The file will not grow: send the held partial line and a pending multiline event. A
        container log's line still partial goes on in the next file of the path when its reader
        takes it (else it is sent as it is): the registry, which says so (mark_joined), is on disk
        before that file may send it. With exactly_once its offset comes from Kafka at a restart,
        ahead of registry.json: a mark written later was missing after a kill, and this file's part
        of the line was sent again, cut (a piece of a line twice, in 4 of 13 runs of the pods churn test
        with kill -9 and exactly_once)."""
        last = self._splitter.flush()
        self._metrics_due()
        if self._joiner is not None:
            records = self._joiner.push(last)
            if self._joiner.holding:
                records += self._hand_over(self._joiner)
                if self._carry_handed and not self._carry_delivered:
                    await self._registry.persist()
            if records:
                await self._enqueue(self._build_records(records))
            return
        if self._events is not None:
            last = self._events.push(last) + self._events.flush()
        if last:
            await self._ship(last)

    # ---- a container log's line that goes on in the next file of the path

    def _hand_over(self, joiner: Joiner) -> list[Record]:
        """The lines this file ends with, still partial: to the next file of the path, or, when
        none takes them, as records to send now (they are lines cut short, not lost)."""
        if self._carry_handed:
            joiner.take()  # read again after a rewind: the next file has them already
            return []
        successor = self.successor
        chains = joiner.take()
        spans = any(chain.carried for chain in chains)  # a line that began in an earlier file goes on
        if successor is not None and successor.carry_sent:
            # Read again after a restart: the next file, acknowledged past its first records, sent
            # this line whole then (this file's offset had not been saved past it). Not sent again,
            # cut; this file is acknowledged to its end with its other lines, and the earlier files
            # the line began in with it. (A next file resumed past first records it sent on their own
            # cannot take the line: it goes out cut, below.)
            log.debug("%s: the partial line at its end went out whole before the restart", self.name)
            if spans:
                origins, self._carried_from = self._carried_from, []
                for origin in origins:
                    origin.carry_delivered()
            self._carry_handed = self._carry_delivered = True
            self._settle_carry()
            return []
        # The next file answers for this file's part of the line, and for the earlier files' when the
        # line began there; a line this file took from an earlier one and ended stays this file's to
        # answer for (_carry_check: once the batch that holds it is acknowledged, not the next file's).
        # _carry_in stays: a rewind of this file to 0 joins that line again (forgotten here, its last
        # record went out as a line after Kafka refused a batch: 113 lines cut in one churn run).
        if successor is not None and successor.accept_carry(chains, [*self._carried_from, self] if spans else [self]):
            self._carry_handed = True
            if spans:
                self._carried_from = []
            log.debug("%s: a partial line at its end goes on in the next file of its path", self.name)
            return []
        if spans:
            self._carry_need, self._carry_mark = 0, True  # the carried line is sent here, cut
        return [chain.record() for chain in chains]

    def accept_carry(self, chains: list[Chain], origins: list[Shipper]) -> bool:
        """Go on with the partial lines an earlier file of the path ended with; False when this
        file cannot (it was read already, or is not read from its start)."""
        if self._joiner is None or self._began or self.finished or self.read_pos != 0 or self.acks.pending:
            return False
        self._carry_in, self._carried_from = [c.copy() for c in chains], list(origins)
        self._joiner.seed(chains, self.read_pos)
        if self.reg_key:
            self._registry.mark_joined(self.reg_key)
        return True

    def _carry_check(self) -> None:
        """The carried line is acknowledged, and this file's offset is past it: the files it began
        in are acknowledged to their ends."""
        batch = self._carry_batch
        if not self._carried_from or batch is None or self.acked < self._carry_need:
            return
        if batch.remaining or batch.error is not None or self.acks.holds(batch):
            return
        origins, self._carried_from, self._carry_in, self._carry_batch = self._carried_from, [], [], None
        for origin in origins:
            origin.carry_delivered()

    def carry_delivered(self) -> None:
        """The line this file handed over is acknowledged in the next file of the path."""
        self._carry_delivered = True
        self._settle_carry()

    def _settle_carry(self) -> None:
        """Handed over and delivered, and every batch of this file acknowledged: acknowledged to its end."""
        if not (self._carry_handed and self._carry_delivered) or self.acks.pending or self.acks.failed is not None:
            return
        self._carry_handed = self._carry_delivered = False
        self.acks.rewind(self.read_pos)
        self._registry.update(self.dev, self.ino, self.path, self.acked, self.fp, self.fp_len,
                              key=self._entry_key() or None, size=self.read_pos)
        self._release_spool()
        self._metrics_due()
        if self.finished:
            self._done_if_acknowledged()
        self.wake()

    # ---- acknowledgements

    def checkpoint(self, batch: Batch) -> Checkpoint | None:
        """exactly_once: this file's offset record once `batch`, its last in a transaction, commits
        (pipeline/checkpoint.py). None for a batch from before a rewind (its offset is the old
        content's) or a file without a registry entry yet."""
        key = self._entry_key()
        if batch.generation != self.acks.generation or not key:
            return None
        entry = self._registry.get(key)
        if entry is None:
            return None
        return Checkpoint(entry.uid, self.path, self.dev, self.ino, entry.since, self.fp, self.fp_len,
                          batch.end_offset, max(self.read_pos, batch.end_offset))

    def batch_done(self, batch: Batch) -> None:
        """Called on the loop when Kafka answered for every message of the batch."""
        outcome = self.acks.done(batch)
        if outcome is Ack.MOVED:
            # Once per line at 10,000 files x 1 line/s: what else an acknowledgement may settle (a
            # failure's back-off, the spool, a carried line) is rare, and looked at here before a call.
            if self.retry.failures:
                self.retry.reset()
            self._acked_at = time.monotonic()
            self._record_acked()
            if not self._due:
                self._metrics_due()
            if self._spooled is not None:
                self._release_spool()
            if self._carry_batch is not None:  # (a slot, where _carried_from is a list to look into)
                self._carry_check()
            if self._carry_handed:
                self._settle_carry()
        elif outcome is Ack.FAILED:
            text = error_text(batch.error)
            log.error("kafka refused lines of %s (topic %s, offset %d): %s; retrying from offset %d",
                      self.name, batch.topic, self.acked, text, self.acked)
            self.wake()
        if self.finished:
            self._done_if_acknowledged()  # closed (its entry stopped, or read to its end) and now all sent

    def _record_acked(self) -> None:
        """The acknowledged offset into the registry: into the entry _entry_key found, which stays the one
        under the key while the registry's keys are as they were then (its epoch); else by its key."""
        registry = self._registry
        if self._key_epoch != registry.epoch:
            self._entry_key()
        if self._entry is not None:
            registry.advance(self._entry, self.acks.acked, self.fp, self.fp_len, self.read_pos)
        else:
            registry.update(self.dev, self.ino, self.path, self.acks.acked, self.fp, self.fp_len,
                            key=self.reg_key or None, size=self.read_pos)

    async def _rewind_after_failure(self) -> None:
        await self.retry.sleep()
        self.rewind()

    def rewind(self) -> None:
        """Drop what is in flight and read again from the acknowledged offset."""
        self.read_pos = self.acks.rewind()
        self._splitter.reset(self.read_pos)
        if self._events is not None:
            self._events.reset()
        if self._joiner is not None:
            self._joiner.reset()
            self._carry_batch, self._carry_mark = None, False
            if self._carry_in and self.read_pos == 0:
                self._joiner.seed(self._carry_in, 0)  # the carried line is read again with the rest

    def _done_if_acknowledged(self) -> bool:
        """An earlier file of its path read to its end and acknowledged to its end: its registry
        entry is done (a restart looks for it no more) and its spool copy is deleted."""
        if not (self.complete and self.reg_key and self.acks.pending == 0 and self.acks.failed is None
                and self.acked >= self.read_pos):
            return False
        key = self._entry_key()
        entry = self._registry.get(key)
        self._registry.mark_done(key)
        self._registry.disown(key)
        uid = self._spooled.uid if self._spooled is not None else entry.uid if entry is not None else ""
        if self.ctx.spool is not None and uid:
            # Read from the file or a copy: its spool copy goes too, once the registry says it is done.
            self._registry.when_saved(functools.partial(self.ctx.spool.drop, uid))
        self._spooled = None
        return True

    def _release_spool(self) -> None:
        """The spool's segments below the acknowledged offset go, once the registry has that offset
        on disk (a restart reads from the offset the registry has)."""
        if self._spooled is not None and self.ctx.spool is not None:
            self._registry.when_saved(functools.partial(self.ctx.spool.release, self._spooled.uid, self.acked))

    def _entry_key(self) -> str:
        """This file's registry key now. Once its descriptor is closed (rotated away, read to its end,
        not all acknowledged) a new file may take its inode number: registry.archive then moves its
        entry under its uid, and its acknowledgements go there, never into the new file's entry."""
        registry = self._registry
        if self._key_epoch != registry.epoch:  # (an archive moves entries and changes the epoch)
            if self.reg_key and self._uid:
                self.reg_key = registry.current_key(self.reg_key, self._uid)
            self._entry = registry.get(self.reg_key) if self.reg_key else None
            self._key_epoch = registry.epoch
        return self.reg_key

    def wake(self) -> None:
        self._wake.set()

    async def _prepared(self) -> None:
        """What the runner asked to be done before the first read (once)."""
        prepare, self.prepare = self.prepare, None
        if prepare is not None:
            await prepare()

    async def run(self) -> None:
        """Read until this file is done (or the task is cancelled)."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop for good: close what is open, let the next file of the path go on."""
        raise NotImplementedError
