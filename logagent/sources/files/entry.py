"""Collect entries: the schema of the `collect_log_key` value and of `[collect] files`.

The value is a JSON array of objects ``{"path", "topic", "module"?, "start"?, "fields"?,
"encoding"?, "multiline"?, "format"?}``. The value as a whole first passes values.decode_json_value
(size, UTF-8, strict JSON, nesting). Validation is then per entry: a bad entry is refused
with a message naming the key, the entry and the problem, and the good entries beside it
still apply.
"""

from __future__ import annotations

import codecs
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from logagent.config.values import MAX_VALUE_BYTES, check_topic, decode_json_value, has_glob, orjson_problem, show
from logagent.errors import CollectConfigError
from logagent.pipeline.message import CONTAINER_FIELDS, RESERVED_FIELDS
from logagent.sources.files.container import FORMATS
from logagent.sources.files.lines import newline_of, resolve_encoding
from logagent.sources.files.multiline import MultilineSpec, parse_multiline
from logagent.sources.files.pods import SAMPLE, expand_topic, is_template, template_problem

__all__ = ["MAX_VALUE_BYTES", "CollectEntry", "dump_entries", "entry_items", "entry_label", "glob_regex",
           "normalise_path", "parse_collect_items", "parse_collect_value", "parse_entry", "path_allowed"]

TEXT_NEWLINES = (b"\n", b"\n\x00", b"\x00\n", b"\n\x00\x00\x00", b"\x00\x00\x00\n")


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
    format: str = "plain"  # or a container runtime's: "cri", "docker", "auto" (sources/files/container.py)

    @property
    def is_glob(self) -> bool:
        return has_glob(self.path)

    def same_reading(self, other: CollectEntry) -> bool:
        """True when the files are read the same way (path, encoding, multiline, format): a change
        of topic, module, fields or start is applied in place. (`start` only matters when an
        entry is first applied.)"""
        return (self.path, self.encoding, self.multiline, self.format) == \
            (other.path, other.encoding, other.multiline, other.format)


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


def normalise_path(path: str) -> str:
    """Repeated slashes and "." components collapsed, no trailing slash: `/d//./x.log` is `/d/x.log`.

    As os.path.normpath, but glob characters are kept as they are and a leading `//` is
    collapsed too (normpath keeps it: POSIX leaves its meaning open; Linux reads it as `/`).
    Callers refuse `..` before: resolving it by text would be wrong across symlinks.
    """
    return "/" + "/".join(part for part in path.split("/") if part not in ("", "."))


@lru_cache(maxsize=256)
def _encoding_problem(name: str) -> str | None:
    """Why the tailer could not read a file in codec `name`, or None.

    Decided by doing what the tailer does: a sample with invalid bytes in it is decoded
    with errors="replace" (whole, and through an incremental decoder fed one byte at a
    time), and must come back as the same lines. Codecs that refuse "replace" (idna),
    choke on bytes they do not expect (punycode), are not text codecs (rot13, base64, zlib)
    or have no plain newline (unicode_escape, EBCDIC) are refused here, not in a tailer
    that would crash on every read.
    """
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, UnicodeError, TypeError):
        return "unknown encoding"
    if not getattr(info, "_is_text_encoding", True):
        return "not a text encoding"
    try:
        codec = resolve_encoding(name, b"")
        newline = newline_of(codec)
        if newline not in TEXT_NEWLINES:
            return "its newline is not a plain \\n: lines cannot be split"
        data = "a line\nnext\n".encode(codec) + b"\xff\xfe\xfd\x80" + newline
        whole = data.decode(codec, "replace")
        decoder = codecs.getincrementaldecoder(codec)(errors="replace")
        pieces = "".join(decoder.decode(data[i:i + 1]) for i in range(len(data))) + decoder.decode(b"", True)
    except Exception as exc:  # noqa: BLE001 - any failure of a codec is the codec's problem, here and not later
        return f"cannot decode with replacement ({type(exc).__name__})"
    for text in (whole, pieces):
        if text.split("\n")[:2] != ["a line", "next"]:
            return "does not decode plain text back to its lines"
    return None


def parse_entry(raw: Any, where: str, allowed: tuple[str, ...]) -> CollectEntry:
    """Validate one decoded entry; raise CollectConfigError naming `where`.

    Total over decoded JSON: any value gives an entry or a CollectConfigError, never another
    exception here or later (what is accepted can be encoded by the message builder and
    saved as the last good configuration). The path comes back normalised.
    """
    if not isinstance(raw, dict):
        raise CollectConfigError(f"{where}: expected an object with path and topic, got {type(raw).__name__}")
    path, topic = raw.get("path"), raw.get("topic")
    if not isinstance(path, str) or not path:
        raise CollectConfigError(f"{where}: path must be a non-empty string, got {show(path)}")
    if not path.startswith("/"):
        raise CollectConfigError(f"{where}: path {show(path)} is relative; an absolute path is required")
    if "\x00" in path:
        raise CollectConfigError(f"{where}: path contains a NUL byte")
    if ".." in path.split("/"):
        raise CollectConfigError(f"{where}: path {show(path)} contains '..'")
    if orjson_problem(path) is not None:
        raise CollectConfigError(f"{where}: path {show(path)} is not valid Unicode (a lone surrogate)")
    path = normalise_path(path)
    if not path_allowed(path, allowed):
        raise CollectConfigError(f"{where}: path {show(path)} is outside [agent] allowed_paths "
                                 f"({', '.join(allowed) or 'none'})")
    templated = isinstance(topic, str) and is_template(topic)
    topic = str(topic) if templated else check_topic(topic, where, CollectConfigError)
    module = raw.get("module", "")
    if module is None:
        module = ""
    if not isinstance(module, str):
        raise CollectConfigError(f"{where}: module must be a string, got {show(module)}")
    problem = orjson_problem(module)
    if problem is not None:
        raise CollectConfigError(f"{where}: module cannot be sent as JSON: {problem}")
    start = raw.get("start", "end")
    if start not in ("end", "beginning"):
        raise CollectConfigError(f"{where}: start must be 'end' or 'beginning', got {show(start)}")
    fields = raw.get("fields", {}) or {}
    if not isinstance(fields, dict):
        raise CollectConfigError(f"{where}: fields must be an object, got {show(fields)}")
    clash = RESERVED_FIELDS.intersection(fields)
    if clash:
        raise CollectConfigError(f"{where}: fields may not set reserved keys {sorted(clash)}")
    problem = orjson_problem(fields)
    if problem is not None:
        # Checked as the message builder encodes them (orjson, 64-bit integers, no lone surrogates).
        raise CollectConfigError(f"{where}: fields cannot be sent as JSON: {problem}")
    encoding = raw.get("encoding", "utf-8")
    if not isinstance(encoding, str) or not encoding:
        raise CollectConfigError(f"{where}: encoding must be a codec name, got {show(encoding)}")
    problem = _encoding_problem(encoding)
    if problem == "unknown encoding":
        raise CollectConfigError(f"{where}: unknown encoding {show(encoding)}")
    if problem is not None:
        raise CollectConfigError(f"{where}: encoding {show(encoding)} refused: {problem}")
    multiline = parse_multiline(raw.get("multiline"), where)
    fmt = _format(raw, where, fields, encoding, multiline)
    if templated:
        _check_template(topic, fmt, where)
    return CollectEntry(path=path, topic=topic, module=module, start=start, fields=dict(fields),
                        encoding=encoding, multiline=multiline, format=fmt)


def _check_template(topic: str, fmt: str, where: str) -> None:
    """A topic template: only over a pod's names (known from a container log's path), and a topic
    Kafka takes once filled in (each file's own is checked again when it is opened)."""
    problem = template_problem(topic)
    if problem is not None:
        raise CollectConfigError(f"{where}: topic template {show(topic)}: {problem}")
    if fmt == "plain":
        raise CollectConfigError(f"{where}: topic template {show(topic)} needs a container format "
                                 "(cri, docker or auto): its names come from the pod's log path")
    check_topic(expand_topic(topic, SAMPLE), f"{where}: topic template {show(topic)} filled in", CollectConfigError)


def _format(raw: dict[str, Any], where: str, fields: dict[str, Any], encoding: str,
            multiline: MultilineSpec | None) -> str:
    """The entry's `format`: plain (the default) or a container runtime's, whose records are
    parsed as bytes: its encoding must write ASCII as ASCII, and its fields may not set the keys
    its messages carry (time, stream, kubernetes)."""
    fmt = raw.get("format", "plain")
    if fmt is None:
        fmt = "plain"
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise CollectConfigError(f"{where}: format must be one of {', '.join(FORMATS)}, got {show(fmt)}")
    if fmt == "plain":
        return fmt
    if multiline is not None:
        raise CollectConfigError(f"{where}: multiline cannot be combined with format {fmt!r} (the runtime's "
                                 "partial records are joined; multiline events of container logs are not supported)")
    sample = '{"log":"x\n","stream":"stdout"} 2026-12-06T00:00:00Z stdout F x'
    if sample.encode(resolve_encoding(encoding, b"")) != sample.encode():
        raise CollectConfigError(f"{where}: format {fmt!r} needs an encoding that writes ASCII as ASCII "
                                 f"(utf-8), not {show(encoding)}")
    clash = CONTAINER_FIELDS.intersection(fields)
    if clash:
        raise CollectConfigError(f"{where}: fields may not set {sorted(clash)}: the messages of format "
                                 f"{fmt!r} carry them")
    return fmt


def parse_collect_value(value: bytes | str | None, key: str,
                        allowed: tuple[str, ...]) -> tuple[list[CollectEntry], list[str]]:
    """Parse a collect_log value: (good entries, one error line per refused entry).

    A missing key (None) collects nothing. Raises CollectConfigError when the value as a
    whole is unusable (too large, not UTF-8 JSON, nested too deep, not an array, null):
    the caller keeps its last good configuration. Entries whose paths are the same once
    normalised (`/d/x.log`, `/d//x.log`, `/d/./x.log`) are one: the first is used.
    """
    if value is None:
        return [], []
    data = decode_json_value(value, key, CollectConfigError)
    if not isinstance(data, list):
        hint = " (to collect nothing, set [])" if data is None else ""
        raise CollectConfigError(f"{key}: expected a JSON array of entries, got "
                                 f"{'null' if data is None else type(data).__name__}{hint}")
    return parse_collect_items(enumerate(data), key, allowed)


def entry_label(key: str, index: int, raw: Any) -> str:
    """How errors name an entry: `<key> entry <index> ('<path>')`."""
    return f"{key} entry {index}" + (f" ({show(raw.get('path'))})" if isinstance(raw, dict) else "")


def parse_collect_items(items: Iterable[tuple[int, Any]], key: str,
                        allowed: tuple[str, ...]) -> tuple[list[CollectEntry], list[str]]:
    """parse_collect_value's per-entry part, over (index in the value, decoded entry) pairs."""
    entries: list[CollectEntry] = []
    errors: list[str] = []
    seen: dict[str, str] = {}  # normalised path -> label of the entry that has it
    for index, raw in items:
        label = entry_label(key, index, raw)
        try:
            entry = parse_entry(raw, label, allowed)
        except CollectConfigError as exc:
            errors.append(str(exc))
            continue
        if entry.path in seen:
            errors.append(f"{label}: duplicate path: {seen[entry.path]} has the same path "
                          f"{show(entry.path)} once normalised; that entry is used, this one refused")
            continue
        seen[entry.path] = label
        entries.append(entry)
    return entries, errors


def dump_entries(entries: list[CollectEntry]) -> str:
    """The JSON value that parse_collect_value reads back to the same entries."""
    return json.dumps(entry_items(entries), indent=2, ensure_ascii=False)


def entry_items(entries: Iterable[CollectEntry]) -> list[dict[str, Any]]:
    """The entries as the JSON objects of a collect value (defaults left out)."""
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
        if e.format != "plain":
            item["format"] = e.format
        if e.multiline is not None:
            m = e.multiline
            item["multiline"] = m.preset if m.preset and (m.max_lines, m.max_bytes, m.timeout) == (500, 0, 5.0) \
                else {k: v for k, v in (("preset", m.preset), ("pattern", m.pattern), ("negate", m.negate),
                                        ("match", m.match), ("max_lines", m.max_lines),
                                        ("max_bytes", m.max_bytes), ("timeout", m.timeout)) if v or k == "negate"}
        out.append(item)
    return out
