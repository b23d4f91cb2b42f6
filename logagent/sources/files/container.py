"""Container log formats: a runtime's records -> the lines the application wrote (pure).

A container runtime writes what a container prints to a file of its own format, one record per
line, and cuts a long line into several records (16 KiB each):

- CRI (containerd, CRI-O: `/var/log/pods/...`): `<RFC3339Nano time> <stdout|stderr> <P|F> <text>`.
  `P` is a partial record, continued by the next record of the same stream; `F` ends the line.
- Docker's json-file: `{"log": "<text>\\n", "stream": "stdout", "time": "<RFC3339Nano>"}`. A
  `log` without its trailing newline is continued by the next record of the same stream.

`Joiner` turns physical lines (LineSplitter's) into `Record`s: one per line the application
wrote, its partial records joined (per stream: the other stream's records may come between),
its text capped at `max_bytes` (then `truncated`, the rest of it skipped), with the time of its
first record and its stream. A line that is not in the format is a record of its own with its
bytes as they are and no time nor stream (`stream == b""`), counted in `malformed`: never dropped.

Offsets. A record's offset is that of its first physical line. While a line is partial its
records are held, and `pending_start` says where it began: the registry may not pass it, so a
crash in the middle of a chain of partial records reads the chain again, whole. Nor may it fall
inside a line of the other stream that was sent meanwhile: a restart from there would send that
line's last records as a line. The other stream's lines sent after the partial line began may be
sent again after a crash (whole: at least once), never a part of a line.

Across a rotation. The runtime may write the first records of a line to the file that is then
rotated away and the rest to the new one. The earlier file's reader hands its held chains to the
next file's (`take`, `seed`): the line is joined there, and its offset stays that of its first
record, in the earlier file. `carried_done` says where in the new file the carried line ended.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import orjson

from logagent.pipeline.message import Line

FORMATS = ("plain", "cri", "docker", "auto")
STREAMS = (b"stdout", b"stderr")
# RFC 3339 with up to nanoseconds, as the runtimes write it (Z or a numeric offset).
TIME = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)\Z")

# (offset of its first physical line, text, truncated, time as the runtime wrote it, stream);
# time and stream are b"" for a line that is not in the format (shipped as it is).
Record = tuple[int, bytes, bool, bytes, bytes]
Parsed = tuple[bytes, bytes, bool, bytes]  # (time, stream, partial, text)


def parse_cri(line: bytes) -> Parsed | None:
    """(time, stream, partial, text) of a CRI record; None when `line` is not one. The tag may
    carry more flags after a colon (`F:x`), as the CRI spec leaves room for."""
    parts = line.split(b" ", 3)
    if len(parts) < 3:
        return None
    time, stream, tag = parts[0], parts[1], parts[2]
    if stream not in STREAMS:
        return None
    flag = tag.split(b":", 1)[0]
    if flag == b"F":
        partial = False
    elif flag == b"P":
        partial = True
    else:
        return None
    if TIME.match(time) is None:
        return None
    return time, stream, partial, parts[3] if len(parts) == 4 else b""


def parse_docker(line: bytes) -> Parsed | None:
    """(time, stream, partial, text) of a json-file record; None when `line` is not one. The text
    is UTF-8 (JSON's), without its newline; a `log` that has none is partial."""
    if not line.startswith(b"{"):
        return None
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    text, stream, time = doc.get("log"), doc.get("stream"), doc.get("time")
    if not isinstance(text, str) or stream not in ("stdout", "stderr") or not isinstance(time, str):
        return None
    stamp = time.encode()
    if TIME.match(stamp) is None:
        return None
    data = text.encode()
    if data.endswith(b"\n"):
        return stamp, stream.encode(), False, data[:-1]
    return stamp, stream.encode(), True, data


def parse_auto(line: bytes) -> Parsed | None:
    """Either format, line by line: a json-file record starts with `{`, a CRI record never does."""
    return parse_docker(line) if line.startswith(b"{") else parse_cri(line)


PARSERS = {"cri": parse_cri, "docker": parse_docker, "auto": parse_auto}


@dataclass
class Chain:
    """The records of one line held while it is partial."""

    origin: int  # offset of its first record, in the file where it began
    start: int  # where a restart must read from while it is partial: its first record in this file (the
    # file's start for a carried chain), or earlier (a line of the other stream that overlaps it, see push)
    time: bytes
    stream: bytes
    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    truncated: bool = False
    carried: bool = False  # began in an earlier file of the path

    def add(self, text: bytes, cut: bool, max_bytes: int) -> None:
        """One more record's text; past max_bytes the line is cut and the rest skipped."""
        self.truncated |= cut
        room = max_bytes - self.size
        if len(text) > room:
            text = text[:max(room, 0)]
            self.truncated = True
        if text:
            self.parts.append(text)
            self.size += len(text)

    def record(self) -> Record:
        return self.origin, b"".join(self.parts), self.truncated, self.time, self.stream

    def copy(self) -> Chain:
        return Chain(self.origin, self.start, self.time, self.stream, list(self.parts), self.size,
                     self.truncated, self.carried)


class Joiner:
    """Physical lines of one file -> records, partial lines joined; see the module docstring."""

    __slots__ = ("format", "max_bytes", "malformed", "carried_done", "_parse", "_chains")

    def __init__(self, fmt: str, max_bytes: int) -> None:
        self.format = fmt
        self.max_bytes = max_bytes
        self.malformed = 0  # lines not in the format since the caller last read and reset it
        self.carried_done: int | None = None  # offset of the record that ended a carried line
        self._parse = PARSERS[fmt]
        self._chains: dict[bytes, Chain] = {}  # by stream

    @property
    def pending_start(self) -> int | None:
        """Where the earliest line still partial began in this file; the registry may not pass it."""
        if not self._chains:
            return None
        return min(chain.start for chain in self._chains.values())

    @property
    def holding(self) -> bool:
        return bool(self._chains)

    @property
    def holds_carried(self) -> bool:
        return any(chain.carried for chain in self._chains.values())

    def push(self, lines: list[Line]) -> list[Record]:
        """The records that these physical lines complete, in the order they are completed."""
        out: list[Record] = []
        parse, chains, max_bytes = self._parse, self._chains, self.max_bytes
        for offset, raw, cut in lines:
            parsed = parse(raw)
            if parsed is None:
                self.malformed += 1
                out.append((offset, raw, cut, b"", b""))
                continue
            time, stream, partial, text = parsed
            chain = chains.get(stream)
            if chain is None:
                if not partial:
                    if len(text) > max_bytes:
                        text, cut = text[:max_bytes], True
                    out.append((offset, text, cut, time, stream))
                    continue
                chain = chains[stream] = Chain(offset, offset, time, stream)
            chain.add(text, cut, max_bytes)
            if not partial:
                del chains[stream]
                out.append(chain.record())
                if chain.carried:
                    self.carried_done = offset
                for other in chains.values():
                    if chain.start < other.start <= offset:
                        # This line, now sent, began before the other stream's partial line and ended
                        # after it began: a restart from there would read this line's last records as a
                        # line. The registry stays at this line's start while the other one is partial
                        # (reading this line again, whole, is a duplicate; a part of it never is).
                        other.start = chain.start
        return out

    def flush(self) -> list[Record]:
        """The held lines as they are (their file ends and no next file continues them), oldest first."""
        chains = sorted(self._chains.values(), key=lambda c: c.start)
        self._chains = {}
        return [chain.record() for chain in chains]

    def take(self) -> list[Chain]:
        """The held lines, for the next file of the path to go on with (none held here any more)."""
        chains = sorted(self._chains.values(), key=lambda c: c.start)
        self._chains = {}
        return chains

    def seed(self, chains: list[Chain], at: int) -> None:
        """Go on with lines an earlier file of the path ended with; this file is read from `at`."""
        for chain in chains:
            carried = chain.copy()
            carried.start, carried.carried = at, True
            self._chains[carried.stream] = carried

    def reset(self) -> None:
        """Forget the held lines (a rewind reads them again)."""
        self._chains = {}
        self.carried_done = None
