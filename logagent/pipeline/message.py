"""The Kafka message of a log line: its JSON shape, built fast, and cut to fit a topic's limit.

`MessageFormat` turns a file's lines into the messages of docs/messages.md without building a
dict per line (everything constant per file is pre-encoded). `RESERVED_FIELDS` are its keys,
which an entry's `fields` may not set. `fit_message` is the sink's way back: a message too large
for its topic has its `data` cut and `"truncated": true` set.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import orjson

# The plain lines' messages built in C (_format.c) where it was built at install; else `%` per line.
_format: ModuleType | None
try:
    from logagent.pipeline import _format
except ImportError:
    _format = None

Line = tuple[int, bytes, bool]  # (offset of the line's start, its bytes without "\n", truncated)
RESERVED_FIELDS = frozenset({"ip", "data", "host", "path", "offset", "msgid", "timestamp", "module", "truncated"})
# Keys of the messages of a container log (an entry with a `format` other than plain), which its
# `fields` may not set either: the runtime's time and stream, and the pod's identity.
CONTAINER_FIELDS = frozenset({"time", "stream", "kubernetes"})


_cached: tuple[int, bytes] = (-1, b"")  # the whole second of the last utc_timestamp() and its prefix


def utc_timestamp() -> bytes:
    """Now as ISO 8601 UTC with microseconds and a Z, e.g. 2026-11-25T14:00:00.123456Z.

    Called once per chunk read: the date and time up to the second are formatted once a second
    and only the microseconds each time (2.3x cheaper than datetime's strftime per call). The
    second and its prefix are one tuple, replaced whole: a caller on another thread never pairs
    one second's prefix with another's microseconds."""
    global _cached
    sec, micros = divmod(time.time_ns() // 1000, 1_000_000)
    cached = _cached
    if cached[0] != sec:
        cached = _cached = (sec, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec)).encode())
    return cached[1] + b"%06dZ" % micros


# Printable ASCII but `"` and `\`, and the newline (never inside a line): bytes a JSON string holds as they are.
_JSON_SAFE = bytes(b for b in range(0x20, 0x7F) if b not in b'"\\') + b"\n"


def _json_plain(data: bytes) -> bool:
    """True when every UTF-8 line in `data` is its own JSON string body (ASCII, nothing to escape).
    translate() deletes the safe bytes in one C pass: anything left needs the slow path."""
    return not data.translate(None, _JSON_SAFE)


# The same check in _format.c where it was built: a table per byte, a tenth of translate()'s cost.
json_plain: Callable[[bytes], bool] = _format.json_plain if _format is not None else _json_plain


class MessageFormat:
    """Pre-encodes everything constant per file so a message is one `%` formatting."""

    __slots__ = ("encoding", "_plain", "_quoted", "_quoted_trunc", "replaced", "_ids", "_parts")

    def __init__(self, ip: str, host: str, path: str, module: str = "",
                 fields: Mapping[str, Any] | None = None, encoding: str = "utf-8", id_prefix: str = "") -> None:
        """id_prefix: the file's part of each message's stable id (`<host id>/<file uid>/`): with it,
        `msgid` is that and the line's offset, the same whenever the line is sent again (docs/messages.md)."""
        self.encoding = encoding
        self.replaced = 0  # lines of the last build that had bytes invalid in the encoding
        self._ids = bool(id_prefix)
        head = b'{"ip":' + orjson.dumps(ip) + b',"data":'
        mid = b',"host":' + orjson.dumps(host) + b',"path":' + orjson.dumps(path) + b',"offset":'
        # The offset is formatted twice: in `offset` and at the end of `msgid` (its prefix is constant).
        offset_fmt = b"%d" + (b',"msgid":' + orjson.dumps(id_prefix)[:-1].replace(b"%", b"%%") + b'%d"'
                              if id_prefix else b"")
        tail = b""
        if module:
            tail += b',"module":' + orjson.dumps(module)
        if fields:
            tail += b"," + orjson.dumps(dict(fields))[1:-1]

        def template(data: bytes, end: bytes) -> bytes:
            # %-formatting fills data, offset and timestamp; `%` in the constant parts is escaped.
            return head.replace(b"%", b"%%") + data + mid.replace(b"%", b"%%") + offset_fmt + b"%s" + \
                (tail + end).replace(b"%", b"%%")

        self._plain = template(b'"%s"', b"}")  # data that needs no escaping
        # The same message in parts, for _format.build_plain: before the line, after it up to the offset,
        # the msgid up to its offset (None: no id), and after the timestamp.
        self._parts = (head + b'"', b'"' + mid,
                       b',"msgid":' + orjson.dumps(id_prefix)[:-1] if id_prefix else None, tail + b"}")
        self._quoted = template(b"%s", b"}")  # data already a JSON string
        self._quoted_trunc = template(b"%s", b',"truncated":true}')

    def build_split(self, held: bytes, data: bytes, start: int, max_line: int,
                    timestamp: bytes) -> tuple[list[bytes], bytes] | None:
        """The messages of the complete lines of `held` + `data` (the first line from offset `start`) and
        the bytes after the last newline, in one pass of _format.split_build: split, checked as
        json_plain checks, built as build_plain builds (issue 23: at 10,000 files a line's split, check
        and build were three calls and a list). None, nothing done, when a byte needs escaping (or is a
        CR), a line or the rest is longer than `max_line`, or _format is not built: LineSplitter's and
        build_plain's own paths decide then."""
        if _format is None:
            return None
        before, after, id_before, end = self._parts
        self.replaced = 0
        split: tuple[list[bytes], bytes] | None = _format.split_build(
            before, after, id_before, end, start, held, data, max_line, b',"timestamp":"' + timestamp + b'"')
        return split

    def build_plain(self, start: int, lines: list[bytes], timestamp: bytes, plain: bool) -> list[bytes]:
        """Messages for consecutive complete lines from `start` (LineSplitter.feed_plain's output).
        With `plain` (json_plain said so for their bytes) the line goes between quotes as it is."""
        ts = b',"timestamp":"' + timestamp + b'"'
        self.replaced = 0
        if plain and _format is not None:
            before, after, id_before, end = self._parts
            built: list[bytes] = _format.build_plain(before, after, id_before, end, start, lines, ts)
            return built
        out: list[bytes] = []
        append = out.append
        off = start
        if plain and self._ids:
            fmt = self._plain
            for line in lines:
                append(fmt % (line, off, off, ts))
                off += len(line) + 1
        elif plain:
            fmt = self._plain
            for line in lines:
                append(fmt % (line, off, ts))
                off += len(line) + 1
        else:
            fmt, dumps = self._quoted, orjson.dumps
            texts = self._decode(lines)
            for line, text in zip(lines, texts, strict=True):
                append(fmt % ((dumps(text), off, off, ts) if self._ids else (dumps(text), off, ts)))
                off += len(line) + 1
        return out

    def _decode(self, lines: list[bytes]) -> list[str]:
        """Lines as text; bytes invalid in the encoding become U+FFFD, counted in `replaced`."""
        encoding = self.encoding
        texts = [line.decode(encoding, "replace") for line in lines]
        self.replaced = sum(1 for text in texts if "\ufffd" in text)
        return texts

    def build_records(self, records: list[tuple[int, bytes, bool, bytes, bytes]], timestamp: bytes) -> list[bytes]:
        """One JSON message per line of a container log (sources/files/container.py's records:
        offset, text, truncated, the runtime's time, stream): `time` and `stream` follow
        `timestamp`; a line that was not in the format (no stream) has neither."""
        ts = b',"timestamp":"' + timestamp + b'"'
        fmt, fmt_trunc, dumps = self._quoted, self._quoted_trunc, orjson.dumps
        texts = self._decode([record[1] for record in records])
        out: list[bytes] = []
        for (off, _, trunc, written, stream), text in zip(records, texts, strict=True):
            after = ts + b',"time":"' + written + b'","stream":"' + stream + b'"' if stream else ts
            values = (dumps(text), off, off, after) if self._ids else (dumps(text), off, after)
            out.append((fmt_trunc if trunc else fmt) % values)
        return out

    def build(self, lines: list[Line], timestamp: bytes) -> list[bytes]:
        """One JSON message per line, decoded from the file's encoding (bad bytes become U+FFFD)."""
        ts = b',"timestamp":"' + timestamp + b'"'
        fmt, fmt_trunc, dumps = self._quoted, self._quoted_trunc, orjson.dumps
        texts = self._decode([line for _, line, _ in lines])
        if lines[0][0] == 0 and texts[0].startswith("\ufeff"):
            texts[0] = texts[0].lstrip("\ufeff")  # a byte-order mark is not data
        if self._ids:
            return [(fmt_trunc if trunc else fmt) % (dumps(text), off, off, ts)
                    for (off, _, trunc), text in zip(lines, texts, strict=True)]
        return [(fmt_trunc if trunc else fmt) % (dumps(text), off, ts)
                for (off, _, trunc), text in zip(lines, texts, strict=True)]



def fit_message(value: bytes, limit: int) -> tuple[bytes, str] | None:
    """A log message cut to at most `limit` bytes: its `data` shortened and `"truncated": true`
    set; returns (message, its path). None when it is not a log message, or does not fit even
    with empty data. Rare (only messages above the broker's limit), so it may parse the JSON.

    Removing one character removes at least one byte of JSON (escapes remove up to six), so
    cutting the excess in characters fits in one or two rounds."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), str):
        return None
    data: str = doc["data"]
    doc["truncated"] = True
    while True:
        out = orjson.dumps(doc)
        excess = len(out) - limit
        if excess <= 0:
            return out, str(doc.get("path", ""))
        if not data:
            return None
        data = data[: max(0, len(data) - excess)]
        doc["data"] = data
