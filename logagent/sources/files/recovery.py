"""Finding what rotation took away while the agent was not reading a path.

Before a path's current file is read (at start, or when the agent finds that it missed a
rotation), `plan()` lists the earlier generations of that path that still hold unread
lines, oldest first, and where each one is now:

- a file the registry knows (by device and inode, its fingerprint checked) that is no
  longer at the path and not finished: found in the path's folder under any name
  (app.log.1, app.log-20261129), or in the spool, or as a copy whose first bytes match its
  fingerprint: plain (copytruncate's app.log.1, which goes on past the saved offset) or
  compressed (app.log.2.gz, .bz2, .xz, matched on its decompressed first bytes). Its inode
  number proves nothing once the file is gone: rotation frees inodes and a new file (even
  the one now at the path) gets the same number, so a known file not at its inode any more
  is kept under its uid (`Registry.archive`), and a tailer holding that inode number is
  taken for this file only while the entry was not archived;
- when the path now holds a file the registry does not know (it was replaced), the
  rotated copies in its folder (`<name><sep><digits...>`, plain or compressed) that the
  agent never saw and that were written after the newest generation it knew was first
  seen: they were created and rotated away while the agent was down, or while it was
  stuck behind a Kafka outage. Copies of a file the agent knows (copytruncate keeps the
  path's file, compression copies a rotated one) are told by their first bytes and never
  taken for new generations (they would be read twice); a copy once read stays known as
  finished in the registry.

A plan only plans: `plan()` reads the registry, the folder and the spool, and returns a
`Plan`: the generations, and the steps that go with them, in order (an entry to move off a
reused inode number, an entry found nowhere to finish, a loss to say and count). `apply()`
carries the steps out (writes the registry, logs, counts) and hands back the generations.

Never silent: a known file found nowhere, whose lines written while the agent was down
are lost, is logged at WARNING with its path and counted in `logagent_files_lost_total
{reason="rotated_away"}`, with the bytes the agent knew it had past its acknowledged offset
in `logagent_bytes_lost_total{reason="rotated_away"}`; so is a file the registry saw only
empty (it has no fingerprint to be found by) that is gone from its folder. A rotated copy
that cannot be read is logged and counted (`reason="unreadable_copy"`).
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import logging
import lzma
import os
import re
import stat
import time
import zlib
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import IO, cast

from logagent.runtime import metrics
from logagent.runtime.names import display_name
from logagent.sources.files.registry import (
    FINGERPRINT_BYTES,
    KEEP_DONE_PER_PATH,
    Registry,
    RegistryEntry,
    fingerprint_of,
    identity_key,
)
from logagent.sources.files.spool import Spool

log = logging.getLogger("logagent.recovery")

COMPRESSED: dict[str, Callable[[IO[bytes]], IO[bytes]]] = {  # readers over an open file, by extension
    ".gz": lambda f: cast(IO[bytes], gzip.GzipFile(fileobj=f, mode="rb")), ".bz2": lambda f: bz2.BZ2File(f, "rb"),
    ".xz": lambda f: lzma.LZMAFile(f, "rb")}
_DECOMPRESSORS: dict[str, Callable[[], zlib._Decompress | bz2.BZ2Decompressor | lzma.LZMADecompressor]] = {
    ".gz": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS), ".bz2": bz2.BZ2Decompressor,
    ".xz": lzma.LZMADecompressor}
# `.backup`: logrotate's create found the path re-created by the application after its rename and
# moved that file to `<name>-YYYYMMDDHH.backup` (3.21 createOutputFile): one more generation.
_ROTATED = re.compile(r"^[.\-_]\d[\d.\-_]*?(\.backup)?(\.gz|\.bz2|\.xz)?$")
_ROTATED_FROM = re.compile(r"[.\-_](?=\d)")  # where a rotated name's suffix may begin (is_rotated_name)


def compression_of(name: str) -> str:
    """'.gz', '.bz2', '.xz' for a compressed copy we can read, else ''."""
    for ext in COMPRESSED:
        if name.endswith(ext):
            return ext
    return ""


def is_rotated_name(name: str, base: str) -> bool:
    """app.log.1, app.log.2.gz, app.log-20261129, app.log-20261129.gz, app.log_1,
    app.log-2026120603.backup ... for base app.log."""
    return name.startswith(base) and name != base and _ROTATED.match(name[len(base):]) is not None


@dataclass
class Generation:
    """One earlier generation of a path to read before its current file."""

    kind: str  # "file" (found by inode), "copy" (a plain copy found by fingerprint), "spool", "compressed"
    where: str  # the file's name now, or the spool uid
    start: int  # the offset to read from
    mtime: float
    dev: int  # of the file read (its copy, for "copy" and "compressed"); of the generation for "spool"
    ino: int
    fp: str
    fp_len: int
    key: str | None  # its registry key; None for a generation the agent never saw
    since: float = 0.0
    size: int = 0  # bytes the agent knew the generation had: a copy that ends before lost the rest
    then: Generation | None = None  # where to go on past the end of a spool copy
    alternatives: list[Generation] = field(default_factory=list)  # the same bytes elsewhere, should
    # opening this one fail (logrotate compresses and unlinks app.log.1 while we look)


@dataclass(frozen=True)
class Archive:
    """Step: a file's entry moves off its (device, inode) key to its uid (a new file has that inode number)."""

    dev: int
    ino: int


@dataclass(frozen=True)
class Finish:
    """Step: an entry is done: its file is found nowhere (and is said lost beside it)."""

    key: str


@dataclass(frozen=True)
class Lost:
    """Step: what cannot be recovered, said at WARNING and counted."""

    reason: str  # the metric's reason: rotated_away, unreadable_copy
    message: str  # the WARNING, names escaped
    files: int = 1
    at_stake: int = 0  # bytes the agent knew of (logagent_bytes_lost_total)


Step = Archive | Finish | Lost


@dataclass
class Plan:
    """What recovery found for a path: the generations to read, oldest first, and the steps that go
    with them, in the order they are to be taken."""

    generations: list[Generation] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    # Generations never seen that were written after the current file: rotation went on between
    # its tailer's open and the listing (see _around_current). Read after it, oldest first.
    later: list[Generation] = field(default_factory=list)


def apply(plan: Plan, registry: Registry) -> list[Generation]:
    """Take a plan's steps in order (registry changes, WARNINGs, counts); its generations."""
    for step in plan.steps:
        if isinstance(step, Archive):
            registry.archive(step.dev, step.ino)
        elif isinstance(step, Finish):
            registry.mark_done(step.key)
        else:
            log.warning("%s", step.message)
            metrics.FILES_LOST.labels(step.reason).inc(step.files)
            metrics.LOST_BYTES.labels(step.reason).inc(step.at_stake)
    return plan.generations


# A folder's time stamps tick with the kernel's coarse clock (a few milliseconds): a change made in
# the same tick as a listing leaves them as they were. A listing taken this long after the folder's
# last change is renewed by any later change; one taken sooner is not trusted again.
QUIET_NS = 50_000_000


def settled(stamp: tuple[int, int]) -> bool:
    """The folder whose (mtime, ctime) this is last changed more than QUIET_NS ago: any later change
    moves its stamp. Else a change may come unseen, and the stamp does not say the folder is as it was."""
    return time.time_ns() - max(stamp) > QUIET_NS


LISTING_PASSES = 6  # readdirs of one listing, merged: at least two, more while renames run through them


Listing = list[tuple[str, os.stat_result]]  # (path, its stat) of the regular files of a folder


class FolderIndex:
    """One listing per folder per recovery pass: 10,000 files in one folder are listed once, while
    the folder does not change (a folder that just changed is listed at every look)."""

    def __init__(self) -> None:
        self._folders: dict[str, list[tuple[str, os.stat_result]]] = {}
        self._inodes: dict[str, dict[tuple[int, int], str]] = {}
        self._stamps: dict[str, tuple[int, int]] = {}
        self._settled: set[str] = set()  # folders listed at least QUIET_NS after their last change
        # folder -> (the listing it was made of, name it could be rotated from -> files): rotated()
        self._rotated: dict[str, tuple[Listing, dict[str, Listing]]] = {}

    def by_inode(self, folder: str) -> dict[tuple[int, int], str]:
        found = self._inodes.get(folder)
        if found is None:
            found = self._inodes[folder] = {(s.st_dev, s.st_ino): p for p, s in self.files(folder)}
        return found

    def rotated(self, folder: str, base: str) -> Listing:
        """The files of `folder` whose names are rotated names of `base` (is_rotated_name), through an
        index of the listing by the names its files could be rotated from: a plan per path walked
        the whole listing, and 100,000 new files in one folder (each planned, since files rotated
        before the agent looked are read) took minutes instead of seconds."""
        listing = self.files(folder)
        cached = self._rotated.get(folder)
        if cached is None or cached[0] is not listing:
            index: dict[str, Listing] = {}
            for p, s in listing:
                name = os.path.basename(p)
                for m in _ROTATED_FROM.finditer(name):
                    index.setdefault(name[: m.start()], []).append((p, s))
            cached = self._rotated[folder] = (listing, index)
        return [(p, s) for p, s in cached[1].get(base, ()) if is_rotated_name(os.path.basename(p), base)]

    def forget(self, folder: str) -> None:
        """The next look lists `folder` again."""
        self._folders.pop(folder, None)
        self._rotated.pop(folder, None)
        self._inodes.pop(folder, None)
        self._stamps.pop(folder, None)
        self._settled.discard(folder)

    def files(self, folder: str) -> list[tuple[str, os.stat_result]]:
        """The regular files of `folder`. Listed at least twice and merged, more while a pass sees a
        name change files under it: a readdir racing logrotate's renames (app.log.2.gz ->
        app.log.3.gz ...) can miss a file that moved during the listing."""
        try:
            st = os.stat(folder)
            stamp = (st.st_mtime_ns, st.st_ctime_ns)
        except OSError:
            stamp = (0, 0)
        found = self._folders.get(folder)
        if found is None or self._stamps.get(folder) != stamp or folder not in self._settled:
            # Listed again once the folder changes, or while it may have changed unseen (1 in 30 runs
            # of 20 files rotated every few milliseconds: a file renamed in the same tick as the last
            # listing was missing from it, and never read).
            self._stamps[folder] = stamp
            if settled(stamp):
                self._settled.add(folder)
            else:
                self._settled.discard(folder)
            self._inodes.pop(folder, None)
            merged: dict[tuple[str, int], tuple[str, os.stat_result]] = {}
            for n in range(LISTING_PASSES):
                moved = False
                try:
                    with os.scandir(folder) as it:
                        for entry in it:
                            try:
                                st = entry.stat(follow_symlinks=False)
                            except OSError:
                                moved = True  # gone between the readdir and the stat
                                continue
                            # The name led to another file by the time it was stat'ed: a rename ran
                            # through this pass, which may have missed the file it moved (logrotate's
                            # app.log.1 -> .2 while the current file became .1: that round was never
                            # read, 1 in ~120 churn runs under load).
                            moved = moved or st.st_ino != entry.inode()
                            if stat.S_ISREG(st.st_mode):
                                merged[(entry.path, st.st_ino)] = (entry.path, st)
                except OSError:
                    pass
                if n >= 1 and not moved:
                    break
            found = self._folders[folder] = list(merged.values())
        return found


class Relisted(Exception):
    """A name of the folder's listing leads to another file now: rotation renamed files since."""


Identities = AbstractSet[tuple[int, int]]


def _open_head(path: str, expect: Identities | None) -> int | None:
    """`path` opened to read its first bytes (never through a symlink); None when it cannot be.
    With `expect` (the (device, inode) the listing gave the name), raises Relisted when the name
    leads to another file now (its bytes would be taken for the listed file's), or to none (the
    file was said unreadable, and lost, while it had only moved)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        if expect is not None:
            raise Relisted(path) from None
        return None
    except OSError:
        return None
    if expect is not None:
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            return None
        if (st.st_dev, st.st_ino) not in expect:
            os.close(fd)
            raise Relisted(path)
    return fd


def _plain_head(path: str, length: int = FINGERPRINT_BYTES, expect: Identities | None = None) -> bytes | None:
    """The first bytes of a plain file; None when it cannot be read (see _open_head)."""
    fd = _open_head(path, expect)
    if fd is None:
        return None
    try:
        return os.pread(fd, length, 0)
    finally:
        os.close(fd)


def _plain_fp(path: str, length: int) -> str | None:
    head = _plain_head(path, length)
    return None if head is None else fingerprint_of(head)


def _compressed_head(path: str, ext: str, expect: Identities | None = None) -> bytes | None:
    """Up to FINGERPRINT_BYTES first decompressed bytes of a copy: fewer when that is all it holds yet
    (a copy still being written); None when it cannot be opened or is not in its format. Decompressed
    step by step, never more than needed (a small copy can expand to gigabytes). `expect`: see
    _open_head."""
    fd = _open_head(path, expect)
    if fd is None:
        return None
    out = b""
    dec = _DECOMPRESSORS[ext]()
    try:
        with os.fdopen(fd, "rb") as f:
            while len(out) < FINGERPRINT_BYTES:
                chunk = f.read(16384)
                if not chunk:
                    break
                out += dec.decompress(chunk, FINGERPRINT_BYTES - len(out))
                if getattr(dec, "eof", False):
                    break
    except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError):
        return None
    return out


def compressed_since(gen: Generation, base: str) -> Generation | None:
    """The compressed copy of a plain generation that was compressed and unlinked since it was found
    (the kubelet gzips 0.log.<time> to 0.log.<time>.gz once the next rotation comes; logrotate turns
    app.log.1 into app.log.2.gz): a rotated name of `base` in its folder whose first fp_len bytes,
    decompressed, have the generation's fingerprint. Read from the same offset; None when there is none."""
    if gen.kind not in ("file", "copy") or gen.fp_len <= 0 or gen.then is not None:
        return None
    folder = os.path.dirname(gen.where) or "."
    try:
        with os.scandir(folder) as entries:
            names = [e.name for e in entries if is_rotated_name(e.name, base) and compression_of(e.name)]
    except OSError:
        return None
    for name in sorted(names):
        where = os.path.join(folder, name)
        head = _compressed_head(where, compression_of(name))
        if head is None or len(head) < gen.fp_len or fingerprint_of(head[:gen.fp_len]) != gen.fp:
            continue
        try:
            st = os.stat(where, follow_symlinks=False)
        except OSError:
            continue
        return Generation("compressed", where, gen.start, st.st_mtime, st.st_dev, st.st_ino, gen.fp, gen.fp_len,
                          gen.key, gen.since, gen.size)
    return None


def find_copy(path: str, fp: str, fp_len: int, past: int, exclude: tuple[int, int]) -> str | None:
    """The copy of what the file at `path` held before it was truncated (copytruncate copies, then
    truncates): a rotated name in its folder whose first `fp_len` bytes (decompressed, for a compressed
    copy) have the fingerprint `fp`. The newest plain copy longer than `past` bytes, else the newest
    compressed one (logrotate without delaycompress compresses it at once); None when there is none.
    `exclude`: the (device, inode) of the truncated file itself."""
    if fp_len == 0:
        return None
    folder = os.path.dirname(path) or "."
    base = os.path.basename(path)
    rotated = [(p, s) for p, s in FolderIndex().files(folder)
               if (s.st_dev, s.st_ino) != exclude and is_rotated_name(os.path.basename(p), base)]
    for packed in (False, True):  # plain first: no decompressing when the copy is still plain
        found = []
        for p, s in rotated:
            ext = compression_of(p)
            if bool(ext) != packed or (not ext and s.st_size <= past):
                continue
            head = _compressed_head(p, ext) if ext else _plain_head(p, fp_len)
            if head is not None and len(head) >= fp_len and fingerprint_of(head[:fp_len]) == fp:
                found.append((s.st_mtime, p))
        if found:
            return max(found)[1]
    return None


def _no_head(dev: int, ino: int) -> bytes | None:
    return None


RELISTS = 3  # listings of a folder a plan tries while rotation renames files under it


def plan(path: str, registry: Registry, spool: Spool | None, held: Callable[[int, int], bool],
         folders: FolderIndex, owned: AbstractSet[str] = frozenset(),
         known: list[tuple[str, RegistryEntry]] | None = None,
         current: tuple[int, int] | None = None, unseen_since: float | None = None,
         head_held: Callable[[int, int], bytes | None] = _no_head) -> Plan:
    """_plan, on a listing of the folder whose names still lead to the files it listed when their
    first bytes are read. Rotation may rename them in between (logrotate's app.log.1 -> .2, then a
    new .1): the first bytes of another file were taken for a listed one's (a generation never seen
    got the current file's fingerprint, its copy was looked for by that, and its lines were lost: 1
    in 30 runs of 20 files rotated every few milliseconds). The folder is listed again, a few times;
    then the plan is made as before, unchecked."""
    folder = os.path.dirname(path) or "."
    for _ in range(RELISTS):
        try:
            return _plan(path, registry, spool, held, folders, owned, known, current, unseen_since, head_held, True)
        except Relisted as exc:
            log.debug("recovery of %s: %s was renamed since the folder was listed; listing it again",
                      display_name(path), display_name(str(exc)))
            folders.forget(folder)
    return _plan(path, registry, spool, held, folders, owned, known, current, unseen_since, head_held, False)


def _plan(path: str, registry: Registry, spool: Spool | None, held: Callable[[int, int], bool],
          folders: FolderIndex, owned: AbstractSet[str], known: list[tuple[str, RegistryEntry]] | None,
          current: tuple[int, int] | None, unseen_since: float | None,
          head_held: Callable[[int, int], bytes | None], checked: bool) -> Plan:
    """The earlier generations of `path` to read before its current file, oldest first, and the
    steps that go with them (see the module docstring: nothing is changed here). `held`:
    is a file (device, inode) open in a tailer now; `owned`: registry keys tailers of this process
    answer for (read, or reading, and waiting for Kafka): neither is planned again. `known`: the
    path's registry entries as they were before its current file was identified; `current`: the
    (device, inode) of the file a tailer opened at the path (else the path is looked at).
    `unseen_since`: for a path the registry has no entry of, the time since which its files are
    collected: rotated files of it written after that are generations never seen (a pod's 0.log
    renamed by the kubelet before the agent first looked at the path), else none are. `head_held`: the
    first bytes of a file (device, inode) a tailer of this process holds open, read through its
    descriptor, or None."""
    if known is None:
        known = registry.entries_for(path)
    steps: list[Step] = []
    if not known and unseen_since is None:
        return Plan()
    trusted = current is not None  # a tailer opened it and checked its fingerprint against the registry
    if current is None:
        try:
            st = os.stat(path)
            current = (st.st_dev, st.st_ino)
        except OSError:
            current = None
    # The snapshot's entries under the keys they have now (identifying the current file may have
    # archived an entry whose inode it reuses); ones dropped meanwhile are gone from the plan.
    def now_under(key: str, entry: RegistryEntry) -> str | None:
        live = registry.get(key)
        if live is not None and live.uid == entry.uid:
            return key
        return entry.uid if registry.get(entry.uid) is not None else None

    known = [(k, _spool_fingerprint(e, spool)) for k, e in ((now_under(k, e), e) for k, e in known) if k is not None]
    # A file the registry saw only empty has no fingerprint to tell it from a reused inode; nothing
    # of it was acknowledged, so whatever it holds now is looked for as a generation never seen.
    sure = [(k, e) for k, e in known if e.fp_len > 0]
    # Is the file at the path one the agent knew, by a fingerprint? Else files may have been created
    # and rotated away since (an inode alone proves nothing: rotation frees and reuses them).
    replaced = current is not None and not any(
        k == identity_key(*current) and (trusted or _plain_fp(path, e.fp_len) == e.fp) for k, e in sure)
    todo: list[tuple[str, RegistryEntry]] = []
    for key, entry in sure:
        if entry.done or key in owned or entry.uid in owned:
            continue
        archived = key != identity_key(entry.dev, entry.ino)  # another file took its inode number
        if (entry.dev, entry.ino) == current:
            if not archived and (trusted or _plain_fp(path, entry.fp_len) == entry.fp):
                continue  # still at its path: its own tailer reads it
            if not archived:
                steps.append(Archive(entry.dev, entry.ino))  # a new file reused its inode
            key, replaced = entry.uid, True
        elif not archived and held(entry.dev, entry.ino):
            continue  # a tailer of this process reads it (the holder of an archived entry's inode is another file)
        todo.append((key, entry))
    # Seen only empty, not finished, not the path's file: if it is gone it may have had lines (said below).
    blank = [(k, e) for k, e in known if e.fp_len == 0 and not e.done and k not in owned and e.uid not in owned
             and (e.dev, e.ino) != current and not held(e.dev, e.ino)]
    if not todo and not replaced and not blank:
        return Plan(steps=steps)  # the common case: the path still holds the file we know, nothing else owed
    folder = os.path.dirname(path) or "."
    base = os.path.basename(path)
    listing = folders.rotated(folder, base)  # the only files a plan looks at by name
    by_inode = folders.by_inode(folder)
    heads: dict[tuple[str, int, int], bytes | None] = {}

    def head_of(p: str, s: os.stat_result) -> bytes | None:
        """The first bytes of the file listed as `p` with `s`: of that file, not of another one the name
        leads to by now (a listing is two, merged, and each name stat'ed after it was read: one name
        can show twice, with two files)."""
        at = (p, s.st_dev, s.st_ino)
        if at not in heads:
            ext = compression_of(p)
            expect = {(s.st_dev, s.st_ino)} if checked else None
            heads[at] = _compressed_head(p, ext, expect) if ext else _plain_head(p, expect=expect)
        return heads[at]

    def copies_of(entry: RegistryEntry) -> list[tuple[str, str, os.stat_result]]:
        """(kind, name, stat) of the rotated copies whose first bytes are the entry's: plain ones
        (copytruncate's, long enough to go on past its offset; the longest first), then compressed."""
        plain: list[tuple[str, str, os.stat_result]] = []
        packed: list[tuple[str, str, os.stat_result]] = []
        for p, s in listing:
            if (s.st_dev, s.st_ino) == current or not is_rotated_name(os.path.basename(p), base):
                continue
            ext = compression_of(p)
            if not ext and ((s.st_dev, s.st_ino) == (entry.dev, entry.ino) or s.st_size < max(entry.offset,
                                                                                            entry.fp_len)):
                continue  # the file itself (found by its inode, not as a copy), or too short to go on
            head = head_of(p, s)
            if head is not None and len(head) >= entry.fp_len and fingerprint_of(head[: entry.fp_len]) == entry.fp:
                (packed if ext else plain).append(("compressed" if ext else "copy", p, s))
        plain.sort(key=lambda c: -c[2].st_size)
        return plain + packed

    found: list[Generation] = []
    for key, entry in todo:
        gen = _locate(key, entry, by_inode, spool, copies_of)
        if gen is None:
            unreadable = [os.path.basename(p) for p, s in listing
                          if is_rotated_name(os.path.basename(p), base) and compression_of(p) and head_of(p, s) is None]
            steps += [Finish(key), _lost(path, entry, unreadable)]
            continue
        if gen.kind != "file" and key == identity_key(entry.dev, entry.ino):
            # Not at its inode any more: its entry moves out of the way of the next file given that
            # inode number, which a tailer may open (and identify) while this generation is read.
            steps.append(Archive(entry.dev, entry.ino))
            _rekey(gen, entry.uid)
        found.append(gen)
    newest = _unseen_cut_off(known, identity_key(*current) if current is not None else None, unseen_since)
    later: list[Generation] = []
    unseen: list[Generation] = []
    if replaced:
        fps = {(e.fp, e.fp_len) for _, e in sure}
        # The current file's first bytes, through its tailer's descriptor: a copy of it is not an
        # earlier generation (it may have been renamed and compressed since its tailer opened it).
        mine = head_held(*current) if current is not None else None
        if mine:
            fps.add((fingerprint_of(mine), len(mine)))
        unseen = _unseen(path, newest, fps, listing, head_of, held, current, steps)
        before, later = _around_current(unseen, current, mine, listing, head_of, base)
        found.extend(before)
    read_whole = {(g.dev, g.ino) for g in unseen if g.kind == "file"}
    for key, entry in blank:
        if (entry.dev, entry.ino) in read_whole:
            steps.append(Finish(key))  # read as a file never seen, from its start
        elif (entry.dev, entry.ino) not in by_inode:
            steps.append(Finish(key))
            if not any(g.mtime > entry.since for g in unseen):  # else its lines are in a copy read above
                steps.append(_lost(path, entry, []))
    log.debug("recovery of %s: %d known, %d owed, current %s %s, newest seen %.3f, listing %d: %s, after it: %s",
              display_name(path), len(known), len(todo), current, "replaced" if replaced else "kept",
              newest, len(listing), [(g.kind, os.path.basename(g.where), g.start) for g in found],
              [(g.kind, os.path.basename(g.where)) for g in later])
    found.sort(key=lambda g: _written_order(g, base))
    later.sort(key=lambda g: _written_order(g, base))
    return Plan(found, steps, later)


def _spool_fingerprint(entry: RegistryEntry, spool: Spool | None) -> RegistryEntry:
    """An entry seen only empty whose file's bytes are in the spool (read, then rotated away, before a
    kill left the registry as it was): as the plan sees it, with the first bytes the spool copy was
    taken with. It is then read from there (going on in its copies), and its copies are known by
    them, not read again as files never seen."""
    spooled = spool.get(entry.uid) if spool is not None and entry.fp_len == 0 else None
    if spooled is None or spooled.fp_len == 0:
        return entry
    return dataclasses.replace(entry, fp=spooled.fp, fp_len=spooled.fp_len)


def _unseen_cut_off(known: list[tuple[str, RegistryEntry]], current_key: str | None,
                    unseen_since: float | None) -> float:
    """The time after which a rotated file of the path not known by its first bytes is a generation
    never seen (written while the path was collected), not history. A file never seen was written
    after the known file before it was first seen, which may be any known file: while the plan that
    read it is not on disk (a kill came first), or missed it (a compression racing its listing), it
    lies before a later file's first-seen time (a round of a file lost, 3 in ~90 runs of the churn
    test with kill -9). A finished file was read after every file the plan at its open found; so the
    bound is the newest finished file first seen before every unfinished one (one seen only empty
    included: its lines went into a copy written since), else the oldest file known, never the
    current file's own time (it was made when the files before it were renamed away) unless it is
    the only one. With KEEP_DONE_PER_PATH finished files kept, not below the oldest of them (older
    ones were forgotten: their copies would be taken for files never seen)."""
    others = [e for k, e in known if k != current_key]
    if not others:
        return known[0][1].since if known else unseen_since or 0.0
    open_since = min((e.since for e in others if not e.done), default=float("inf"))
    done = sorted(e.since for e in others if e.done)
    cut = max((t for t in done if t < open_since), default=min(e.since for e in others))
    if len(done) >= KEEP_DONE_PER_PATH:
        cut = max(cut, done[0])
    return cut


def _around_current(unseen: list[Generation], current: tuple[int, int] | None, mine: bytes | None,
                    listing: list[tuple[str, os.stat_result]], head_of: Callable[[str, os.stat_result], bytes | None],
                    base: str) -> tuple[list[Generation], list[Generation]]:
    """The generations never seen that were written before the current file, and those written
    after it. A tailer opens the file at the path, then the folder is listed: if the file
    was renamed in between and rotation went on (the kubelet renames 0.log, makes a new one and
    rotates that too within a second), the listing holds files newer than it, which must be read
    after it. Its place among them is where it is now: under a rotated name (by its inode), else
    as a compressed copy (by its first bytes `mine`); still at the path, every one is older."""
    if current is None or not unseen:
        return unseen, []
    here: Generation | None = None
    for p, s in listing:
        name = os.path.basename(p)
        if not is_rotated_name(name, base):
            continue
        if (s.st_dev, s.st_ino) == current:
            here = Generation("file", p, 0, s.st_mtime, s.st_dev, s.st_ino, "", 0, None, s.st_mtime)
            break
        if mine and compression_of(name) and here is None:
            head = head_of(p, s)
            if head is not None and len(head) >= len(mine) and head[: len(mine)] == mine:
                here = Generation("compressed", p, 0, s.st_mtime, s.st_dev, s.st_ino, "", 0, None, s.st_mtime)
    if here is None:
        return unseen, []
    place = _written_order(here, base)
    return ([g for g in unseen if _written_order(g, base) <= place],
            [g for g in unseen if _written_order(g, base) > place])


def _written_order(gen: Generation, base: str) -> tuple[int, float, str, float]:
    """The order a path's generations were written in. A known one's by when the agent first saw it:
    the mtime of its copy is when the copy was made (a gzip made after the next file was renamed
    is newer than that file). Those never seen come after, by the time stamp of their names where
    they have one (the kubelet's <name>.<YYYYMMDD-hhmmss>, logrotate's dateext), else by mtime."""
    if gen.key is not None:
        return 0, gen.since, "", gen.mtime
    stamp = _name_stamp(os.path.basename(gen.where), base)
    return 1, 0.0 if stamp else gen.mtime, stamp, gen.mtime


_STAMP = re.compile(r"\d{8}")


def _name_stamp(name: str, base: str) -> str:
    """The digits of a rotated name's suffix when it holds a date (8 digits in a row), else ''."""
    suffix = name[len(base):]
    ext = compression_of(suffix)
    suffix = suffix[: len(suffix) - len(ext)] if ext else suffix
    return "".join(ch for ch in suffix if ch.isdigit()) if _STAMP.search(suffix) else ""


def _rekey(gen: Generation, key: str) -> None:
    """The generation, what follows it and its alternatives under registry key `key`."""
    gen.key = key
    for other in (gen.then, *gen.alternatives):
        if other is not None:
            _rekey(other, key)


def _lost(path: str, entry: RegistryEntry, unreadable: list[str]) -> Lost:
    """A known file found nowhere: to say at WARNING with the path, and count (the bytes where known)."""
    at_stake = max(0, entry.size - entry.offset)
    known = f"; {at_stake} bytes after that offset were known and are lost" if at_stake else ""
    what = "first seen" if entry.fp_len else "seen only empty, first"
    hint = f"; rotated copies that could not be read: {', '.join(display_name(n) for n in unreadable)}" \
        if unreadable else ""
    return Lost("rotated_away", f"{display_name(path)}: an earlier file of this name ({what} {_when(entry.since)}, "
                f"acknowledged to offset {entry.offset}) is gone: not in its folder, the spool or a copy; lines "
                f"written to it after the agent stopped are lost{known}{hint}", at_stake=at_stake)


def _unseen(path: str, newest: float, fps: set[tuple[str, int]],
            listing: list[tuple[str, os.stat_result]], head_of: Callable[[str, os.stat_result], bytes | None],
            held: Callable[[int, int], bool], current: tuple[int, int] | None,
            steps: list[Step]) -> list[Generation]:
    """The path holds a file we never saw: the generations created and rotated away meanwhile
    (written after `newest`: when the newest known file of the path was first seen, or since when
    a path never seen is collected). One generation can show twice (app.log.1 and the app.log.2.gz
    being made of it, or one file listed under two names): candidates with the same first bytes
    are one generation, read from the plain file if it can be opened, else from its compressed copy."""
    base = os.path.basename(path)
    groups: list[tuple[bytes, list[Generation]]] = []  # (first bytes, the candidates that share them)
    for p, s in listing:
        name = os.path.basename(p)
        # A file we know is told by its first bytes below, not by its inode (inodes are reused).
        if not is_rotated_name(name, base) or (s.st_dev, s.st_ino) == current or s.st_mtime <= newest \
                or held(s.st_dev, s.st_ino):
            continue
        kind = "compressed" if compression_of(name) else "file"
        head = head_of(p, s)
        if head is None and kind == "file":
            # Compressed (and unlinked) since the listing: the kubelet gzips 0.log.<time> to
            # 0.log.<time>.gz, then unlinks it. Read from that copy, not said lost.
            twin = _compressed_twin(p)
            if twin is not None:
                (p, s), kind = twin, "compressed"
                head = head_of(p, s)
        if head is None:
            why = "not a readable " + kind if kind == "compressed" else "cannot be opened"
            steps.append(Lost("unreadable_copy", f"{display_name(path)}: {display_name(p)}, rotated while the agent "
                              f"was not reading, cannot be read ({why}): its lines are lost"))
            continue
        if not head or any(n and fingerprint_of(head[:n]) == f for f, n in fps if len(head) >= n):
            continue  # empty, or a copy of a file we know
        gen = Generation(kind, p, 0, s.st_mtime, s.st_dev, s.st_ino, fingerprint_of(head), len(head), None,
                         s.st_mtime)
        # Twins share their first bytes; a shorter head (a copy still being written) is a prefix.
        for first, gens in groups:
            n = min(len(first), len(head))
            if first[:n] == head[:n]:
                gens.append(gen)
                break
        else:
            groups.append((head, [gen]))
    out: list[Generation] = []
    for _, gens in groups:
        gens.sort(key=lambda g: (g.kind != "file", -g.fp_len))  # a plain file first, the fullest head
        best = gens[0]
        best.alternatives = gens[1:]
        out.append(best)
    return out


def _compressed_twin(path: str) -> tuple[str, os.stat_result] | None:
    """`<path>.gz` (or .bz2, .xz) as it is on disk now, when `path` itself is gone: a copy made by
    compressing it after the folder was listed."""
    if os.path.lexists(path):
        return None
    for ext in COMPRESSED:
        try:
            st = os.stat(path + ext, follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            return path + ext, st
    return None


def _locate(key: str, entry: RegistryEntry, by_inode: dict[tuple[int, int], str], spool: Spool | None,
            copies_of: Callable[[RegistryEntry], list[tuple[str, str, os.stat_result]]]) -> Generation | None:
    """Where a known generation is now, best first: its file (by inode, fingerprint checked), the
    spool (going on in a copy past the spool's end), a copy (plain, then compressed). The others are
    kept as alternatives in case the first cannot be opened any more."""
    def gen(kind: str, where: str, mtime: float, ids: tuple[int, int] = (entry.dev, entry.ino)) -> Generation:
        return Generation(kind, where, entry.offset, mtime, ids[0], ids[1], entry.fp, entry.fp_len, key,
                          entry.since, size=entry.size)

    options: list[Generation] = []
    name = by_inode.get((entry.dev, entry.ino))
    if name is not None and _plain_fp(name, entry.fp_len) == entry.fp:
        try:
            options.append(gen("file", name, os.stat(name).st_mtime))
        except OSError:
            pass  # gone since the listing: a copy, if any, below
    copies = [gen(kind, p, s.st_mtime, (s.st_dev, s.st_ino)) for kind, p, s in copies_of(entry)]
    spooled = spool.get(entry.uid) if spool is not None else None
    if spooled is not None and spooled.covered(entry.offset) > entry.offset:
        first = gen("spool", spooled.uid, spooled.mtime)
        if copies:
            first.then = dataclasses.replace(copies[0])
        options.append(first)
    options.extend(copies)
    if not options:
        return None
    options[0].alternatives = options[1:]
    return options[0]


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "at an unknown time"
