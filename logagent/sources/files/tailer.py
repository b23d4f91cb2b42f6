"""A live file: read new bytes in chunks, follow rotation like `tail -F`.

`FileTailer` (a Shipper) is a file opened by name and bound to its identity (device,
inode, fingerprint), not to the name. It reads to the end whenever it is woken (inotify or
the stat tick). When the name it was opened under points elsewhere (rename or delete), it
reads its file until it stops growing for `rotate_wait`, sends the held partial line,
closes and ends; the entry's runner then opens the new file under that name. What Kafka
has not acknowledged of a file rotated away is copied into the spool first.

Every open goes through opener.open_checked (the descriptor is judged against
allowed_paths), and one file is read by one tailer only, whatever names lead to it
(shipper.Claims).
"""

from __future__ import annotations

import asyncio
import logging
import lzma
import os
import time
import zlib
from collections.abc import Callable
from types import ModuleType

from logagent.errors import AlreadyCollected, FileReplaced, NotAllowed, SourceError
from logagent.runtime import metrics
from logagent.runtime.names import display_name
from logagent.runtime.wait import wait_event
from logagent.sources.files.opener import open_checked, open_error_reason
from logagent.sources.files.recovery import compression_of, find_copy
from logagent.sources.files.registry import (
    FINGERPRINT_BYTES,
    RegistryEntry,
    fingerprint,
    fingerprint_of,
    identity_key,
    uid_of,
)
from logagent.sources.files.shipper import Route, Shipper, SourceSpec, TailContext
from logagent.sources.files.spool import SpoolFile

_readat: ModuleType | None
try:  # a file's new bytes and its head's hash in one call (_readat.c); built by `make setup`
    from logagent.sources.files import _readat
except ImportError:  # not built (no compiler where it was installed): os.pread and CRC-32, as before
    _readat = None

# The hash _same_head keeps of a head that matched the fingerprint: the compiled reader's, so that
# its hash of a head read with the new bytes compares with it.
head_hash: Callable[[bytes], int] = _readat.head_hash if _readat is not None else zlib.crc32

log = logging.getLogger("logagent.tailer")

SPOOL_GRACE = 0.5  # seconds a rotated file's in-flight bytes get to be acknowledged before they are spooled
SPOOL_GRACE_BYTES = 1024 * 1024  # ... when no more than this is owed and Kafka acknowledged within 1 s
INLINE_READ_BYTES = 16 * 1024  # a write notified is read in the watcher's callback up to this much (notify)


class FileTailer(Shipper):
    """Tails one file identity opened under `path`; see the module docstring."""

    __slots__ = ("fd", "rotated", "_parked", "_notified_at", "_closed_idle", "_last_growth", "_head",
                 "_head_hash", "_budget", "_name_known",
                 "_start_at_end", "_on_rotated", "_decided", "_spooled_to", "_protecting", "_protect_again")

    def __init__(self, path: str, route: Route, ctx: TailContext, start_at_end: bool = False,
                 on_rotated: Callable[[FileTailer], None] | None = None,
                 spec: SourceSpec | None = None) -> None:
        super().__init__(path, route, ctx, spec)
        self._budget = ctx.budget
        self._start_at_end = start_at_end
        self._on_rotated = on_rotated or (lambda tailer: None)
        self.fd: int | None = None
        self.rotated = False
        self._last_growth = time.monotonic()
        self._closed_idle = False
        self._decided = False  # where to start was decided but may not be on disk yet
        self._spooled_to = 0  # the spool holds this file's bytes up to here
        self._protecting: asyncio.Future[None] | None = None
        self._protect_again = False
        self._notified_at = -1e9  # time.monotonic() of the last inotify event naming `path` (notify)
        self._head: bytes | None = None  # the first bytes _rewritten read, for _took to grow the fingerprint from
        self._head_hash: tuple[str, int] = ("", -1)  # (fingerprint, head_hash of the head it was taken of): _same_head
        self._name_known = False  # notify() saw the name since the read loop last woke: no stat needed
        self._parked = False  # the read loop sleeps until woken, with nothing of its own to do

    # ---- open / close

    @property
    def evictable(self) -> bool:
        """Caught up with a file that still has its name: safe to close and reopen later."""
        if self.fd is None or self.rotated or self._splitter.pending or (self._joiner and self._joiner.holding):
            return False
        try:
            return os.fstat(self.fd).st_size == self.read_pos
        except OSError:
            return False

    def open(self, at: str | None = None) -> None:
        """Open the file under `path`, or under `at`, a new name of the same file (the first
        time: identify it, claim it and find where to start).

        Raises SourceError (NotAllowed when the opened file lies outside allowed_paths,
        AlreadyCollected when another tailer reads it). When all `max_open_files` descriptors
        are busy and none is idle, a new file is identified through a short-lived descriptor
        and left parked (no descriptor): the stat tick wakes it and it reopens when a slot frees.
        """
        name = at or self.path
        reopening = self.dev != 0
        have_slot = self._budget.acquire(self)
        if not have_slot and reopening:
            return  # still parked; the next tick tries again
        try:
            # A name found by inode must be the file itself, never a symlink planted there.
            fd, st = open_checked(name, self.ctx.allowed, nofollow=at is not None)
        except SourceError as exc:
            self._budget.release(self)
            # A refusal is counted under the entry: the name may lead somewhere outside.
            label = metrics.path_label(display_name(self.origin)) if isinstance(exc, NotAllowed) else self._label
            metrics.FILE_ERRORS.labels(label, exc.reason).inc()
            raise
        if reopening and ((st.st_dev, st.st_ino) != (self.dev, self.ino)
                          or (at is not None and self.fp_len == 0)  # found by inode, nothing to check it by
                          or fingerprint(fd, self.fp_len)[0] != self.fp):
            # Another file under the name, or the inode reused by a new file while we had it closed.
            os.close(fd)
            self._budget.release(self)
            raise FileReplaced(f"{display_name(name)}: replaced while closed")
        if not reopening:
            holder = self.ctx.claims.claim((st.st_dev, st.st_ino), self)
            if holder is not None:
                os.close(fd)
                self._budget.release(self)
                raise AlreadyCollected(f"{self.name} is the same file as {holder.name} (entry "
                                       f"{display_name(holder.origin)!r}), which is collected already; "
                                       "it is not read twice", holder)
        self.fd = fd
        self._closed_idle = False
        if not reopening:
            self._identify(fd, st)
        if not have_slot:
            os.close(fd)
            self.fd = None
            self._closed_idle = True
            log.debug("%s parked: all max_open_files descriptors busy", self.name)

    def _identify(self, fd: int, st: os.stat_result) -> None:
        """A file seen for the first time: its identity, and the offset to start from."""
        self.dev, self.ino = st.st_dev, st.st_ino
        self.fp, self.fp_len = fingerprint(fd)
        saved = self._registry.lookup(st.st_dev, st.st_ino)
        self._decided = True  # a new decision, unless the registry had one
        # A reused inode: the old file may still be owed. An entry seen only empty has no first bytes
        # to tell; one of another name is another file (a folder where files come and go hands a
        # deleted file's inode number to the next new one: taken over, the new file's offsets went
        # under the other name, where a restart did not look for them, and that name's recovery
        # read the new file as one of its own). One of this name with a spool copy had bytes, which
        # went into the spool when it was rotated away: another file too (taken over, the spool's
        # bytes, the old file's, were read as the start of the new one, whose own were passed by:
        # two rounds lost in ~1 of 150 churn runs with kill -9 and exactly_once). One finished is
        # another file too: taken over, the new file's entry stayed finished, and a restart passed it
        # by (a round lost, its spool copy deleted as no longer needed: 1 in ~30 pods churn runs with
        # kill -9 and exactly_once).
        if saved is not None and (fingerprint(fd, saved.fp_len)[0] != saved.fp
                                  or (saved.fp_len == 0 and (saved.path != self.path or saved.done
                                                             or self._spooled_before(saved)))):
            self._registry.archive(st.st_dev, st.st_ino)
            saved = None
        elif saved is not None and saved.fp_len == 0 and self._registry.seen_after(saved):
            # Seen only empty (nothing of it acknowledged), and first seen before files of its path the
            # agent saw since: its inode number's entry was an earlier file's, deleted. Kept, the old
            # first-seen time ordered this file before those at a later recovery (its lines first, a
            # line one of them ends with joined wrongly). It gets its own time, now.
            self._registry.new_content(identity_key(st.st_dev, st.st_ino))
        if saved is not None:
            start = saved.offset if saved.offset <= st.st_size else 0
            how = f"saved offset {saved.offset}" + ("" if start == saved.offset else ", file is shorter: from 0")
            self._decided = False
            self.carry_sent = start > 0 and self._registry.joined(identity_key(st.st_dev, st.st_ino))
        elif self._start_at_end:
            start = self._last_line_end(fd, st.st_size)
            how = "start=end"
        else:
            start = 0
            how = "beginning"
        self.read_pos = self.acks.rewind(start)
        self._splitter.reset(start)
        if st.st_size > 0:
            self._resolve_encoding(os.pread(fd, 4, 0))
        # Saved at once (run() persists it before reading), so a restart before the first ack
        # does not re-decide where to start.
        self.reg_key = self._registry.update(self.dev, self.ino, self.path, start, self.fp, self.fp_len,
                                             size=st.st_size)
        self._registry.own(self.reg_key)
        entry = self._registry.get(self.reg_key)
        self._uid = entry.uid if entry is not None else ""
        self._key_epoch = -1  # a new key: _entry_key looks it and its entry up again
        log.log(logging.INFO if self.announce else logging.DEBUG,
                "tailing %s from offset %d (%s) -> topic %s", self.name, start, how, self.route.topic)

    def _spooled_before(self, saved: RegistryEntry) -> bool:
        """The spool holds bytes of the file of `saved` (written when it was rotated away)."""
        spool = self.ctx.spool
        return spool is not None and spool.get(saved.uid) is not None

    @staticmethod
    def _last_line_end(fd: int, size: int) -> int:
        """The offset after the last newline, so start=end never begins mid-line."""
        if size == 0:
            return 0
        look = min(size, 64 * 1024)
        tail = os.pread(fd, look, size - look)
        nl = tail.rfind(b"\n")
        return size - look + nl + 1 if nl >= 0 else size

    def first_bytes(self) -> bytes | None:
        """Up to FINGERPRINT_BYTES first bytes of the file, read through its descriptor whatever became
        of its name (renamed, compressed and unlinked); None while it is closed or cannot be read.
        Recovery tells the current file's copies, and where it is now, by them (recovery.plan)."""
        if self.fd is None:
            return None
        try:
            return os.pread(self.fd, FINGERPRINT_BYTES, 0)
        except OSError:
            return None

    def _state(self) -> str:
        if not self.finished and not self.reading_done.is_set():
            if self.rotated:
                return "renamed or deleted: reading the old file to its end"
            if self.fd is None and self.dev:
                return "closed (idle, or no descriptor free): reopened when it changes"
        return super()._state()

    def close_idle(self, why: str) -> None:
        """Close the descriptor but keep identity and offsets; reopened when the file changes."""
        if self.fd is None:
            return
        log.debug("closing %s (%s)", self.name, why)
        self._close_fd()
        self._closed_idle = True

    def _close_fd(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            finally:
                self.fd = None
                self._budget.release(self)

    def close(self) -> None:
        """Close the descriptor for good (the entry was removed or the agent stops)."""
        self._close_fd()
        self.finished = True
        self.reading_done.set()
        self.ctx.claims.release(self)
        if not (self.rotated and self.complete):
            # A rotated file read to its end stays ours until Kafka has it all (batch_done then marks it
            # done); one stopped before its end is the next plan's to read from its acknowledged offset.
            self._registry.disown(self._entry_key())
        self._zero_gauges()

    # ---- the spool: a rotated-away file's unacknowledged bytes, kept where a restart finds them

    @property
    def owes(self) -> bool:
        """Rotated away with bytes Kafka has not acknowledged, not yet all in the spool."""
        if not self.rotated or self.fd is None or self.ctx.spool is None:
            return False
        try:
            size = os.fstat(self.fd).st_size
        except OSError:
            return False
        return size > max(self.acked, self._spooled_to)

    def _schedule_protect(self) -> None:
        if not self.owes:
            return
        if self._protecting is not None and not self._protecting.done():
            self._protect_again = True
            return
        self._protecting = asyncio.ensure_future(self.protect())

    def _keeping_up(self) -> bool:
        """Kafka acknowledged this file within the last second and what is owed is little: it is in
        flight, and will be acknowledged in milliseconds."""
        if self.fd is None or time.monotonic() - self._acked_at > 1.0:
            return False
        try:
            return os.fstat(self.fd).st_size - self.acked <= SPOOL_GRACE_BYTES
        except OSError:
            return False

    async def protect(self) -> None:
        """Copy what Kafka has not acknowledged of this rotated-away file into the spool (from a
        duplicate of the descriptor, so closing ours meanwhile is safe); again while it grows.

        While Kafka keeps up, what a rotation leaves owed is in flight: give it SPOOL_GRACE seconds
        to be acknowledged before copying, so that rotation under a healthy Kafka writes nothing.
        (The file is renamed, not gone: only a kill -9 in those instants together with its deletion
        without a compressed copy before the restart could lose those lines.)"""
        deadline = time.monotonic() + SPOOL_GRACE
        while self.owes and self._keeping_up() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        spool = self.ctx.spool
        while spool is not None and self.owes and self.fd is not None:
            self._protect_again = False
            if self._spooled is None:
                entry = self._registry.get(self.reg_key)
                since = entry.since if entry is not None else time.time()
                uid = uid_of(self.dev, self.ino, since)
                self._spooled = spool.get(uid) or SpoolFile(uid, spool.root / uid, self.path, self.dev, self.ino,
                                                            self.fp, self.fp_len, since, time.time())
            fd = os.dup(self.fd)
            try:
                end = os.fstat(fd).st_size
                start = max(self.acked, self._spooled_to)
                kept = await spool.copy(self._spooled, fd, start, end)
            finally:
                os.close(fd)
            # What the spool refused is counted once; it is still read through the descriptor.
            self._spooled_to = end if kept < end else kept
            if not self._protect_again:
                break

    # ---- the loop

    @property
    def last_growth(self) -> float:
        """time.monotonic() of the last read that found new bytes (or of opening the file)."""
        return self._last_growth

    async def run(self) -> None:
        """Read until stopped or until the rotated-away file is finished.

        The task sleeps until woken: by inotify, or by the manager's stat tick when
        `needs_attention()` says so. Only a timer of its own (a renamed file's
        rotate_wait, a pending multiline event's timeout) wakes it otherwise, so
        a thousand idle files cost one cheap tick a second, not a thousand timers.
        """
        if self.fd is None and not self._closed_idle:
            self.open()
        await self._prepared()
        # Where to start was decided now, not read from the registry: make the decision (and the
        # entry's first application, and the time the file was first seen: its uid, in every
        # msgid) durable before anything is read, or a crash before the next periodic flush would
        # decide again at restart, past lines never sent, or see the file anew under another uid
        # and send lines again under other msgids. A file that follows a rotated one writes while
        # the earlier one is read to its end: its start is not held up behind the disk.
        durable = None
        if self._decided and self.after is None:
            await self._registry.persist()  # in this task: no task more per file at a start with many files
        elif self._decided:
            durable = asyncio.ensure_future(self._registry.persist())
        self._decided = False
        if self.after is not None:
            # The earlier file of this path first: per path, lines go out in the order written.
            # Meanwhile this file stays open (an unlink cannot take it) and is watched for rotation.
            await self.after.reading_done.wait()
            self.after = None
        if durable is not None:
            await durable
            durable = None  # a finished task kept in this frame for the file's life: ~1 KiB a file
        while not self.finished:
            self._wake.clear()  # before reading: a wake-up during the read is not lost
            name_known, self._name_known = self._name_known, False
            if self.acks.failed is not None:
                await self._rewind_after_failure()
            if self.fd is None and self._maybe_reopen():
                break
            if self.fd is not None:
                seen_rotated = self.rotated
                await self._read_to_end()
                if not name_known:  # else inotify told: a rename meanwhile comes as its own event
                    self.check_name()
                if self.rotated and not seen_rotated and self.fd is not None:
                    # The rename was seen after that read began: bytes written before it (a container
                    # log's first records of a line the next file ends) may lie past what it read.
                    await self._read_to_end()
                if self.rotated:
                    self._schedule_protect()
                    # Read to its end since the rename: the next file of the path may start. Only what
                    # the application still writes here before it reopens (within rotate_wait) can
                    # now come after the next file's first lines. Not while a container log's line is
                    # partial here: its end may still come here, or it goes on in the next file, which
                    # then starts with it (at _finish_rotated).
                    if self._joiner is None or not self._joiner.holding:
                        self.reading_done.set()
            now = time.monotonic()
            timeout: float | None = None
            if self.rotated and self.fd is not None:
                if now - self._last_growth >= self.opts.rotate_wait:
                    if self._grew():
                        continue  # it grew while this tailer waited (for room in the queue): read that first
                    await self._finish_rotated()
                    return
                timeout = self.opts.stat_interval
            elif (self.fd is not None and self._splitter.pending == 0
                  and now - self._last_growth >= self.opts.close_inactive):
                self.close_idle(f"inactive for {self.opts.close_inactive:.0f}s")
            if self._events is not None and self._events.pending_start is not None:
                if self._events.due(now):
                    await self._ship(self._events.flush())  # no continuation came: send the event
                else:
                    due_in = self._events.last_line + self._events.spec.timeout - now
                    timeout = due_in if timeout is None else min(timeout, due_in)
            if timeout is None:
                self._parked = True
                try:
                    await self._wake.wait()
                finally:
                    self._parked = False
            else:
                await wait_event(self._wake, max(0.01, timeout))
        self.reading_done.set()

    def _grew(self) -> bool:
        """The open file holds bytes past what was read."""
        try:
            return self.fd is not None and os.fstat(self.fd).st_size > self.read_pos
        except OSError:
            return False

    def notify(self, named: bool) -> None:
        """inotify told of `path`: written (`named` False: the name still leads to the same file),
        or its name created, deleted or moved (`named`: look at the name now, so that a rename is
        seen even by a tailer waiting for room in the queue). Wakes the read loop, which then needs
        no look at the name of its own: a rename during its read comes as an event of its own."""
        self._notified_at = time.monotonic()
        if named:
            self.check_name()
        elif self._parked and self._read_inline():
            return  # read here: the read loop sleeps on
        self._name_known = True
        self.wake()

    def _read_inline(self) -> bool:
        """A write to a file whose read loop sleeps with nothing else to do: read it here, in the
        watcher's callback, and queue its lines now, instead of waking the loop to do the same (at
        10,000 files written once a second each, a task wake-up per line was the largest cost
        left: issue 23). A file closed while idle is reopened here first (_reopen_inline). Only the
        plain case: not rotated, nothing waiting before it, no failure to rewind from, not a
        multiline entry (an event held waits for a timeout only the loop keeps; its aggregator exists
        from the file's first bytes on, so the spec decides) nor a container log, room in the queue
        (a batch read here is taken whole); at most INLINE_READ_BYTES. False when the read loop must
        do it (it is then woken)."""
        if (self.rotated or self.finished or self.after is not None or self.acks.failed is not None
                or self.spec.multiline is not None or self._joiner is not None
                or self._wake.is_set() or not self._queue.has_room()):
            return False
        fd = self.fd if self.fd is not None else self._reopen_inline()
        if fd is None:
            return False
        try:
            # Read first, then look at the head: a rewrite before the read, or between the read and
            # the look, shows in the head, and what was read is dropped. No fstat unless nothing was
            # read (then only a truncation below the offset is news): bytes read prove the size.
            data, same = self._read_new(fd, INLINE_READ_BYTES)
            if not same and self._rewritten(fd, data):
                return False  # the loop starts over
            if not data:
                return True  # nothing new
            offset = self._took(fd, data)
        except OSError:
            return False  # the read loop meets it and says so
        values = self._chunk(data, offset)
        if values:
            self._queue.put_nowait(self._batch(values))
        return len(data) < INLINE_READ_BYTES  # a whole read's worth: the loop reads the rest

    def _reopen_inline(self) -> int | None:
        """A file closed while idle (all max_open_files descriptors were wanted) and written again:
        reopened here when its name still leads to it (open() checks the fingerprint too), so that
        under a descriptor limit a write costs no task wake-up either (issue 23). None when the read
        loop must decide: not closed idle, renamed or replaced meanwhile, refused, or no slot free."""
        if not self._closed_idle or self.dev == 0:
            return None
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) != (self.dev, self.ino):
                return None  # the loop follows it (_maybe_reopen)
            self.open()
        except (SourceError, OSError):
            return None
        return self.fd

    def tick_may_pass(self, quiet_since: float, since: float) -> bool:
        """The stat tick may pass this file by (on the ticks that do not look at every file): it has
        not grown since `quiet_since`, or inotify told of it since `since` and woke it. Not a file
        waiting behind an earlier one, rotated away or closed: their tick does more than look for
        growth. (One call per file per tick: at 10,000 files two were a cost of their own.)"""
        return self._last_growth < quiet_since or (
            self._notified_at >= since and self.after is None and not self.rotated and self.fd is not None)

    def needs_attention(self) -> bool:
        """The stat tick's cheap check (no task switch): has anything changed that inotify
        may not have told us about? Growth, truncation, a rename or delete, an idle close due.
        A rename is acted on here at once: a tailer waiting for room in the queue (Kafka down)
        cannot notice it, and the next file under the name must be opened before it is gone."""
        if self.finished:
            return False
        try:
            st = os.fstat(self.fd) if self.fd is not None else None
        except OSError:
            return True
        unknown = False  # the name could not be looked at (not: is gone): no rename is decided on it
        try:
            named: os.stat_result | None = os.stat(self.path)
        except FileNotFoundError:
            named = None
        except OSError:
            named, unknown = None, True
        if st is not None and not self.rotated and not unknown and self._moved(named, st):
            self._rotated_now()
        if self.after is not None and self.fd is not None:
            self._refresh_fingerprint()  # waiting behind an earlier file: keep its identity sure
        if self.rotated:
            self._schedule_protect()
        if self.acks.failed is not None:
            return False
        if st is not None:
            if st.st_size != self.read_pos or st.st_nlink == 0:
                return True
            if self._splitter.pending == 0 and \
                    time.monotonic() - self._last_growth >= self.opts.close_inactive:
                return True
        if named is None or (named.st_dev, named.st_ino) != (self.dev, self.ino):
            return True
        return self.fd is None and named.st_size != self.read_pos

    async def _read_to_end(self) -> None:
        fd = self.fd
        assert fd is not None
        bufsize = self.opts.read_buffer_bytes
        while True:
            try:
                data, same = self._read_new(fd, bufsize)
            except OSError as exc:
                metrics.FILE_ERRORS.labels(self._label, open_error_reason(exc)).inc()
                raise SourceError(f"{self.name}: read failed at offset {self.read_pos}: {exc.strerror}") from exc
            # Each chunk is read first and the head looked at after (as _read_inline does): a rewrite
            # before or during the read shows there, and the chunk is dropped, never shipped.
            rewritten = "" if same else self._rewritten(fd, data)
            if rewritten:
                await self._start_over(fd, rewritten)
                continue  # the new content, from its start
            if not data:
                return
            offset = self._took(fd, data)
            await self._ship_chunk(data, offset)
            if len(data) < bufsize:
                return

    def _read_new(self, fd: int, size: int) -> tuple[bytes, bool]:
        """Up to `size` bytes at the read position, and True when the file's head was looked at after
        them and is the one last seen (else _rewritten must look). With the compiled reader that look
        is in the same call for a file whose fingerprint is complete: a line cost two preads, a CRC and
        two calls for it (issue 23). A fingerprint still growing is _rewritten's: the head it reads
        is the one the growth is taken from, so that a line costs two reads, not three. Nothing new,
        or a head whose hash differs (a fingerprint taken since, or a rewrite), is for _rewritten to
        decide."""
        pos = self.read_pos
        if _readat is None or self.fp_len != FINGERPRINT_BYTES or pos == 0:
            return os.pread(fd, size, pos), False
        data, hashed = _readat.read_new(fd, pos, size, FINGERPRINT_BYTES)
        return data, bool(data) and self._head_hash == (self.fp, hashed)

    def _rewritten(self, fd: int, data: bytes) -> str:
        """Why the file was rewritten from the start under us, or "" (it was not); `data`: what was just
        read at the read position (its end is a size the file has at least; nothing read, fstat says)."""
        size = self.read_pos + len(data) if data else os.fstat(fd).st_size
        if size < self.read_pos:
            return f"was truncated (size {size} < offset {self.read_pos}): copytruncate?"
        if size > self.read_pos > 0 and self.fp_len:
            # Truncated and at once written past the old offset: only its first bytes tell. A head
            # still growing is read as far as _took grows the fingerprint next (one read, not two).
            head = os.pread(fd, max(self.fp_len, min(size, FINGERPRINT_BYTES)), 0)
            self._head = head if self.fp_len < FINGERPRINT_BYTES else None
            if not self._same_head(head[:self.fp_len]):
                return "was truncated and written again (its first bytes changed)"
        return ""

    def _same_head(self, head: bytes) -> bool:
        """`head` (the file's first fp_len bytes now) is what the fingerprint was taken of. Checked at
        every read: a cheap hash of the head (head_hash) decides when it matches the one taken of the
        same head that matched the fingerprint last time; any other case (a new fingerprint, a hash
        that differs) is decided by the fingerprint itself, so the hash never finds a rewrite that is
        not one."""
        hashed = head_hash(head)
        if self._head_hash == (self.fp, hashed):
            return True
        if fingerprint_of(head) != self.fp:
            return False
        self._head_hash = (self.fp, hashed)
        return True

    def _took(self, fd: int, data: bytes) -> int:
        """`data` was read at the read position: the position moves past it; returns where it began.
        The file's first bytes decide its encoding; within its first FINGERPRINT_BYTES the fingerprint
        grows with the file (the more of the head it covers, the surer a reused inode, a rewrite or a
        compressed copy is told apart), and the registry hears of it now, not at the next
        acknowledgement."""
        offset = self.read_pos
        end = offset + len(data)
        grown = None
        if self.fp_len < FINGERPRINT_BYTES and end > self.fp_len:
            want = min(end, FINGERPRINT_BYTES)
            head = data if offset == 0 else self._head  # (the head _rewritten read just before)
            if head is None or len(head) < want:
                head = os.pread(fd, want, 0)
            head = head[:want]
            grown = (fingerprint_of(head), len(head))
            # The hash of the head the new fingerprint is of: the next read's look at the head
            # (_same_head) compares with it, instead of taking the fingerprint of the head again.
            self._head_hash = (grown[0], head_hash(head))
        self._head = None
        if not self.encoding:
            self._resolve_encoding(os.pread(fd, 4, 0))
        # Nothing below raises: the position never moves past bytes that are then not shipped.
        self.read_pos = end
        self._last_growth = time.monotonic()
        self._budget.touch(self)
        if grown is not None:
            self.fp, self.fp_len = grown
            self._registry.update(self.dev, self.ino, self.path, self.acked, self.fp, self.fp_len,
                                  key=self.reg_key or None)
        return offset

    async def _start_over(self, fd: int, why: str) -> None:
        """The file was rewritten from the start under us: read it again from offset 0. What is
        in flight from the old content is still delivered, but no longer moves the offset."""
        log.warning("%s %s; reading it again from offset 0", self.name, why)
        metrics.ROTATIONS.labels(self._label, "truncate").inc()
        await self._read_copy()
        if self._events is not None and self._events.pending_start is not None:
            await self._ship(self._events.flush())
        if self._joiner is not None and self._joiner.holding:
            if self._joiner.holds_carried:
                self._carry_need, self._carry_mark = 0, True  # the carried line is sent here, cut
            await self._enqueue(self._build_records(self._joiner.flush()))
        if self._splitter.pending:
            # The old content ended inside a line: the start of a line whose end, if it was ever written,
            # is in no file (or starts the new content). Not shipped as a line; said and counted.
            log.warning("%s: the last %d bytes before the truncate were a line without its end; dropped",
                        self.name, self._splitter.pending)
            metrics.LOST_BYTES.labels("truncated_line").inc(self._splitter.pending)
        self.read_pos = self.acks.rewind(0)
        self._splitter.reset(0)
        if self._events is not None:
            self._events.reset()
        self._registry.remember_content(self.dev, self.ino, self.path, self.fp, self.fp_len)
        self.fp, self.fp_len = fingerprint(fd)
        self._registry.update(self.dev, self.ino, self.path, 0, self.fp, self.fp_len, key=self.reg_key or None)
        # New content from offset 0: a new uid, so that its lines' msgids are not the old content's;
        # on disk before any of its lines goes, or a kill -9 before the next flush would read them
        # again under the old uid (other msgids). One write per truncate.
        self._registry.new_content(self.reg_key)
        await self._registry.persist()

    async def _read_copy(self) -> None:
        """copytruncate copied the file before it truncated it: what this tailer had not read yet of the
        old content is in that copy (recovery.find_copy). It is read from this tailer's offset to its
        end, so only what the application wrote between the copy and the truncate is in no file. A copy
        that cannot be read is said and counted (logagent_files_lost_total{reason="unreadable_copy"})."""
        from logagent.sources.files.generations import (  # copies builds on this module
            CompressedSource,
            FdSource,
            Source,
        )

        where = await asyncio.to_thread(find_copy, self.path, self.fp, self.fp_len, self.read_pos,
                                        (self.dev, self.ino))
        if where is None:
            return
        start = self.read_pos
        source: Source | None = None
        try:
            fd, _ = open_checked(where, self.ctx.allowed, nofollow=True)  # judged like any file
            ext = compression_of(where)
            source = CompressedSource(fd, ext) if ext else FdSource(fd)
            if fingerprint_of(await asyncio.to_thread(source.read, self.fp_len, 0)) != self.fp:
                return  # renamed or replaced since it was found: not that copy any more
            while data := await asyncio.to_thread(source.read, self.opts.read_buffer_bytes, self.read_pos):
                offset = self.read_pos
                self.read_pos += len(data)
                await self._ship_chunk(data, offset)
        except (SourceError, OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
            log.warning("%s: its copy %s cannot be read from offset %d (%s): the lines it holds from there "
                        "are not shipped", self.name, display_name(where), self.read_pos, exc)
            metrics.FILES_LOST.labels("unreadable_copy").inc()
        finally:
            if source is not None:
                source.close()
        # A last line without its newline stays held: _start_over drops it as before (its end, if the
        # application wrote one, is at the start of the new content).
        log.info("%s: read %d bytes it had not read yet of its old content from its copy %s", self.name,
                 self.read_pos - start, display_name(where))

    def _refresh_fingerprint(self) -> None:
        """A file not read yet (it waits for the earlier file of its path) grows its fingerprint
        as it fills, so a restart can tell it from another file that reuses its inode."""
        if self.fp_len >= FINGERPRINT_BYTES or self.fd is None:
            return
        fp, fp_len = fingerprint(self.fd)
        if fp_len > self.fp_len:
            self.fp, self.fp_len = fp, fp_len
            self._registry.update(self.dev, self.ino, self.path, self.acked, fp, fp_len, key=self.reg_key or None)

    def check_name(self) -> None:
        """Notice when `path` no longer names our file (renamed, deleted, replaced). Cheap (one
        stat) and callable any time: by the read loop, the stat tick and inotify events."""
        if self.rotated or self.finished or self.dev == 0:
            return
        try:
            named: os.stat_result | None = os.stat(self.path)
        except FileNotFoundError:
            named = None
        except OSError:
            return
        if self._moved(named, os.fstat(self.fd) if self.fd is not None else None):
            self._rotated_now()

    def _moved(self, named: os.stat_result | None, st: os.stat_result | None) -> bool:
        """The path names another file, or none, or our file (`st`) has no name left."""
        if named is None or (named.st_dev, named.st_ino) != (self.dev, self.ino):
            return True
        return st is not None and st.st_nlink == 0

    def _rotated_now(self) -> None:
        self.rotated = True
        self._last_growth = time.monotonic()
        # The registry gets its fingerprint as it is now, before a recovery pass looks for
        # copies of it: a compressed copy of this file is then known for what it is.
        self._refresh_fingerprint()
        metrics.ROTATIONS.labels(self._label, "rename_or_delete").inc()
        log.info("%s was renamed or deleted; reading the old file to its end", self.name)
        self._on_rotated(self)
        self._schedule_protect()

    def _maybe_reopen(self) -> bool:
        """After close_idle (or while parked): reopen when the same file changed. When the name
        now points elsewhere, follow the file to where rotation renamed it and read it to its end.
        True when the tailer is finished (deleted, or replaced, while closed: nothing left to read)."""
        try:
            st = os.stat(self.path)
        except OSError:
            st = None
        try:
            if st is None or (st.st_dev, st.st_ino) != (self.dev, self.ino):
                raise FileReplaced(f"{self.name}: renamed or replaced while closed")
            if st.st_size != self.read_pos:
                self.open()
        except FileReplaced:
            moved = self._open_moved()
            if moved is None:
                return False  # found, but every descriptor is busy: the next tick tries again
            self.rotated = True
            self.finished = not moved
            if moved:
                self._last_growth = time.monotonic()
                metrics.ROTATIONS.labels(self._label, "rename_or_delete").inc()
            self._on_rotated(self)
        except SourceError as exc:
            log.debug("reopen deferred: %s", exc)
        return self.finished

    def _open_moved(self) -> bool | None:
        """The file was renamed while the agent held no descriptor on it: look for its inode in
        its folder, where rename rotation leaves it (app.log -> app.log.1), and reopen it there,
        so what was written before (or after) the rename is still read.
        True: reopened; False: not there (deleted, moved elsewhere, or another file with a reused
        inode); None: found, but every descriptor is busy."""
        try:
            with os.scandir(os.path.dirname(self.path) or ".") as entries:
                found = next((e.path for e in entries if e.inode() == self.ino), None)
        except OSError:
            return False
        if found is None:
            return False
        try:
            self.open(at=found)
        except SourceError:  # gone meanwhile, another file with a reused inode, or refused
            return False
        if self.fd is None:
            return None
        if os.fstat(self.fd).st_size < self.read_pos:  # truncated after the rename: nothing to add
            self._close_fd()
            return False
        log.info("%s was renamed to %s while closed; reading it to its end from offset %d",
                 self.name, display_name(found), self.read_pos)
        return True

    async def _finish_rotated(self) -> None:
        await self._flush_held()
        if self.owes:
            await self.protect()  # until Kafka has it, the spool is its only copy once we close
        log.info("finished rotated file %s at offset %d", self.name, self.read_pos)
        self._close_fd()
        self.finished = self.complete = True
        self.reading_done.set()
        self.ctx.claims.release(self)
        self._done_if_acknowledged()
