"""Reading an earlier generation of a path: a rotated file found again, its spool copy, or a
plain or compressed copy (see recovery.plan). A `CopyTailer` reads it from its acknowledged
offset to its end, under the path it was collected under (same `path` in the messages, same
key, so the same partition and order), after the generation before it and before the next.
When Kafka has acknowledged it to its end, its registry entry is marked done (and kept: a copy
read once is known by its first bytes and never read again) and its spool copy deleted. A
generation that cannot be read, or whose copy ends before the bytes the agent knew it had, is
said at WARNING and counted (`logagent_files_lost_total`, `logagent_bytes_lost_total`).

Each generation moves an entry of its own. A (device, inode) key names a file only while that
file exists: one read from the spool or a compressed copy is gone, and its inode number may be
given to a new file (the live one, or a rotated one never seen), so its entry is moved under its
uid (Registry.archive); one never seen takes its (device, inode) key only once an entry of an
earlier file with that number is out of the way. Two files' offsets never share an entry."""

from __future__ import annotations

import asyncio
import logging
import lzma
import os
import zlib
from collections.abc import Callable
from typing import IO, Protocol

from logagent.errors import NotAllowed, SourceError
from logagent.pipeline.batch import Batch
from logagent.runtime import metrics
from logagent.runtime.names import display_name
from logagent.sources.files.opener import open_checked
from logagent.sources.files.recovery import COMPRESSED, Generation, compressed_since, compression_of
from logagent.sources.files.registry import fingerprint_of, identity_key, uid_of
from logagent.sources.files.shipper import Route, Shipper, SourceSpec, TailContext
from logagent.sources.files.spool import SpoolFile

log = logging.getLogger("logagent.copies")


class Source(Protocol):
    def read(self, size: int, offset: int) -> bytes:
        """Up to `size` bytes at file offset `offset`; b"" past its end."""

    def close(self) -> None: ...


class FdSource:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read(self, size: int, offset: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def close(self) -> None:
        os.close(self.fd)


class SpoolSource:
    def __init__(self, spooled: SpoolFile) -> None:
        self.spooled = spooled

    def read(self, size: int, offset: int) -> bytes:
        return self.spooled.read(size, offset)

    def close(self) -> None:
        pass


class CompressedSource:
    """A gzip/bz2/xz copy read at offsets of the original (seeking decompresses up to there). A copy
    cut short or corrupt gives what decompresses before the damage, and then raises."""

    def __init__(self, fd: int, ext: str) -> None:
        """Reads the copy open on `fd` (owned from now on), compressed as its extension `ext` says."""
        os.lseek(fd, 0, os.SEEK_SET)  # from its start, whatever read the descriptor (or a dup of it) before
        self._raw = os.fdopen(fd, "rb")
        self._f: IO[bytes] = COMPRESSED[ext](self._raw)
        self._pos = 0
        self._damage: Exception | None = None  # met after the bytes the last read returned

    def read(self, size: int, offset: int) -> bytes:
        if self._damage is not None and offset == self._pos:
            raise self._damage
        if offset != self._pos:
            self._f.seek(offset)
        parts: list[bytes] = []
        got = 0
        try:
            while got < size:
                chunk = self._f.read1(size - got)  # type: ignore[attr-defined]  # GzipFile, BZ2File, LZMAFile
                if not chunk:
                    break
                parts.append(chunk)
                got += len(chunk)
        except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
            if not parts:
                raise
            self._damage = exc
        self._pos = offset + got
        return b"".join(parts)

    def close(self) -> None:
        try:
            self._f.close()
        finally:
            self._raw.close()


def open_copy(gen: Generation, allowed: Callable[[str], bool]) -> tuple[int, os.stat_result]:
    """Open the file of a generation ("file", "copy", "compressed") by its identity: under its name, or
    under the name rotation gave it since it was found (logrotate renumbers app.log.2.gz to app.log.3.gz,
    renames app.log.1 to app.log.2, while the agent starts: a name alone could be another generation's).
    Its first bytes (decompressed, for a compressed copy) must still be the generation's. Raises
    SourceError when it is gone or changed."""
    def at(name: str) -> tuple[int, os.stat_result] | None:
        try:
            fd, st = open_checked(name, allowed, nofollow=True)  # judged like any file
        except NotAllowed:
            raise
        except SourceError:
            return None
        if (st.st_dev, st.st_ino) == (gen.dev, gen.ino):
            return fd, st
        os.close(fd)
        return None

    opened = at(gen.where)
    if opened is None:
        try:
            with os.scandir(os.path.dirname(gen.where) or ".") as entries:
                moved = next((e.path for e in entries if e.inode() == gen.ino), None)
        except OSError:
            moved = None
        opened = at(moved) if moved is not None else None
        if opened is None:
            raise SourceError(f"{display_name(gen.where)}: gone or replaced since it was found")
    fd, st = opened
    try:
        ext = compression_of(gen.where) if gen.kind == "compressed" else ""
        if ext:
            probe = CompressedSource(os.dup(fd), ext)
            try:
                head = probe.read(gen.fp_len, 0)
            finally:
                probe.close()
        else:
            head = os.pread(fd, gen.fp_len, 0)
        if fingerprint_of(head) != gen.fp:
            raise SourceError(f"{display_name(gen.where)}: its first bytes changed since it was found")
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
        os.close(fd)
        raise SourceError(f"{display_name(gen.where)}: cannot read: {exc}") from exc
    except BaseException:
        os.close(fd)
        raise
    return fd, st


class CopyTailer(Shipper):
    """Reads one earlier generation to its end, then finishes."""

    __slots__ = ("gen", "fd", "_sources", "_claimed", "_unsaved")

    def __init__(self, path: str, route: Route, ctx: TailContext, spec: SourceSpec | None, gen: Generation,
                 after: Shipper | None = None, first_seen: float | None = None) -> None:
        super().__init__(path, route, ctx, spec)
        self.gen = gen
        self.after = after
        self.dev, self.ino, self.fp, self.fp_len = gen.dev, gen.ino, gen.fp, gen.fp_len
        self.read_pos = self.acks.rewind(gen.start)
        self._splitter.reset(gen.start)
        self._sources: list[tuple[str, Source]] = []
        self._claimed = False
        self._unsaved = gen.key is None
        if gen.key is None:  # never seen: from now on the registry knows it
            if self._registry.lookup(gen.dev, gen.ino) is not None:
                self._registry.archive(gen.dev, gen.ino)  # an older file's entry, whose inode number this one got
            self.reg_key = self._registry.update(gen.dev, gen.ino, path, 0, gen.fp, gen.fp_len, since=first_seen)
        else:
            self.reg_key = self._key_now(gen)
            self.carry_sent = gen.start > 0 and self._registry.joined(self.reg_key)
        ctx.registry.own(self.reg_key)  # no other recovery pass of this process plans it again
        if gen.kind != "file":
            self._leave_identity()

    def _key_now(self, gen: Generation) -> str:
        """A known generation's key: the planned one, or its uid if its entry was archived since."""
        assert gen.key is not None
        return self._registry.current_key(gen.key, uid_of(gen.dev, gen.ino, gen.since))

    def _leave_identity(self) -> None:
        """Read from the spool or a compressed copy: the file is gone and its inode number free for
        another file, so the entry moves under its uid (not after the other file has taken it)."""
        entry = self._registry.get(self.reg_key)
        if self.reg_key != identity_key(self.dev, self.ino) or entry is None or entry.done:
            return
        self.ctx.registry.disown(self.reg_key)
        self._registry.archive(self.dev, self.ino)
        self.reg_key = entry.uid
        self.ctx.registry.own(self.reg_key)

    def open(self) -> None:
        """Open the generation's sources, or those of an alternative holding the same bytes (the
        rotated file may have been compressed and unlinked since it was found), or else of the
        compressed copy made of it since (found by its first bytes: it was planned before that copy
        existed); raises SourceError when none can be read. Opening it here, not at a later scan,
        keeps it in its place in the path's chain of files, before the newer ones."""
        options = [self.gen, *self.gen.alternatives]
        for i, option in enumerate(options):
            try:
                gen: Generation | None = option
                while gen is not None:
                    self._sources.append((gen.kind, self._open(gen)))
                    gen = gen.then
                if option is not self.gen:
                    self._read_instead(option)
                return
            except SourceError:
                self._close_sources()
                if i < len(options) - 1:
                    continue
                since = compressed_since(self.gen, os.path.basename(self.path))
                if since is None:
                    raise
                self._sources.append((since.kind, self._open(since)))
                self._read_instead(since)

    def _read_instead(self, option: Generation) -> None:
        log.info("%s: %s is gone; reading its copy %s instead", self.name,
                 display_name(self.gen.where), display_name(option.where))
        self.gen = option
        if option.kind != "file":
            self._leave_identity()

    def _open(self, gen: Generation) -> Source:
        if gen.kind in ("file", "copy"):
            fd, st = open_copy(gen, self.ctx.allowed)
            if self.ctx.claims.claim((st.st_dev, st.st_ino), self) is not None:
                os.close(fd)
                raise SourceError(f"{display_name(gen.where)}: read by another tailer already")
            self._claimed = True
            return FdSource(fd)
        if gen.kind == "spool":
            spooled = self.ctx.spool.get(gen.where) if self.ctx.spool is not None else None
            if spooled is None:
                raise SourceError(f"{self.name}: its spool copy is gone")
            return SpoolSource(spooled)
        fd, _ = open_copy(gen, self.ctx.allowed)
        try:
            return CompressedSource(fd, compression_of(gen.where))
        except (OSError, ValueError) as exc:
            raise SourceError(f"{display_name(gen.where)}: cannot open: {exc}") from exc

    def _where(self) -> str:
        return "the spool" if self.gen.kind == "spool" else display_name(self.gen.where)

    def _source(self) -> str:
        return f"earlier file ({self.gen.kind}: {self._where()})"

    def describe(self) -> str:
        kinds = " then ".join(kind for kind, _ in self._sources) or self.gen.kind
        return f"an earlier file of {self.name} ({kinds}: {self._where()}) from offset {self.gen.start}"

    async def run(self) -> None:
        await self._prepared()
        # A generation never seen got its entry, and with it its uid (in every msgid), from this
        # process: on disk before any of its lines goes, or a crash before the next flush would
        # find it never seen again, and send its lines again under other msgids. Written while
        # the earlier generation is read.
        durable = asyncio.ensure_future(self._registry.persist()) if self._unsaved else None
        self._unsaved = False
        if self.after is not None:
            await self.after.reading_done.wait()
        if durable is not None:
            await durable
            durable = None  # a finished task kept in this frame for the file's life: ~1 KiB a file
        try:
            if not self._sources and not self.finished:
                self.open()
            log.info("reading %s before its newer lines", self.describe())
            metrics.RECOVERED_FILES.labels(self.gen.kind).inc()
            await self._read_all()
        except SourceError as exc:
            self.give_up(exc)
            return
        await self._flush_held()
        self._check_length()
        self.complete = True
        self.reading_done.set()  # the next generation may start; this one waits for its acks
        while not self._done_if_acknowledged():
            self._wake.clear()
            if self.acks.failed is not None:  # a batch was refused after all: read again from there
                await self._rewind_after_failure()
                try:
                    await self._read_all()
                except SourceError as exc:
                    self.give_up(exc)
                    return
                await self._flush_held()
                continue
            await self._wake.wait()
        self.finished = True
        self._close_sources()
        log.info("finished the earlier file of %s at offset %d", self.name, self.read_pos)

    async def _read_all(self) -> None:
        bufsize = self.opts.read_buffer_bytes
        index = 0
        while index < len(self._sources):
            if self.acks.failed is not None:
                await self._rewind_after_failure()
                index = 0
            _, source = self._sources[index]
            try:
                data = await asyncio.to_thread(source.read, bufsize, self.read_pos) \
                    if isinstance(source, CompressedSource) else source.read(bufsize, self.read_pos)
            except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
                raise SourceError(f"{self.name}: reading its earlier file failed at offset "
                                  f"{self.read_pos}: {exc}") from exc
            if not data:
                index += 1  # this copy ends here: the next one goes on from the same offset
                continue
            if not self.encoding:
                self._resolve_encoding(source.read(4, 0) if self.read_pos else data[:4])
            offset = self.read_pos
            self.read_pos += len(data)
            await self._ship_chunk(data, offset)

    def give_up(self, exc: SourceError) -> None:
        """This generation cannot be read (to its end): said at WARNING with the path and counted. Its
        registry entry stays as it is: the next start tries again (and counts again if it fails)."""
        at_stake = max(0, self.gen.size - self.read_pos)
        log.warning("%s: an earlier file of this name cannot be read from offset %d (%s); its lines from there "
                    "are not shipped%s; the next start tries again", self.name, self.read_pos, exc,
                    f" ({at_stake} bytes known)" if at_stake else "")
        metrics.FILES_LOST.labels("unreadable_copy").inc()
        metrics.LOST_BYTES.labels("unreadable_copy").inc(at_stake)
        self._end(keep=True)  # not planned again by this process: tried again at the next start

    def _check_length(self) -> None:
        """Read to its end: a copy that ends before the size the agent knew the file had lacks the rest
        (a spool that was full, a copy cut short). Said and counted, never silent."""
        if self.gen.size > self.read_pos:
            log.warning("%s: its earlier file ends at offset %d in %s, but the agent knew it had %d bytes: "
                        "%d bytes are lost", self.name, self.read_pos, self.describe(), self.gen.size,
                        self.gen.size - self.read_pos)
            metrics.LOST_BYTES.labels("incomplete_copy").inc(self.gen.size - self.read_pos)

    def batch_done(self, batch: Batch) -> None:
        super().batch_done(batch)
        if not self.finished:
            self.wake()

    def _close_sources(self) -> None:
        sources, self._sources = self._sources, []
        for _, src in sources:
            try:
                src.close()
            except OSError:
                pass
        if self._claimed:
            self._claimed = False
            self.ctx.claims.release(self)

    def close(self) -> None:
        """Stopped for good (its entry removed, the agent stopping): read to its end, it stays ours
        until Kafka has it all; stopped before, it is the next plan's to read from its acknowledged offset."""
        self._end(keep=self.complete)

    def _end(self, keep: bool) -> None:
        self._close_sources()
        self.finished = True
        self.reading_done.set()
        if not keep:
            self._registry.disown(self.reg_key)
