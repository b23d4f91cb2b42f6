"""The registry: per file identity, the offset up to which Kafka acknowledged every line.

Stored as JSON under `[agent] data_dir`, written atomically (temp file, fsync,
rename) every `registry_flush_interval` and at shutdown. A file is identified by
(device, inode) plus a fingerprint of its first bytes, so a reused inode is not
taken for the old file. A corrupt registry is set aside, never fatal; a data_dir
that cannot be written is reported and counted while shipping goes on.

Bounded. An entry is *live* until its file is read and acknowledged to its end after it left
its name (rotated away, deleted); then it is *finished* (`done`), kept only so that nothing on
disk is taken for a file never seen (logagent/prune.py has the rule that forgets finished
entries nothing on disk can be confused with). Finished entries also go: beyond the newest
KEEP_DONE_PER_PATH of a path; at load, 30 days (PRUNE_AFTER) after their last change if their
file is not at its name; and, oldest first, when the registry holds more than
`[agent] registry_max_entries` (trimmed to 10 % under it, so that a trim is not paid for at
every new file). A live entry is never pruned: when live entries alone exceed the cap, a
WARNING says so once and they are kept. Every pruned entry is counted in
`logagent_registry_pruned_total{reason}`; `logagent_registry_entries` is the entry count.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from logagent.errors import RegistryError
from logagent.pipeline.checkpoint import Checkpoint
from logagent.runtime import metrics
from logagent.runtime.atomic import write_atomic
from logagent.runtime.names import from_display, is_raw, wire_name
from logagent.runtime.supervise import spawn

log = logging.getLogger("logagent.registry")

FINGERPRINT_BYTES = 1024
PRUNE_AFTER = 30 * 86400.0
VERSION = 1
DEFAULT_MAX_ENTRIES = 50_000  # [agent] registry_max_entries: ~10 MB of JSON, ~50 ms to serialise on 2 cores


def fingerprint_of(head: bytes) -> str:
    """The hash that identifies a file by its first bytes (`fingerprint` of bytes already read)."""
    return hashlib.blake2b(head, digest_size=12).hexdigest()


def fingerprint(fd: int, length: int = FINGERPRINT_BYTES) -> tuple[str, int]:
    """(hash, length) of up to `length` first bytes of an open file."""
    head = os.pread(fd, length, 0)
    return fingerprint_of(head), len(head)


def uid_of(dev: int, ino: int, since: float) -> str:
    """Unique for a file across inode reuse: names its spool folder and archived registry key."""
    return f"{dev}-{ino}-{int(since * 1e6)}"


def identity_of_uid(uid: str) -> str | None:
    """The identity key (identity_key) of the file a uid_of names; None when `uid` is not one."""
    parts = uid.split("-", 2)
    return f"{parts[0]}:{parts[1]}" if len(parts) == 3 else None


@dataclass
class RegistryEntry:
    path: str  # the name the file was collected under (its rotated names are found by identity)
    offset: int  # every byte before it is acknowledged by Kafka
    dev: int
    ino: int
    fp: str
    fp_len: int
    updated: float  # wall time of the last change
    since: float = 0.0  # wall time the agent first saw this file: orders a path's generations
    done: bool = False  # rotated away, read and acknowledged to its end: nothing left to do
    size: int = 0  # bytes the agent knew the file had (what is at stake if it vanishes)

    @property
    def uid(self) -> str:
        """Unique for the file across inode reuse: names its spool folder and archived key."""
        return uid_of(self.dev, self.ino, self.since)


def _still_there(entry: RegistryEntry) -> bool:
    """True while the entry's name still points at its file: an idle file is never forgotten."""
    try:
        st = os.stat(entry.path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (entry.dev, entry.ino)


def identity_key(dev: int, ino: int) -> str:
    return f"{dev}:{ino}"


KEEP_DONE_PER_PATH = 200  # finished rotated generations remembered per path (their identity is
# what keeps a rotated copy from being taken for a new file at start)


class Registry:
    """In-memory map of acknowledged offsets, flushed to `<data_dir>/registry.json`."""

    def __init__(self, data_dir: Path, flush_interval: float = 1.0, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.path = Path(data_dir) / "registry.json"
        self.flush_interval = flush_interval
        self.max_entries = max_entries
        self._trim_above = max_entries  # the count past which _changed() trims (see _trim)
        self._over_warned = False  # live entries alone exceed the cap, and it was said
        self._fresh_done: set[str] = set()  # keys finished since the last take_fresh(): to sweep
        self._entries: dict[str, RegistryEntry] = {}
        self._owned: set[str] = set()  # keys a reader of this process answers for (see own())
        self._by_path: dict[str, set[str]] = {}  # path -> keys of its entries (its generations)
        self._raw_paths: set[str] = set()  # those of its paths that are not UTF-8 (see _serialize)
        self._done_since_prune = 0
        self._serialize_cost = 0.0  # seconds the last snapshot took on the loop
        self._applied: dict[str, float] = {}  # collect entry path -> when it was first applied
        # uids of files whose first records went out joined to the line an earlier file of their path
        # ended with (see mark_joined). Saved beside the entries, not in them: an older agent reads
        # the file as it is (it would take an unknown field of an entry for a corrupt registry).
        self._joined: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._last_error = ""
        # Counts changes; _saved_version is the last one known to be on disk. "Anything to write" is
        # decided by these, never by a flag cleared when a snapshot is taken: a write that never
        # happened (cut off by a stop) must leave the registry still to be written.
        self._version = 0
        self._saved_version = 0
        # (version, action): what waits for the write of that version (see when_saved), oldest first.
        self._after_write: list[tuple[int, Callable[[], None]]] = []
        # Counts changes of keys and uids (an entry added, dropped, moved, or a new content): a reader
        # that looked its file's uid up at one epoch need not look again while it stays (per line).
        self.epoch = 0
        self._write_lock = asyncio.Lock()  # one write at a time, held until it has ended (they share a temp file)

    def load(self) -> None:
        """Read the saved offsets; a corrupt file is renamed aside and logged."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            metrics.REGISTRY_ERRORS.inc()
            log.error("registry %s unreadable (%s); starting without saved offsets", self.path, exc)
            return
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
                raise ValueError("no 'files' object")
            now = time.time()
            self._applied = {str(k): float(v) for k, v in data.get("entries", {}).items()}
            joined = data.get("joined", [])
            self._joined = {u for u in joined if isinstance(u, str)} if isinstance(joined, list) else set()
            for key, item in data["files"].items():
                item = dict(item)
                if item.pop("raw", False):  # a name that is not UTF-8, saved in its escaped form
                    item["path"] = from_display(item["path"])
                entry = RegistryEntry(**item)
                if now - entry.updated < PRUNE_AFTER or _still_there(entry):
                    self._put(key, entry)
                else:
                    metrics.REGISTRY_PRUNED.labels("expired").inc()
            self._fresh_done.update(k for k, e in self._entries.items() if e.done)
            self._prune_done()
            if len(self._entries) > self.max_entries:
                self._trim()
            metrics.REGISTRY_ENTRIES.set(len(self._entries))
        except (ValueError, TypeError) as exc:
            metrics.REGISTRY_ERRORS.inc()
            aside = self.path.with_name(f"registry.json.corrupt-{int(time.time())}")
            try:
                self.path.rename(aside)
                where = f"moved to {aside}"
            except OSError as rename_exc:
                where = f"could not be moved aside: {rename_exc}"
            log.error("registry %s is corrupt (%s); %s; starting without saved offsets", self.path, exc, where)
            self._entries.clear()
            self._by_path.clear()
            self._raw_paths.clear()
            self._applied.clear()
            self._joined.clear()
            self.epoch += 1
            self._fresh_done.clear()

    def adopt(self, checkpoints: list[Checkpoint]) -> int:
        """exactly_once, at start: the offsets committed to Kafka with the lines win over this file's
        (which lag them by up to a flush interval, or are gone with a lost data_dir). A checkpoint
        whose file the registry knows (same uid, fingerprints that agree) sets its offset; one it does
        not know becomes an entry, under the file's device and inode unless a live file holds those.
        A finished entry stays finished when the checkpoint is not behind it. Returns how many changed."""
        by_uid = {e.uid: k for k, e in self._entries.items()}
        changed = 0
        for c in checkpoints:
            key = by_uid.get(c.uid)
            entry = self._entries.get(key) if key is not None else None
            if entry is None:
                key = identity_key(c.dev, c.ino)
                known = self._entries.get(key)
                if known is not None and known.since > c.since:
                    continue  # an older content or file of that inode, which the registry is past
                if known is not None:
                    key = c.uid
                self._put(key, RegistryEntry(c.path, c.offset, c.dev, c.ino, c.fp, c.fp_len, time.time(),
                                             since=c.since, size=max(c.size, c.offset)))
                changed += 1
                continue
            if entry.fp_len == c.fp_len and entry.fp != c.fp:
                continue  # the same bytes measured would differ: another content under that uid
            if entry.offset == c.offset or (entry.done and c.offset >= entry.offset):
                continue
            entry.offset = c.offset
            entry.size = max(entry.size, c.size, c.offset)
            entry.done = False
            if c.fp_len > entry.fp_len:
                entry.fp, entry.fp_len = c.fp, c.fp_len
            changed += 1
        if changed:
            self._changed()
        return changed

    def entry_applied(self, pattern: str) -> bool:
        """Record that a collect entry runs; True when it already ran before (a restart).

        `start = end` applies only to an entry's first application: after a restart,
        a file that appeared while the agent was down is read from its beginning.
        """
        seen = pattern in self._applied
        if not seen:
            self._applied[pattern] = time.time()
            self._changed()
        return seen

    def collected_since(self, pattern: str) -> float | None:
        """Since when the files of the collect entry `pattern` are the agent's to read (wall time,
        kept across restarts): when it was first applied, but at most PRUNE_AFTER ago (a load forgets
        the entries of files shipped before that, so a file of then without an entry may be shipped)."""
        at = self._applied.get(pattern)
        return None if at is None else max(at, time.time() - PRUNE_AFTER)

    def entry_removed(self, pattern: str) -> None:
        if self._applied.pop(pattern, None) is not None:
            self._changed()

    def lookup(self, dev: int, ino: int) -> RegistryEntry | None:
        return self._entries.get(identity_key(dev, ino))

    def own(self, key: str) -> None:
        """A reader of this process answers for the entry `key` (it reads the file, or waits for Kafka
        to acknowledge it): recovery does not plan it again and the prune sweep leaves it."""
        self._owned.add(key)

    def disown(self, key: str) -> None:
        """No reader of this process answers for `key` any more (finished, or closed for good)."""
        self._owned.discard(key)

    def owns(self, key: str) -> bool:
        return key in self._owned

    @property
    def owned(self) -> AbstractSet[str]:
        """The keys readers of this process answer for (a live, read-only view)."""
        return self._owned

    def get(self, key: str) -> RegistryEntry | None:
        return self._entries.get(key)

    def update(self, dev: int, ino: int, path: str, offset: int, fp: str, fp_len: int,
               key: str | None = None, size: int | None = None, since: float | None = None) -> str:
        """Record that every byte before `offset` of this file is acknowledged; returns its key
        (`key`: an archived entry's, see `archive`). `since`: the first-seen time a new entry gets
        (default now; see EntryRunner._first_seen_before)."""
        key = key or identity_key(dev, ino)
        entry = self._entries.get(key)
        if entry is None:
            now = time.time()
            self._put(key, RegistryEntry(path, offset, dev, ino, fp, fp_len, now, since=now if since is None else since,
                                         size=max(offset, size or 0)))
            self._changed()
        else:
            self.advance(entry, offset, fp, fp_len, size)
        return key

    def advance(self, entry: RegistryEntry, offset: int, fp: str, fp_len: int, size: int | None = None) -> None:
        """update() of an entry the caller holds: one it got from get() at the current `epoch` (no entry
        was added, dropped or moved since, so it is still the one under its key). A reader's
        acknowledgements come here: at 10,000 files x 1 line/s the key's lookup was a cost per line."""
        entry.offset, entry.fp, entry.fp_len = offset, fp, fp_len
        entry.updated = time.time()
        if size is not None and size > entry.size:
            entry.size = size
        self._version += 1  # (_changed without its look at the count: no entry was added)

    def archive(self, dev: int, ino: int) -> None:
        """A new file took over this inode: keep the old entry under its uid, out of the new one's way.
        Unfinished, it still has work (unread bytes in a rotated copy or the spool); finished, its
        fingerprint tells its copies (app.log.2.gz) from files never read."""
        key = identity_key(dev, ino)
        entry = self._drop(key)
        if entry is not None:
            self._put(entry.uid, entry)
            if key in self._owned:
                # Its reader still answers for it (a rotated file read and closed, its lines in flight):
                # under its new key too, or recovery would plan it again from the spool (sent twice).
                self._owned.discard(key)
                self._owned.add(entry.uid)
            if entry.done:
                # Swept under its new key: the sweep's pass over what finished lately knows the old
                # key only, which names the new file now (a churning folder reuses inodes at once).
                self._fresh_done.add(entry.uid)
            self._changed()

    def remember_content(self, dev: int, ino: int, path: str, fp: str, fp_len: int) -> None:
        """A file was truncated and rewritten (copytruncate): what it held before is remembered as a
        finished generation, so that its rotated copy (app.log.1) is never taken for a file the
        agent has not read."""
        live = self._entries.get(identity_key(dev, ino))
        if live is not None:
            live.size = 0  # the bytes it knew are the finished generation's now, not the new content's
        if fp_len == 0:
            return
        now = time.time()
        entry = RegistryEntry(path, 0, dev, ino, fp, fp_len, now, since=now, done=True)
        self._put(f"{entry.uid}:{fp}", entry)
        self._fresh_done.add(f"{entry.uid}:{fp}")
        self._changed()

    def new_content(self, key: str) -> None:
        """The file was truncated and is read again from 0 (copytruncate): from now on it is another
        content, with a uid of its own (`since` = now), so the msgid of a line at an offset the old
        content also had differs, and exactly_once's offset record is a new key. Also a file seen only
        empty whose entry was an earlier file's (see seen_after)."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.since = time.time()
            self.epoch += 1
            self._changed()

    def mark_joined(self, key: str) -> None:
        """The file of entry `key` goes on with a line an earlier file of its path ended with (a
        container log's partial line): its first records go out joined to it, not on their own. A
        restart that reads the earlier file again, and finds this one acknowledged past those
        records, knows by it that the line went out whole (else the earlier file's part is sent)."""
        entry = self._entries.get(key)
        if entry is not None and entry.uid not in self._joined:
            self._joined.add(entry.uid)
            self._changed()

    def joined(self, key: str) -> bool:
        """mark_joined was called for the file of entry `key` (in this run or one before)."""
        entry = self._entries.get(key)
        return entry is not None and entry.uid in self._joined

    def mark_done(self, key: str) -> None:
        """The file was rotated away and is acknowledged to its end."""
        entry = self._entries.get(key)
        if entry is not None and not entry.done:
            entry.done = True
            entry.updated = time.time()
            self._done_since_prune += 1
            if self._done_since_prune >= KEEP_DONE_PER_PATH:
                self._done_since_prune = 0
                self._prune_done()
            # An archived entry is kept too: its file is gone, but its copies (app.log.1 read after a
            # copytruncate, later app.log.2.gz) are known by its fingerprint and never read again
            # (until the prune sweep finds no copy of it left).
            self._fresh_done.add(key)
            self._changed()

    def seen_after(self, entry: RegistryEntry) -> bool:
        """Another file of `entry`'s path was first seen at or after it (so a file at the path now
        under the entry's inode number is not the one it was made for)."""
        return any(e.since >= entry.since for e in map(self._entries.__getitem__, self._by_path.get(entry.path, ()))
                   if e is not entry)

    def entries_for(self, path: str) -> list[tuple[str, RegistryEntry]]:
        """(key, entry) of every file collected under `path`: its generations."""
        return [(k, self._entries[k]) for k in self._by_path.get(path, ())]

    def live_uids(self) -> set[str]:
        """The uids of files not done yet: the ones whose spool copies may still be needed."""
        return {e.uid for e in self._entries.values() if not e.done}

    def paths(self) -> list[str]:
        """Every path with files in the registry."""
        return list(self._by_path)

    def forget(self, dev: int, ino: int) -> None:
        if self._drop(identity_key(dev, ino)) is not None:
            self._changed()

    def _put(self, key: str, entry: RegistryEntry) -> None:
        self.epoch += 1
        old = self._entries.get(key)
        if old is not None and old.path != entry.path:
            self._drop(key)
        self._entries[key] = entry
        keys = self._by_path.get(entry.path)
        if keys is None:
            keys = self._by_path[entry.path] = set()
            if is_raw(entry.path):
                self._raw_paths.add(entry.path)
        keys.add(key)

    def _drop(self, key: str) -> RegistryEntry | None:
        self.epoch += 1
        entry = self._entries.pop(key, None)
        if entry is not None:
            keys = self._by_path.get(entry.path)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_path[entry.path]
                    self._raw_paths.discard(entry.path)
        return entry

    def _prune_done(self) -> None:
        """Keep the newest KEEP_DONE_PER_PATH finished generations of each path."""
        done: dict[str, list[tuple[float, str]]] = {}
        for key, e in self._entries.items():
            if e.done:
                done.setdefault(e.path, []).append((e.since, key))
        for keys in done.values():
            if len(keys) > KEEP_DONE_PER_PATH:
                for _, key in sorted(keys)[: len(keys) - KEEP_DONE_PER_PATH]:
                    self._drop(key)
                    metrics.REGISTRY_PRUNED.labels("per_path").inc()

    # ---- the bound (module docstring; the rule for finished entries is in logagent/prune.py)

    def set_max_entries(self, max_entries: int) -> None:
        """`[agent] registry_max_entries`, at start or on SIGHUP: trims now if over it."""
        self.max_entries = self._trim_above = max_entries
        self._over_warned = False
        if len(self._entries) > max_entries:
            self._trim()
            self._changed()

    def _trim(self) -> None:
        """Over max_entries: drop the oldest finished entries (by their last change) until the
        count is 10 % under it. When live entries alone are over it, they stay: say so once, and
        look again only after 10 % more entries (not at every change)."""
        target = self.max_entries - self.max_entries // 10
        excess = len(self._entries) - target
        if excess > 0:
            oldest = sorted((e.updated, k) for k, e in self._entries.items() if e.done)[:excess]
            for _, key in oldest:
                self._drop(key)
            metrics.REGISTRY_PRUNED.labels("cap").inc(len(oldest))
        if len(self._entries) <= self.max_entries:
            self._trim_above = self.max_entries
            self._over_warned = False
            return
        self._trim_above = len(self._entries) + max(1, self.max_entries // 10)
        if not self._over_warned:
            self._over_warned = True
            log.warning("the registry holds %d files not finished yet, more than [agent] registry_max_entries "
                        "= %d: they are all kept (an entry with unacknowledged bytes is never dropped); raise "
                        "the setting if this many files are collected", len(self._entries), self.max_entries)

    def take_fresh(self) -> set[str]:
        """The keys that became finished since the last call (what a prune sweep looks at)."""
        fresh, self._fresh_done = self._fresh_done, set()
        return fresh

    def current_key(self, key: str, uid: str) -> str:
        """Where the entry stored at `key` for the file `uid` is now: `key`, or its uid once archive()
        moved it there (a new file took its inode number and holds `key`)."""
        if uid not in self._entries:  # first: a dict lookup, per acknowledgement; entry.uid formats a string
            return key
        entry = self._entries.get(key)
        return uid if entry is None or entry.uid != uid else key

    def look_again(self, keys: Iterable[str]) -> None:
        """Keys a sweep could not decide on now: the next sweep looks at them again."""
        self._fresh_done.update(keys)

    def finished(self, keys: set[str] | None = None) -> list[tuple[str, RegistryEntry]]:
        """(key, entry) of the finished entries, all or those among `keys` still there."""
        if keys is None:
            return [(k, e) for k, e in self._entries.items() if e.done]
        return [(k, e) for k in keys if (e := self._entries.get(k)) is not None and e.done]

    def prune(self, found: list[tuple[str, str, float]], reason: str) -> int:
        """Drop finished entries a sweep found obsolete: (key, uid, updated) as the sweep saw them;
        one that changed since (or is live again, or is another file's now) stays. Returns how many."""
        dropped = 0
        for key, uid, updated in found:
            entry = self._entries.get(key)
            if entry is not None and entry.done and entry.uid == uid and entry.updated == updated:
                self._drop(key)
                dropped += 1
        if dropped:
            metrics.REGISTRY_PRUNED.labels(reason).inc(dropped)
            self._changed()
        return dropped

    def _changed(self) -> None:
        self._version += 1
        if len(self._entries) > self._trim_above:
            self._trim()

    @property
    def dirty(self) -> bool:
        """Changes are in memory that no write has put on disk yet."""
        return self._saved_version < self._version

    def entries(self) -> dict[str, RegistryEntry]:
        return dict(self._entries)

    def _serialize(self) -> bytes:
        # Runs every flush interval on the loop: with 10,000 files dataclasses.asdict + json cost
        # ~10 % of a core here, dict literals + orjson 7 ms, the entries themselves (orjson writes a
        # dataclass's fields in C) 2 ms. Only a name that is not UTF-8 needs a dict of its own; with none
        # (nearly always) the entries go as they are, without a look at each name every second.
        files = {k: self._raw_item(e) if e.path in self._raw_paths else e for k, e in self._entries.items()} \
            if self._raw_paths else self._entries
        data: dict[str, object] = {"version": VERSION, "entries": self._applied, "files": files}
        if self._joined:
            self._joined = {u for u in self._joined if self._has_uid(u)}  # those of files dropped since go
            data["joined"] = sorted(self._joined)
        return orjson.dumps(data)

    def _has_uid(self, uid: str) -> bool:
        """An entry of the file `uid` is kept (under its device and inode, or archived under its uid)."""
        if uid in self._entries:
            return True
        key = identity_of_uid(uid)
        entry = self._entries.get(key) if key is not None else None
        return entry is not None and entry.uid == uid

    @staticmethod
    def _raw_item(e: RegistryEntry) -> dict[str, object]:
        """JSON holds no lone surrogates: the lossless escaped form of the name instead."""
        return {**asdict(e), "path": wire_name(e.path), "raw": True}

    def _write(self, payload: bytes) -> None:
        """Write atomically; raises RegistryError."""
        try:
            write_atomic(self.path, payload)
        except OSError as exc:
            metrics.REGISTRY_ERRORS.inc()
            raise RegistryError(f"cannot write registry {self.path}: {exc.strerror or exc}") from exc

    def save(self) -> None:
        """Write the registry now; raises RegistryError."""
        version, payload = self._snapshot()
        try:
            self._write(payload)
        except RegistryError:
            self._written(version, False)
            raise
        self._written(version, True)

    def _snapshot(self) -> tuple[int, bytes]:
        """What is in memory now, for one write: (its version, the payload). The write's outcome
        goes back through _written()."""
        metrics.REGISTRY_ENTRIES.set(len(self._entries))
        started = time.perf_counter()
        payload = self._serialize()
        self._serialize_cost = time.perf_counter() - started
        return self._version, payload

    def _written(self, version: int, ok: bool) -> bool:
        """Record a write's outcome: on disk up to `version` (else it stays to be written); then run
        what waited for it (when_saved)."""
        if ok:
            self._saved_version = max(self._saved_version, version)
            if self._after_write and self._after_write[0][0] <= self._saved_version:
                due = [action for v, action in self._after_write if v <= self._saved_version]
                self._after_write = [(v, a) for v, a in self._after_write if v > self._saved_version]
                for action in due:
                    try:
                        action()
                    except Exception:  # one action's failure stops neither the others nor the flush
                        log.exception("an action waiting for the registry's write failed")
        return ok

    def when_saved(self, action: Callable[[], None]) -> None:
        """Run `action` once every change made so far is on disk (now, when it is already). For what
        the file on disk may still need until a newer one is written: the spool's copy of a file it
        says is not acknowledged to its end. Deleted as soon as Kafka had the bytes, a kill before
        the next write read the file again from the spool, found its bytes gone, said them lost and
        sent a container log's next file without the line's beginning (its last record as a line: 1
        of ~100 churn runs with kill -9)."""
        if self._saved_version >= self._version:
            action()
        else:
            self._after_write.append((self._version, action))

    def _write_logged(self, payload: bytes) -> bool:
        """Write, logging (once per distinct problem) instead of raising."""
        try:
            self._write(payload)
        except RegistryError as exc:
            if str(exc) != self._last_error:
                log.error("%s; shipping continues, offsets are kept in memory", exc)
                self._last_error = str(exc)
            return False
        if self._last_error:
            log.info("registry %s writable again", self.path)
            self._last_error = ""
        return True

    def flush(self) -> bool:
        """Save if anything changed; False when it could not be written. Not while a background
        write may run (they share a temp file): stop() takes the write lock for its last one."""
        if not self.dirty:
            return True
        version, payload = self._snapshot()
        return self._written(version, self._write_logged(payload))

    async def persist(self) -> None:
        """Return once every change made before this call is on disk, writing now (in a thread)
        if the last write did not cover it; calls made meanwhile share one write. A failed write
        is logged, not raised: shipping goes on with the offsets in memory, as with the flush."""
        wanted = self._version
        async with self._write_lock:
            if self._saved_version < wanted:
                await self._write_now()

    async def _write_now(self) -> None:
        """Serialise on the loop (entries change there), write in a thread; hold _write_lock.

        A caller cancelled meanwhile (the agent stopping) does not cut the write off: cancelling the
        thread's future would skip a write that has not begun, and one under way would go on after
        the lock is released, racing the next write on the temp file (an older snapshot could be
        renamed over a newer one). The lock is held until the write has ended and its outcome is
        recorded; then the cancellation goes on."""
        version, payload = self._snapshot()
        write = asyncio.ensure_future(asyncio.to_thread(self._write_logged, payload))
        cancelled = False
        while not write.done():
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                cancelled = True
        self._written(version, write.result())
        if cancelled:
            raise asyncio.CancelledError

    async def start(self) -> None:
        if self._task is None:
            self._task = spawn("registry flush", "registry", self._run)

    def spacing(self) -> float:
        """Seconds between writes while offsets move. A kill -9 re-sends what Kafka acknowledged
        since the last write, so writes come every quarter of registry_flush_interval; but never
        more often than 400 times the cost of serialising the registry (10,000 files: 2-5 ms, so
        every flush interval), so many files are not paid for with a loop busy writing."""
        return min(self.flush_interval, max(self.flush_interval / 4, 400 * self._serialize_cost))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.spacing())
            if self.dirty:
                async with self._write_lock:
                    await self._write_now()

    async def stop(self) -> None:
        """Stop the periodic flush and write a last time; safe to call twice. A write under way
        ends first, and the last write follows it: what is on disk afterwards is the newest state."""
        async with self._write_lock:
            if self._task is not None:
                self._task.cancel()
                try:
                    await self._task
                except asyncio.CancelledError:
                    pass
                self._task = None
            self.flush()
