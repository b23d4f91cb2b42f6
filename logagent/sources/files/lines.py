"""Bytes to lines: the tailer's hot path, kept pure for tests.

`LineSplitter` turns chunks read from a file into complete lines with their
offsets, holding a final partial line until its newline arrives and cutting
over-long lines. The lines become Kafka messages in logagent/pipeline/message.py.
"""

from __future__ import annotations

from typing import Protocol

from logagent.pipeline.message import Line


class SplitBuilder(Protocol):
    def build_split(self, held: bytes, data: bytes, start: int, max_line: int,
                    timestamp: bytes) -> tuple[list[bytes], bytes] | None: ...


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
        # (find, not `in`: bytes' `in` tries its operand as an integer first, and raises and clears a
        # TypeError each time.)
        if self._width != 1 or self._skipping or data.find(self._cr) >= 0 or \
                (offset == 0 and data[:1] in BOM_STARTS):
            return None
        buf = self._buf
        if buf:
            start, data = self._buf_start, buf + data
        else:
            start = offset
        parts = data.split(self._nl)
        rest = parts.pop()
        # No part is longer than the whole: the lengths are looked at only when the whole is too long.
        if len(data) > self.max_line_bytes and (len(rest) > self.max_line_bytes
                                                or (parts and max(map(len, parts)) > self.max_line_bytes)):
            return None
        self._buf = rest
        self._buf_start = start + len(data) - len(rest)
        return start, parts

    def feed_built(self, data: bytes, offset: int, fmt: SplitBuilder, timestamp: bytes) -> list[bytes] | None:
        """feed_plain and the messages of its lines in one call (MessageFormat.build_split): the
        messages, the partial tail held as feed_plain holds it; None, with nothing consumed, when that
        cannot take the chunk (a byte to escape, a CR, an over-long line) or while skipping the rest of
        a line that was cut. For a UTF-8 file (a one-byte newline)."""
        if self._skipping:
            return None
        buf = self._buf
        start = self._buf_start if buf else offset
        built = fmt.build_split(buf, data, start, self.max_line_bytes, timestamp)
        if built is None:
            return None
        values, rest = built
        self._buf = rest
        self._buf_start = start + len(buf) + len(data) - len(rest)
        return values

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


# First bytes of a UTF-8, UTF-16 or UTF-32 byte-order mark: such a file's first chunk takes the slow path.
BOM_STARTS = (b"\xef", b"\xff", b"\xfe", b"\x00")
