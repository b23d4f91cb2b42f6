"""Bytes to lines to Kafka messages: the tailer's hot path, kept pure for tests.

`LineSplitter` turns chunks read from a file into complete lines with their
offsets, holding a final partial line until its newline arrives and cutting
over-long lines. `MessageFormat` turns a line into the JSON message of
DESIGN.md without building a dict per line.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping

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
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()


class MessageFormat:
    """Pre-encodes everything constant per file so a message is a few concatenations."""

    __slots__ = ("_head", "_mid", "_tail", "_tail_trunc", "encoding")

    def __init__(self, ip: str, host: str, path: str, module: str = "",
                 fields: Mapping[str, Any] | None = None, encoding: str = "utf-8") -> None:
        self.encoding = encoding
        self._head = b'{"ip":' + orjson.dumps(ip) + b',"data":'
        self._mid = b',"host":' + orjson.dumps(host) + b',"path":' + orjson.dumps(path) + b',"offset":'
        tail = b""
        if module:
            tail += b',"module":' + orjson.dumps(module)
        if fields:
            tail += b"," + orjson.dumps(dict(fields))[1:-1]
        self._tail = tail + b"}"
        self._tail_trunc = tail + b',"truncated":true}'

    def build(self, lines: list[Line], timestamp: bytes) -> list[bytes]:
        """One JSON message per line, decoded from the file's encoding (bad bytes become U+FFFD)."""
        head, mid = self._head, self._mid
        ts = b',"timestamp":"' + timestamp + b'"'
        tail, tail_trunc = self._tail, self._tail_trunc
        dumps, encoding = orjson.dumps, self.encoding
        out = [head + dumps(line.decode(encoding, "replace")) + mid + str(off).encode() + ts
               + (tail_trunc if trunc else tail)
               for off, line, trunc in lines]
        if lines[0][0] == 0 and lines[0][1][:4].startswith(BOMS):
            off, line, trunc = lines[0]
            text = line.decode(encoding, "replace").lstrip("\ufeff")
            out[0] = head + dumps(text) + mid + b"0" + ts + (tail_trunc if trunc else tail)
        return out


BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
