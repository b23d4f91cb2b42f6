"""Forgetting finished files: what keeps the registry from growing with every file ever seen.

A finished registry entry (its file left its name, by rename or delete, and was read and
acknowledged to its end) has nothing left to ship. It is kept for one purpose: that nothing on
disk is taken for a file the agent never saw. recovery.plan() tells a path's rotated copies
(`app.log.1`, `app.log.2.gz`, the copy a copytruncate made) from generations created while the
agent was not reading by their first bytes, against the path's entries; and a tailer that meets
a known file again under another name (a glob that also matches `app.log.1`) finds it by
(device, inode) and resumes at its end instead of reading it again.

**The rule.** A finished entry of path P, in folder D, is obsolete, and dropped, when both hold:

1. no file in D has its (device, inode) *and* its first bytes (its fingerprint): the file is
   deleted, or moved out of D, or the inode now holds another file (a symlink in D counts for
   the file it leads to);
2. no name in D is a rotated-copy name of P (`<P><separator><digits...>`, plain or `.gz`,
   `.bz2`, `.xz`: recovery.is_rotated_name): any of those may be a copy of it.

So a per-job or per-pod log that is deleted, and whose name never comes back, is forgotten at the
next sweep; a logrotated file keeps its finished generations while copies of the name lie in its
folder (then KEEP_DONE_PER_PATH and `[agent] registry_max_entries` bound them, registry.py). A
folder that cannot be listed (for another reason than being gone), or a file at the inode that
cannot be read, keeps the entry: a sweep never guesses. An entry whose key a tailer of this
process answers for is not looked at.

What forgetting gives up: P's finished entries also mean "P was collected before". When all are
forgotten (P deleted, no copy of it in D) and then, while the agent is not running, a file is
created at P, written, and rotated away under a copy name, the restart reads the new file at P
from its beginning but does not look for that copy (README: what can still be lost). A file moved
to another folder and collected there later is read again from its beginning (duplicates, never
a loss).

**When.** A sweep looks at the entries finished since the last one, every SWEEP_INTERVAL
seconds (at 50 files a second: ~250 entries, each folder listed once, in a thread); and at
every finished entry every FULL_SWEEP_INTERVAL seconds (copies that logrotate deleted since).
Entries loaded at start count as just finished. An entry a tailer answers for, or one a sweep could not
decide on (the file it found at the entry's inode number was deleted before its first bytes were read),
is looked at again by the next sweep.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

from logagent.sources.files.recovery import is_rotated_name
from logagent.sources.files.registry import Registry, RegistryEntry, fingerprint_of

log = logging.getLogger("logagent.prune")

SWEEP_INTERVAL = 5.0
FULL_SWEEP_INTERVAL = 600.0


@dataclass(frozen=True)
class Finished:
    """What a sweep needs of a finished entry (a copy: the sweep runs in a thread)."""

    key: str
    uid: str
    updated: float
    path: str
    dev: int
    ino: int
    fp: str
    fp_len: int

    @classmethod
    def of(cls, key: str, e: RegistryEntry) -> Finished:
        return cls(key, e.uid, e.updated, e.path, e.dev, e.ino, e.fp, e.fp_len)


@dataclass
class _Listing:
    """One folder as a sweep sees it."""

    ids: dict[tuple[int, int], str]  # (device, inode) -> a name in the folder that leads to it
    names: list[str]  # the names in the folder, sorted (rotated copies of P are a range: P...)


def _list(folder: str) -> _Listing | None:
    """The folder's regular files (symlinks followed); empty when the folder is gone, None when
    it cannot be listed. Listed twice and merged: a listing racing renames (app.log.1 ->
    app.log.2) can miss a file that moved during it."""
    ids: dict[tuple[int, int], str] = {}
    names: set[str] = set()
    for _ in range(2):
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    names.add(entry.name)
                    try:
                        st = entry.stat(follow_symlinks=True)
                    except OSError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        ids.setdefault((st.st_dev, st.st_ino), entry.path)
        except (FileNotFoundError, NotADirectoryError):
            return _Listing({}, [])
        except OSError as exc:
            log.debug("prune: cannot list %r (%s); its finished entries are kept", folder, exc)
            return None
    return _Listing(ids, sorted(names))


def _head(path: str, length: int) -> bytes | OSError:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        return exc
    try:
        return os.pread(fd, length, 0)
    except OSError as exc:
        return exc
    finally:
        os.close(fd)


def _needed(item: Finished, listing: _Listing) -> bool | None:
    """Could a file in the folder be taken for this finished entry (the module docstring's rule)?
    None: the file the listing showed at its inode was gone when its first bytes were read (a
    folder where files come and go): undecided, looked at again by the next sweep."""
    name = listing.ids.get((item.dev, item.ino))
    if name is not None:
        head = _head(name, item.fp_len)
        if isinstance(head, FileNotFoundError):
            return None
        if isinstance(head, OSError) or (len(head) == item.fp_len and fingerprint_of(head) == item.fp):
            return True  # its own file (or one we cannot read: kept)
    base = os.path.basename(item.path)
    at = bisect.bisect_left(listing.names, base)
    for name in listing.names[at:]:
        if not name.startswith(base):
            break
        if is_rotated_name(name, base):
            return True
    return False


def obsolete(items: list[Finished]) -> tuple[list[Finished], list[Finished]]:
    """The finished entries nothing on disk can be confused with, and those undecided (_needed)
    (blocking: run in a thread). Each folder is listed once."""
    listings: dict[str, _Listing | None] = {}
    out: list[Finished] = []
    undecided: list[Finished] = []
    for item in items:
        folder = os.path.dirname(item.path) or "."
        if folder not in listings:
            listings[folder] = _list(folder)
        listing = listings[folder]
        if listing is None:
            continue
        needed = _needed(item, listing)
        if needed is None:
            undecided.append(item)
        elif not needed:
            out.append(item)
    return out, undecided


async def sweep(registry: Registry, keys: set[str] | None, busy: Callable[[str], bool]) -> int:
    """Drop the obsolete ones among the finished entries `keys` (None: all); how many went. Those a
    tailer answers for now, or undecided, are looked at again by the next sweep (else only the full
    sweep, minutes later, would: entries left behind in a churning folder)."""
    items: list[Finished] = []
    again: list[str] = []
    for key, entry in registry.finished(keys):
        if busy(key):
            again.append(key)
        else:
            items.append(Finished.of(key, entry))
    if not items:
        registry.look_again(again)
        return 0
    found, undecided = await asyncio.to_thread(obsolete, items)
    registry.look_again(again + [f.key for f in undecided])
    # Entries that changed meanwhile (live again, another file's) are kept by Registry.prune.
    dropped = registry.prune([(f.key, f.uid, f.updated) for f in found], "gone")
    if dropped:
        log.debug("prune: %d of %d finished entries forgotten (their files are gone)", dropped, len(items))
    return dropped


async def sweep_forever(registry: Registry, busy: Callable[[str], bool], interval: float = SWEEP_INTERVAL,
                        full_every: float = FULL_SWEEP_INTERVAL) -> None:
    """Sweep what finished since the last sweep every `interval`, everything every `full_every`."""
    loop = asyncio.get_running_loop()
    last_full = loop.time()
    while True:
        await asyncio.sleep(interval)
        keys: set[str] | None = registry.take_fresh()
        if loop.time() - last_full >= full_every:
            keys, last_full = None, loop.time()
        elif not keys:
            continue
        await sweep(registry, keys, busy)
