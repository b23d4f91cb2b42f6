"""Bytes to lines to Kafka messages: the tailer's hot path, kept pure for tests.

`LineSplitter` turns chunks read from a file into complete lines with their
offsets, holding a final partial line until its newline arrives and cutting
over-long lines. `MessageFormat` turns a line into the JSON message of
DESIGN.md without building a dict per line.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

Line = tuple[int, bytes, bool]  # (offset of the line's start, its bytes without "\n", truncated)


def resolve_encoding(name: str, head: bytes) -> str:
    """The codec to decode a file with: `utf-16`/`utf-32` pick their byte order from a BOM
    (little-endian without one), `utf-8` also reads files that start with a BOM."""
    import codecs

    canonical = codecs.lookup(name).name
    if canonical == "utf-16":
        return "utf-16-be" if head.startswith(codecs.BOM_UTF16_BE) else "utf-16-le"
    if canonical == "utf-32":
        return "utf-32-be" if head.startswith(codecs.BOM_UTF32_BE) else "utf-32-le"
    return canonical


def newline_of(encoding: str) -> bytes:
    """The newline in this (byte-order-resolved) codec: b"\\n", or b"\\n\\x00" for UTF-16LE, ..."""
    return "\n".encode(encoding)


class LineSplitter:
    """Splits a byte stream into lines; holds the partial tail between chunks.

    The newline is that of the file's encoding; for UTF-16/32 it is 2 or 4 bytes
    and is only taken at a character boundary, never inside a character.
    """

    __slots__ = ("max_line_bytes", "_nl", "_cr", "_width", "_buf", "_buf_start", "_skipping", "_skip_start")

    def __init__(self, max_line_bytes: int, encoding: str = "utf-8") -> None:
        self._nl = newline_of(encoding)
        self._cr = "\r".encode(encoding)
        self._width = len(self._nl)
        self.max_line_bytes = max_line_bytes - max_line_bytes % self._width
        self._buf = b""
        self._buf_start = 0
        self._skipping = False  # discarding the rest of a line that was cut
        self._skip_start = 0

    def reset(self, offset: int) -> None:
        """Forget any partial line; the next chunk starts at `offset`."""
        self._buf = b""
        self._buf_start = offset
        self._skipping = False

    @property
    def resume_offset(self) -> int:
        """Where a restart must read again so no line is lost or cut in two."""
        return self._skip_start if self._skipping else self._buf_start

    @property
    def pending(self) -> int:
        return len(self._buf)

    @property
    def held(self) -> bytes:
        """The partial line held until its newline arrives."""
        return self._buf

    def _find(self, data: bytes, pos: int, base: int) -> int:
        """Index of the next newline at a character boundary (file offset multiple of the width)."""
        nl, width = self._nl, self._width
        i = data.find(nl, pos)
        if width > 1:
            while i >= 0 and (base + i) % width:
                i = data.find(nl, i + 1)
        return i

    def _split(self, data: bytes, base: int) -> tuple[list[bytes], bytes]:
        if self._width == 1:
            parts = data.split(self._nl)
            return parts, parts.pop()
        parts, pos = [], 0
        while True:
            i = self._find(data, pos, base)
            if i < 0:
                return parts, data[pos:]
            parts.append(data[pos:i])
            pos = i + self._width

    def feed(self, data: bytes, offset: int) -> list[Line]:
        """Lines completed by `data`, which starts at file offset `offset`."""
        out: list[Line] = []
        maxlen, width, cr = self.max_line_bytes, self._width, self._cr
        pos = 0
        if self._skipping:
            nl = self._find(data, 0, offset)
            if nl < 0:
                return out
            self._skipping = False
            pos = nl + width
            self._buf = b""
            self._buf_start = offset + pos
        if self._buf:
            start = self._buf_start
            data = self._buf + data[pos:] if pos else self._buf + data
        else:
            start = offset + pos
            if pos:
                data = data[pos:]
        parts, rest = self._split(data, start)
        append = out.append
        for line in parts:
            n = len(line)
            if n > maxlen:
                append((start, line[:maxlen], True))
            elif line[-width:] == cr:
                append((start, line[:-width], False))
            else:
                append((start, line, False))
            start += n + width
        if len(rest) > maxlen:
            append((start, rest[:maxlen], True))
            self._skipping = True
            self._skip_start = start
            self._buf = b""
            self._buf_start = start + len(rest)
        else:
            self._buf = rest
            self._buf_start = start
        return out

    def feed_plain(self, data: bytes, offset: int) -> tuple[int, list[bytes]] | None:
        """The fast path of feed: (offset of the first line, complete lines) when nothing in
        `data` needs care (a one-byte newline, no CR, no over-long line, no BOM, not skipping);
        None, with nothing consumed, when feed() must do it."""
        if self._width != 1 or self._skipping or self._cr in data or (offset == 0 and data[:1] in BOM_STARTS):
            return None
        start = self._buf_start if self._buf else offset
        parts = (self._buf + data if self._buf else data).split(self._nl)
        rest = parts[-1]
        if len(rest) > self.max_line_bytes or (len(parts) > 1 and max(map(len, parts)) > self.max_line_bytes):
            return None
        del parts[-1]
        self._buf = rest
        self._buf_start = start + sum(map(len, parts)) + len(parts)
        return start, parts

    def flush(self) -> list[Line]:
        """The held partial line as a last line (the file will not grow any more)."""
        if not self._buf:
            return []
        line, start = self._buf, self._buf_start
        self._buf_start += len(line)
        self._buf = b""
        if line.endswith(self._cr):
            line = line[:-self._width]
        return [(start, line, False)]


def utc_timestamp() -> bytes:
    """Now as ISO 8601 UTC with microseconds and a Z, e.g. 2026-11-25T14:00:00.123456Z."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()


# Printable ASCII but `"` and `\`, and the newline (never inside a line): bytes a JSON string holds as they are.
_JSON_SAFE = bytes(b for b in range(0x20, 0x7F) if b not in b'"\\') + b"\n"
BOM_STARTS = (b"\xef", b"\xff", b"\xfe", b"\x00")


def json_plain(data: bytes) -> bool:
    """True when every UTF-8 line in `data` is its own JSON string body (ASCII, nothing to escape).
    translate() deletes the safe bytes in one C pass: anything left needs the slow path."""
    return not data.translate(None, _JSON_SAFE)


class MessageFormat:
    """Pre-encodes everything constant per file so a message is one `%` formatting."""

    __slots__ = ("encoding", "_plain", "_quoted", "_quoted_trunc", "replaced")

    def __init__(self, ip: str, host: str, path: str, module: str = "",
                 fields: Mapping[str, Any] | None = None, encoding: str = "utf-8") -> None:
        self.encoding = encoding
        self.replaced = 0  # lines of the last build that had bytes invalid in the encoding
        head = b'{"ip":' + orjson.dumps(ip) + b',"data":'
        mid = b',"host":' + orjson.dumps(host) + b',"path":' + orjson.dumps(path) + b',"offset":'
        tail = b""
        if module:
            tail += b',"module":' + orjson.dumps(module)
        if fields:
            tail += b"," + orjson.dumps(dict(fields))[1:-1]

        def template(data: bytes, end: bytes) -> bytes:
            # %-formatting fills data, offset and timestamp; `%` in the constant parts is escaped.
            return head.replace(b"%", b"%%") + data + mid.replace(b"%", b"%%") + b"%d%s" + \
                (tail + end).replace(b"%", b"%%")

        self._plain = template(b'"%s"', b"}")  # data that needs no escaping
        self._quoted = template(b"%s", b"}")  # data already a JSON string
        self._quoted_trunc = template(b"%s", b',"truncated":true}')

    def build_plain(self, start: int, lines: list[bytes], timestamp: bytes, plain: bool) -> list[bytes]:
        """Messages for consecutive complete lines from `start` (LineSplitter.feed_plain's output).
        With `plain` (json_plain said so for their bytes) the line goes between quotes as it is."""
        ts = b',"timestamp":"' + timestamp + b'"'
        out: list[bytes] = []
        append = out.append
        off = start
        self.replaced = 0
        if plain:
            fmt = self._plain
            for line in lines:
                append(fmt % (line, off, ts))
                off += len(line) + 1
        else:
            fmt, dumps = self._quoted, orjson.dumps
            texts = self._decode(lines)
            for line, text in zip(lines, texts, strict=True):
                append(fmt % (dumps(text), off, ts))
                off += len(line) + 1
        return out

    def _decode(self, lines: list[bytes]) -> list[str]:
        """Lines as text; bytes invalid in the encoding become U+FFFD, counted in `replaced`."""
        encoding = self.encoding
        texts = [line.decode(encoding, "replace") for line in lines]
        self.replaced = sum(1 for text in texts if "\ufffd" in text)
        return texts

    def build(self, lines: list[Line], timestamp: bytes) -> list[bytes]:
        """One JSON message per line, decoded from the file's encoding (bad bytes become U+FFFD)."""
        ts = b',"timestamp":"' + timestamp + b'"'
        fmt, fmt_trunc, dumps = self._quoted, self._quoted_trunc, orjson.dumps
        texts = self._decode([line for _, line, _ in lines])
        if lines[0][0] == 0 and texts[0].startswith("\ufeff"):
            texts[0] = texts[0].lstrip("\ufeff")  # a byte-order mark is not data
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
