"""Bounded glob expansion for collect entries: `*`, `?`, `[...]` in a component, `**` across folders.

`glob.glob(recursive=True)` follows directory symlinks without remembering where it has
been: `app/a -> .` under a `**` pattern never ends, and on the event loop it froze the
whole agent. This walker
- visits a folder at most once per pattern position, by (device, inode): loops end at once;
- does not enter a symlinked folder that resolves outside [agent] allowed_paths, so what lies
  outside is neither listed nor named in a log or a metric label;
- stops at `max_depth` levels below the pattern's fixed base, `max_dirs` folders,
  `max_files` matches and `deadline` seconds, and says which limit it hit;
- runs in a worker thread (the runner awaits it), never on the event loop.

Hidden names (a leading `.`) match only a pattern component that starts with `.`, and
`**` does not descend into hidden folders, as with `glob`.
"""

from __future__ import annotations

import fnmatch
import heapq
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from logagent.config.values import has_glob

MAX_DEPTH = 16
MAX_DIRS = 10_000
DEADLINE = 10.0


def literal_base(pattern: str) -> str:
    """The folder above the first glob character: where new matching files show up."""
    parts = pattern.split("/")
    fixed: list[str] = []
    for part in parts[:-1]:
        if has_glob(part):
            break
        fixed.append(part)
    return "/".join(fixed) or "/"


class AllowedDirs:
    """Could a folder (a resolved path) hold anything that allowed_paths allows?"""

    def __init__(self, allowed: tuple[str, ...]) -> None:
        # The fixed folder of each allowed glob (/var/log for /var/log/**, and for /var/log/app.log).
        self._bases = tuple(literal_base(p).rstrip("/") or "/" for p in allowed)

    def __call__(self, real_dir: str) -> bool:
        real = real_dir.rstrip("/") or "/"
        for base in self._bases:
            if base == "/" or real == base or real.startswith(base + "/") or base.startswith(real.rstrip("/") + "/"):
                return True
        return False


@dataclass
class GlobResult:
    paths: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)  # those it entered, for a pattern without `**`
    problem: str = ""  # the limit that stopped the walk, for the operator
    reason: str = ""  # its metric label


class _Stop(Exception):
    pass


def expand(pattern: str, may_hold: Callable[[str], bool], max_files: int = 100_000,
           max_dirs: int = MAX_DIRS, max_depth: int = MAX_DEPTH, deadline: float = DEADLINE) -> GlobResult:
    """The files (not folders) that `pattern` matches, sorted, within the limits above; for a
    pattern without `**`, also the folders it entered (the places a new match can appear)."""
    result = GlobResult()
    base = literal_base(pattern)
    comps = [c for c in pattern[len(base):].split("/") if c]
    if not comps:
        return result
    try:
        real_base = os.path.realpath(base)
    except OSError:
        return result
    if not may_hold(real_base):
        result.problem = "its folder resolves outside [agent] allowed_paths"
        return result
    matchers = [re.compile(fnmatch.translate(c)).match if has_glob(c) and c != "**" else None for c in comps]
    kept: list[_Last] = []  # a heap: the max_files smallest paths seen, the largest on top
    seen: set[str] = set()
    visited: set[tuple[int, int, int]] = set()
    stop_at = time.monotonic() + deadline
    dirs = 0
    matched = 0
    fixed_depth = "**" not in comps  # its folders are few and known: the caller may watch them all

    def add(path: str) -> None:
        # "The first max_files" are the first in sorted order, as the operator reads a listing;
        # only those are held (100,000 matches cost the memory of max_files), the rest counted.
        nonlocal matched
        if path in seen:
            return
        matched += 1
        if len(kept) < max_files:
            heapq.heappush(kept, _Last(path))
            seen.add(path)
        elif path < kept[0].path:
            seen.discard(heapq.heapreplace(kept, _Last(path)).path)
            seen.add(path)

    def enter(d: str, real: str, i: int, depth: int) -> None:
        nonlocal dirs
        if time.monotonic() > stop_at:
            result.problem = f"expanding it took more than {deadline:g}s; the walk stopped there"
            raise _Stop
        try:
            st = os.stat(d)
        except OSError:
            return
        key = (st.st_dev, st.st_ino, i)
        if key in visited:
            return  # a symlink loop, or the same folder under two names
        visited.add(key)
        dirs += 1
        if dirs > max_dirs:
            result.problem = f"it spans more than {max_dirs} folders; the walk stopped there"
            raise _Stop
        if fixed_depth:
            result.folders.append(d)
        comp, last = comps[i], i == len(comps) - 1
        if comp == "**":
            if not last:
                enter(d, real, i + 1, depth)
            if depth >= max_depth:
                result.problem = result.problem or \
                    f"'**' goes deeper than {max_depth} folders; deeper ones are not collected"
                return
            for entry, sub_real in _children(d, real, comp, may_hold):
                if sub_real is not None:
                    enter(entry.path, sub_real, i, depth + 1)
                elif last:
                    add(entry.path)
            return
        match = matchers[i]
        if match is None:  # a literal component
            path = os.path.join(d, comp)
            if last:
                if os.path.lexists(path) and not os.path.isdir(path):
                    add(path)
            elif os.path.isdir(path):
                sub_real = _resolve(path, os.path.join(real, comp), may_hold)
                if sub_real is not None:
                    enter(path, sub_real, i + 1, depth + 1)
            return
        for entry, sub_real in _children(d, real, comp, may_hold):
            if not match(entry.name):
                continue
            if sub_real is not None:
                if not last:
                    enter(entry.path, sub_real, i + 1, depth + 1)
            elif last:
                add(entry.path)

    try:
        enter(base, real_base, 0, 0)
    except _Stop:
        pass
    except RecursionError:
        result.problem = "it nests too deep"
    if result.problem:
        result.reason = "glob_limit"
    if matched > max_files:
        more = "at least " if result.problem else ""
        result.problem = (f"it matches {more}{matched} files; only the first {max_files} are collected "
                          "(raise [agent] max_files_per_glob to follow more)"
                          + (f" ({result.problem})" if result.problem else ""))
        result.reason = "too_many_files"
    result.paths = sorted(item.path for item in kept)
    return result


class _Last:
    """Orders paths largest first, so heapq's min-heap keeps the largest of the kept on top."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def __lt__(self, other: _Last) -> bool:
        return self.path > other.path


def _resolve(path: str, joined_real: str, may_hold: Callable[[str], bool]) -> str | None:
    """The resolved path of a folder we may enter; None when a symlink leads outside."""
    if os.path.islink(path):
        real = os.path.realpath(path)
        return real if may_hold(real) else None
    return joined_real


def _children(d: str, real: str, comp: str, may_hold: Callable[[str], bool]):  # type: ignore[no-untyped-def]
    """(entry, resolved folder path or None for a non-folder) for the visible entries of `d`;
    folders that resolve outside allowed_paths are left out entirely."""
    hidden_ok = comp.startswith(".")
    try:
        it = os.scandir(d)
    except OSError:
        return
    with it:  # one entry at a time: a folder of 100,000 files is not held in memory
        yield from _visible(it, real, hidden_ok, may_hold)


def _visible(it, real: str, hidden_ok: bool, may_hold: Callable[[str], bool]):  # type: ignore[no-untyped-def]
    for entry in it:
        if entry.name.startswith(".") and not hidden_ok:
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if not is_dir:
            yield entry, None
            continue
        sub_real = _resolve(entry.path, os.path.join(real, entry.name), may_hold)
        if sub_real is not None:
            yield entry, sub_real
