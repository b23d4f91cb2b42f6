"""The spool: a crash-safe copy of what rotation took away before Kafka had it.

While the agent holds a rotated file open, its bytes are safe: the descriptor reads them
even after the file is unlinked. A kill -9, an upgrade or a SIGTERM during a Kafka
outage gives the descriptor up; if logrotate compressed or deleted the file meanwhile,
the lines Kafka never acknowledged would be gone. So when a collected file is renamed or
deleted while some of its bytes are not acknowledged, those bytes are copied here from
the open descriptor first.

Layout: `<data_dir>/spool/<uid>/` per file (uid: device, inode and first-seen time, so a
reused inode never mixes two files), holding `meta.json` (the name it was collected under
and its identity) and segments named `<start>-<end>.seg` with the file's bytes
[start, end). A segment is written to `.tmp`, fsynced, renamed, and the folder fsynced:
after a kill -9 at any instant a segment is whole or absent, and a `.tmp` is deleted
unread at the next start. Segments wholly below the acknowledged offset are deleted; the
folder goes once the file is acknowledged to its end (each once registry.json has that offset:
the caller asks Registry.when_saved, so a restart never looks for bytes already deleted).

`[agent] spool_max_bytes` bounds the whole spool. When a copy does not fit, the part that
fits is kept, the rest is refused: the agent logs it at ERROR (at most once a minute),
counts its lines and bytes (`logagent_spool_refused_*`), and keeps reading the file
through its descriptor. Those lines are lost only if the agent stops before Kafka takes them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from logagent.runtime import metrics
from logagent.runtime.names import display_name, from_display, is_raw, wire_name

log = logging.getLogger("logagent.spool")

CHUNK = 1024 * 1024
T = TypeVar("T")
_SEGMENT = re.compile(r"^(\d{20})-(\d{20})\.seg$")


@dataclass
class Segment:
    start: int
    end: int
    path: Path


@dataclass
class SpoolFile:
    """The spooled bytes of one file."""

    uid: str
    folder: Path
    path: str  # the name it was collected under
    dev: int
    ino: int
    fp: str
    fp_len: int
    since: float
    mtime: float = 0.0  # the file's last change as the last copy saw it (orders generations)
    segments: list[Segment] = field(default_factory=list)
    dropped: bool = False  # acknowledged to its end: a copy still being written is deleted, not kept

    @property
    def nbytes(self) -> int:
        return sum(s.end - s.start for s in self.segments)

    def covered(self, offset: int) -> int:
        """The end of the bytes held without a gap from `offset` on (`offset` when none)."""
        end = offset
        for seg in sorted(self.segments, key=lambda s: s.start):
            if seg.start <= end < seg.end:
                end = seg.end
        return end

    def read(self, size: int, offset: int) -> bytes:
        """Up to `size` bytes at file offset `offset`; b"" where no segment holds it."""
        for seg in self.segments:
            if seg.start <= offset < seg.end:
                with open(seg.path, "rb") as f:
                    f.seek(offset - seg.start)
                    return f.read(min(size, seg.end - offset))
        return b""


class Spool:
    """All spooled files under `<data_dir>/spool`, within `max_bytes`."""

    def __init__(self, data_dir: Path, max_bytes: int) -> None:
        self.root = Path(data_dir) / "spool"
        self.max_bytes = max_bytes
        self.files: dict[str, SpoolFile] = {}
        self._used = 0
        self._reserved = 0
        self._refused_logged = -1e9
        self._locks: dict[str, asyncio.Lock] = {}
        self._writing: dict[str, SpoolFile] = {}  # files whose copy is being written (not in `files` yet)
        self._executor: ThreadPoolExecutor | None = None

    async def _in_thread(self, func: Callable[..., T], *args: Any) -> T:
        """Spool I/O (writes and their fsyncs) in a thread of its own: on a busy disk an fsync takes
        long, and the default pool also carries the registry's writes that new files wait for."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(func, *args))

    def close(self) -> None:
        """Stop the spool's thread (after the last copy)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    # ---- start

    def load(self) -> None:
        """Index what a previous run left; delete half-written segments and unusable folders."""
        try:
            folders = [p for p in self.root.iterdir() if p.is_dir()]
        except FileNotFoundError:
            return
        except OSError as exc:
            log.error("spool %s unreadable (%s); starting without it", self.root, exc)
            return
        for folder in folders:
            try:
                meta = json.loads((folder / "meta.json").read_bytes())
                path = from_display(meta["path"]) if meta.get("raw") else meta["path"]
                spooled = SpoolFile(folder.name, folder, path, int(meta["dev"]), int(meta["ino"]),
                                    str(meta["fp"]), int(meta["fp_len"]), float(meta["since"]),
                                    float(meta.get("mtime", 0.0)))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("spool folder %s has no usable meta.json (%s); removed", folder, exc)
                shutil.rmtree(folder, ignore_errors=True)
                continue
            for item in folder.iterdir():
                match = _SEGMENT.match(item.name)
                if match:
                    spooled.segments.append(Segment(int(match.group(1)), int(match.group(2)), item))
                elif item.name != "meta.json":
                    item.unlink(missing_ok=True)  # a segment a crash left half-written: never read
            spooled.segments.sort(key=lambda s: s.start)
            self.files[spooled.uid] = spooled
            self._used += spooled.nbytes
        self._gauges()
        if self.files:
            log.info("spool: %d file(s), %d bytes kept from before the restart", len(self.files), self._used)

    def keep_only(self, live: set[str]) -> None:
        """At start: drop spool folders no registry entry still needs (their file was acknowledged
        to its end, or forgotten)."""
        for uid in [u for u in self.files if u not in live]:
            log.info("spool: %s is no longer needed; removed", uid)
            self.drop(uid)

    def _gauges(self) -> None:
        metrics.SPOOL_BYTES.set(self._used)
        metrics.SPOOL_FILES.set(len(self.files))

    def get(self, uid: str) -> SpoolFile | None:
        return self.files.get(uid)

    # ---- copying

    async def copy(self, spooled: SpoolFile, fd: int, start: int, end: int) -> int:
        """Copy the file's bytes [start, end) from its open descriptor into a new segment (in a
        thread). Returns where the copy ends: `end`, or less when the spool is full (the refused
        rest is logged and counted)."""
        if end <= start:
            return start
        lock = self._locks.setdefault(spooled.uid, asyncio.Lock())
        async with lock:
            room = max(0, self.max_bytes - self._used - self._reserved)
            keep_end = start + min(end - start, room)
            if keep_end < end:
                # Keep whole lines only: a cut line in the spool would be shipped as a line of its own.
                keep_end = await self._in_thread(_line_start, fd, start, keep_end)
                await self._refuse(spooled, fd, keep_end, end)
            if keep_end <= start:
                return start
            self._reserved += keep_end - start
            self._writing[spooled.uid] = spooled
            try:
                segment = await self._in_thread(self._write, spooled, fd, start, keep_end)
            except OSError as exc:
                log.error("spool: cannot copy %s [%d, %d) to %s: %s", display_name(spooled.path), start,
                          keep_end, spooled.folder, exc.strerror or exc)
                metrics.REGISTRY_ERRORS.inc()
                return start
            finally:
                self._reserved -= keep_end - start
                self._writing.pop(spooled.uid, None)
            if spooled.dropped:
                # Kafka acknowledged the file to its end while this segment was written (drop() found
                # nothing registered yet): kept, it would stay on disk and here until the next start.
                await self._in_thread(shutil.rmtree, spooled.folder, True)
                return keep_end
            spooled.segments.append(segment)
            self.files[spooled.uid] = spooled
            self._used += segment.end - segment.start
            metrics.SPOOL_WRITTEN.inc(segment.end - segment.start)
            self._gauges()
            return keep_end

    def _write(self, spooled: SpoolFile, fd: int, start: int, end: int) -> Segment:
        """The crash-safe segment write (worker thread); raises OSError."""
        folder = spooled.folder
        if not (folder / "meta.json").exists():
            folder.mkdir(parents=True, exist_ok=True)
            self._write_meta(spooled)
        name = f"{start:020d}-{end:020d}"
        tmp, final = folder / f"{name}.tmp", folder / f"{name}.seg"
        with open(tmp, "wb") as out:
            pos = start
            while pos < end:
                data = os.pread(fd, min(CHUNK, end - pos), pos)
                if not data:
                    break  # the file is shorter than we were told: keep what is there
                out.write(data)
                pos += len(data)
            out.flush()
            os.fsync(out.fileno())
        if pos < end:
            final = folder / f"{start:020d}-{pos:020d}.seg"
        os.replace(tmp, final)
        _fsync_dir(folder)
        return Segment(start, pos, final)

    def _write_meta(self, spooled: SpoolFile) -> None:
        meta = {"path": wire_name(spooled.path), "raw": is_raw(spooled.path), "dev": spooled.dev,
                "ino": spooled.ino, "fp": spooled.fp, "fp_len": spooled.fp_len, "since": spooled.since,
                "mtime": spooled.mtime}
        tmp = spooled.folder / "meta.json.tmp"
        with open(tmp, "wb") as out:
            out.write(json.dumps(meta).encode())
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, spooled.folder / "meta.json")
        _fsync_dir(spooled.folder)
        _fsync_dir(self.root)

    async def _refuse(self, spooled: SpoolFile, fd: int, start: int, end: int) -> None:
        lines = await self._in_thread(_count_lines, fd, start, end)
        metrics.SPOOL_REFUSED_BYTES.inc(end - start)
        metrics.SPOOL_REFUSED_LINES.inc(lines)
        now = time.monotonic()
        if now - self._refused_logged >= 60.0:
            self._refused_logged = now
            log.error("spool full ([agent] spool_max_bytes = %d, %d in use): %d line(s) (%d bytes) of %s that "
                      "rotation took away are not kept; they are lost if the agent stops before Kafka takes "
                      "them", self.max_bytes, self._used, lines, end - start, display_name(spooled.path))

    # ---- releasing

    def release(self, uid: str, acked: int) -> None:
        """Delete the segments wholly below the acknowledged offset."""
        spooled = self.files.get(uid)
        if spooled is None:
            return
        keep = []
        for seg in spooled.segments:
            if seg.end <= acked:
                seg.path.unlink(missing_ok=True)
                self._used -= seg.end - seg.start
            else:
                keep.append(seg)
        spooled.segments = keep
        self._gauges()

    def drop(self, uid: str) -> None:
        """The file is acknowledged to its end: its folder goes (a copy being written for it now
        deletes what it wrote when it ends)."""
        writing = self._writing.get(uid)
        if writing is not None:
            writing.dropped = True
        spooled = self.files.pop(uid, None)
        if spooled is None:
            return
        spooled.dropped = True
        self._used -= spooled.nbytes
        self._locks.pop(uid, None)
        shutil.rmtree(spooled.folder, ignore_errors=True)
        self._gauges()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _line_start(fd: int, start: int, end: int) -> int:
    """The offset just after the last newline in the file's bytes [start, end); `start` if none."""
    pos = end
    while pos > start:
        size = min(CHUNK, pos - start)
        data = os.pread(fd, size, pos - size)
        nl = data.rfind(b"\n")
        if nl >= 0:
            return pos - size + nl + 1
        pos -= size
    return start


def _count_lines(fd: int, start: int, end: int) -> int:
    """Newlines in the file's bytes [start, end) (plus a last line without one)."""
    count, pos, last = 0, start, b"\n"
    while pos < end:
        data = os.pread(fd, min(CHUNK, end - pos), pos)
        if not data:
            break
        count += data.count(b"\n")
        last = data[-1:]
        pos += len(data)
    return count + (0 if last == b"\n" else 1)
