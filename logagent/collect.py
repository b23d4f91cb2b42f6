"""Collect entries: the schema of the `collect_log_key` value and of `[collect] files`.

The value is a JSON array of objects ``{"path", "topic", "module"?, "start"?, "fields"?}``.
Validation is per entry: a bad entry is refused with a message naming the key, the
entry and the problem, and the good entries beside it still apply.
"""

from __future__ import annotations

import codecs
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Mapping

from .errors import CollectConfigError
from .lines import newline_of, resolve_encoding
from .multiline import MultilineSpec, parse_multiline

MAX_VALUE_BYTES = 1024 * 1024
RESERVED_FIELDS = frozenset({"ip", "data", "host", "path", "offset", "timestamp", "module", "truncated"})
TEXT_NEWLINES = (b"\n", b"\n\x00", b"\x00\n", b"\n\x00\x00\x00", b"\x00\x00\x00\n")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


@dataclass(frozen=True)
class CollectEntry:
    """One file or glob to collect, and where its lines go."""

    path: str
    topic: str
    module: str = ""
    start: str = "end"
    fields: Mapping[str, Any] = field(default_factory=dict)
    encoding: str = "utf-8"
    multiline: MultilineSpec | None = None

    @property
    def is_glob(self) -> bool:
        return any(ch in self.path for ch in "*?[")

    def same_reading(self, other: "CollectEntry") -> bool:
        """True when the files are read the same way (path, encoding, multiline): a change of
        topic, module, fields or start is applied in place. (`start` only matters when an
        entry is first applied.)"""
        return (self.path, self.encoding, self.multiline) == (other.path, other.encoding, other.multiline)


@lru_cache(maxsize=512)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a path glob to a regex: `**` spans folders, `*` and `?` do not, `[...]` as in fnmatch."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):  # `**/` also matches no folder at all
                out.append("(?:.*/)?")
                i += 1
            else:
                out.append(".*")
            continue
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 2 if pattern.startswith("[!", i) or pattern.startswith("[]", i) else i + 1)
            if end < 0:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1:end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z", re.S)


def path_allowed(path: str, allowed: tuple[str, ...]) -> bool:
    """True when the (normalised) path or path glob lies inside one of the allowed globs."""
    norm = os.path.normpath(path)
    return any(glob_regex(pattern).match(norm) for pattern in allowed)


def parse_entry(raw: Any, where: str, allowed: tuple[str, ...]) -> CollectEntry:
    """Validate one decoded entry; raise CollectConfigError naming `where`."""
    if not isinstance(raw, dict):
        raise CollectConfigError(f"{where}: expected an object with path and topic, got {type(raw).__name__}")
    path, topic = raw.get("path"), raw.get("topic")
    if not isinstance(path, str) or not path:
        raise CollectConfigError(f"{where}: path must be a non-empty string, got {path!r}")
    if not path.startswith("/"):
        raise CollectConfigError(f"{where}: path {path!r} is relative; an absolute path is required")
    if "\x00" in path:
        raise CollectConfigError(f"{where}: path contains a NUL byte")
    if os.path.normpath(path) != path.rstrip("/") and ".." in path.split("/"):
        raise CollectConfigError(f"{where}: path {path!r} contains '..'")
    if not path_allowed(path, allowed):
        raise CollectConfigError(f"{where}: path {path!r} is outside [agent] allowed_paths "
                                 f"({', '.join(allowed) or 'none'})")
    if not isinstance(topic, str) or not topic.strip():
        raise CollectConfigError(f"{where}: topic must be a non-empty string, got {topic!r}")
    if not _TOPIC.match(topic):
        raise CollectConfigError(f"{where}: topic {topic!r} is not a valid Kafka topic name "
                                 "(letters, digits, '.', '_', '-', at most 249)")
    module = raw.get("module", "")
    if module is None:
        module = ""
    if not isinstance(module, str):
        raise CollectConfigError(f"{where}: module must be a string, got {module!r}")
    start = raw.get("start", "end")
    if start not in ("end", "beginning"):
        raise CollectConfigError(f"{where}: start must be 'end' or 'beginning', got {start!r}")
    fields = raw.get("fields", {}) or {}
    if not isinstance(fields, dict):
        raise CollectConfigError(f"{where}: fields must be an object, got {fields!r}")
    clash = RESERVED_FIELDS.intersection(fields)
    if clash:
        raise CollectConfigError(f"{where}: fields may not set reserved keys {sorted(clash)}")
    encoding = raw.get("encoding", "utf-8")
    if not isinstance(encoding, str) or not encoding:
        raise CollectConfigError(f"{where}: encoding must be a codec name, got {encoding!r}")
    try:
        canonical = codecs.lookup(encoding)
    except LookupError:
        raise CollectConfigError(f"{where}: unknown encoding {encoding!r}") from None
    if not getattr(canonical, "_is_text_encoding", True) or \
            newline_of(resolve_encoding(encoding, b"")) not in TEXT_NEWLINES:
        raise CollectConfigError(f"{where}: encoding {encoding!r} cannot be split into lines")
    multiline = parse_multiline(raw.get("multiline"), where)
    return CollectEntry(path=path, topic=topic, module=module, start=start, fields=dict(fields),
                        encoding=encoding, multiline=multiline)


def parse_collect_value(value: bytes | str | None, key: str,
                        allowed: tuple[str, ...]) -> tuple[list[CollectEntry], list[str]]:
    """Parse a collect_log value: (good entries, one error line per refused entry).

    Raises CollectConfigError when the value as a whole is unusable (too large,
    not JSON, not an array): the caller keeps its last good configuration.
    """
    if value is None:
        return [], []
    size = len(value)
    if size > MAX_VALUE_BYTES:
        raise CollectConfigError(f"{key}: value of {size} bytes refused (limit {MAX_VALUE_BYTES})")
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CollectConfigError(f"{key}: not valid JSON: {exc}") from None
    if data is None:
        return [], []
    if not isinstance(data, list):
        raise CollectConfigError(f"{key}: expected a JSON array of entries, got {type(data).__name__}")
    entries: list[CollectEntry] = []
    errors: list[str] = []
    seen: set[str] = set()
    for index, raw in enumerate(data):
        label = f"{key} entry {index}" + (f" ({raw.get('path')!r})" if isinstance(raw, dict) else "")
        try:
            entry = parse_entry(raw, label, allowed)
        except CollectConfigError as exc:
            errors.append(str(exc))
            continue
        if entry.path in seen:
            errors.append(f"{label}: duplicate path, the first entry for it is used")
            continue
        seen.add(entry.path)
        entries.append(entry)
    return entries, errors


def dump_entries(entries: list[CollectEntry]) -> str:
    """The JSON value that parse_collect_value reads back to the same entries."""
    out = []
    for e in entries:
        item: dict[str, Any] = {"path": e.path, "topic": e.topic}
        if e.module:
            item["module"] = e.module
        if e.start != "end":
            item["start"] = e.start
        if e.fields:
            item["fields"] = dict(e.fields)
        if e.encoding != "utf-8":
            item["encoding"] = e.encoding
        if e.multiline is not None:
            m = e.multiline
            item["multiline"] = m.preset if m.preset and (m.max_lines, m.max_bytes, m.timeout) == (500, 0, 5.0) \
                else {k: v for k, v in (("preset", m.preset), ("pattern", m.pattern), ("negate", m.negate),
                                        ("match", m.match), ("max_lines", m.max_lines),
                                        ("max_bytes", m.max_bytes), ("timeout", m.timeout)) if v or k == "negate"}
        out.append(item)
    return json.dumps(out, indent=2, ensure_ascii=False)
