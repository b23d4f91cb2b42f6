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


class LineSplitter:
    """Splits a byte stream into lines; holds the partial tail between chunks."""

    __slots__ = ("max_line_bytes", "_buf", "_buf_start", "_skipping", "_skip_start")

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
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

    def feed(self, data: bytes, offset: int) -> list[Line]:
        """Lines completed by `data`, which starts at file offset `offset`."""
        out: list[Line] = []
        maxlen = self.max_line_bytes
        pos = 0
        if self._skipping:
            nl = data.find(b"\n")
            if nl < 0:
                return out
            self._skipping = False
            pos = nl + 1
            self._buf = b""
            self._buf_start = offset + pos
        if self._buf:
            start = self._buf_start
            data = self._buf + data[pos:] if pos else self._buf + data
        else:
            start = offset + pos
            if pos:
                data = data[pos:]
        parts = data.split(b"\n")
        rest = parts.pop()
        append = out.append
        for line in parts:
            n = len(line)
            if n > maxlen:
                append((start, line[:maxlen], True))
            elif line[-1:] == b"\r":
                append((start, line[:-1], False))
            else:
                append((start, line, False))
            start += n + 1
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
        return [(start, line[:-1] if line.endswith(b"\r") else line, False)]


def utc_timestamp() -> bytes:
    """Now as ISO 8601 UTC with microseconds and a Z, e.g. 2026-11-25T14:00:00.123456Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()


class MessageFormat:
    """Pre-encodes everything constant per file so a message is a few concatenations."""

    __slots__ = ("_head", "_mid", "_tail", "_tail_trunc")

    def __init__(self, ip: str, host: str, path: str, module: str = "",
                 fields: Mapping[str, Any] | None = None) -> None:
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
        """One JSON message per line; invalid UTF-8 becomes U+FFFD."""
        head, mid = self._head, self._mid
        ts = b',"timestamp":"' + timestamp + b'"'
        tail, tail_trunc = self._tail, self._tail_trunc
        dumps = orjson.dumps
        return [head + dumps(line.decode("utf-8", "replace")) + mid + str(off).encode() + ts
                + (tail_trunc if trunc else tail)
                for off, line, trunc in lines]
