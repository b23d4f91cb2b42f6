"""Multiline events: join a stack trace's lines into one message.

Semantics as operators know them from Filebeat: with `match = after`, a line that
matches the pattern (or, with `negate`, does not) continues the event of the line
before it; with `match = before`, such a line continues into the next line. Presets
cover Java, Python and Go traces. An event is capped by `max_lines` and `max_bytes`
(then it carries `truncated`), and a pending event is sent after `timeout` seconds
without a continuation, so a quiet file's last event is not held forever.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from logagent.config.values import orjson_problem, show
from logagent.errors import CollectConfigError
from logagent.pipeline.message import Line

PRESETS = ("java", "python", "go")
# Java: indented frames, "at ...", "... 12 more", "Caused by: ...".
JAVA = re.compile(r"^(?:[ \t]|at |\.\.\.|Caused by:)")
GO_CALL = re.compile(r"^[\w.*/()\[\]{}$-]+\(.*\)$")


@dataclass(frozen=True)
class MultilineSpec:
    """A validated `multiline` value of a collect entry."""

    pattern: str = ""
    negate: bool = False
    match: str = "after"
    preset: str = ""
    max_lines: int = 500
    max_bytes: int = 0  # 0: the agent's max_line_bytes
    timeout: float = 5.0

    def continuation(self) -> Callable[[str], bool]:
        """A fresh (stateful, for presets) predicate: does this line continue an event?"""
        if self.preset == "java":
            return lambda text: JAVA.match(text) is not None
        if self.preset == "python":
            return PythonTraceback()
        if self.preset == "go":
            return GoPanic()
        regex = re.compile(self.pattern)
        negate = self.negate
        return lambda text: (regex.search(text) is not None) != negate


def _number(raw: Mapping[str, Any], name: str, default: float, integer: bool, zero_ok: bool,
            where: str) -> float:
    """A finite number >= 0 (> 0 unless zero_ok; whole when integer); CollectConfigError otherwise."""
    value = raw.get(name, default)
    # NaN and Infinity never reach here from etcd (values.decode_json_value refuses them), but
    # 1e400 is read as inf, and int(inf) or float(10**400) would raise far from here.
    number = math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            pass
    ok = math.isfinite(number) and number >= 0 and (zero_ok or number > 0) and \
        (not integer or number.is_integer())
    if not ok:
        what = "a whole number" if integer else "a number"
        raise CollectConfigError(f"{where}: multiline {name} must be {what} "
                                 f"{'>= 0' if zero_ok else '> 0'}, got {show(value)}")
    return number


def parse_multiline(raw: Any, where: str) -> MultilineSpec | None:
    """Validate an entry's `multiline` value: a preset name or an object; CollectConfigError if bad."""
    if raw is None:
        return None
    if isinstance(raw, str):
        if raw not in PRESETS:
            raise CollectConfigError(f"{where}: multiline preset {show(raw)} unknown (one of {', '.join(PRESETS)})")
        return MultilineSpec(preset=raw)
    if not isinstance(raw, Mapping):
        raise CollectConfigError(f"{where}: multiline must be a preset name or an object, got {show(raw)}")
    preset = raw.get("preset", "")
    pattern = raw.get("pattern", "")
    if preset:
        if not isinstance(preset, str) or preset not in PRESETS:
            raise CollectConfigError(f"{where}: multiline preset {show(preset)} unknown "
                                     f"(one of {', '.join(PRESETS)})")
    else:
        if not isinstance(pattern, str) or not pattern:
            raise CollectConfigError(f"{where}: multiline needs a pattern (a regex) or a preset")
        if orjson_problem(pattern) is not None:
            # A lone surrogate: the entry could not be saved as the last good configuration.
            raise CollectConfigError(f"{where}: multiline pattern {show(pattern)} is not valid Unicode")
        try:
            re.compile(pattern)
        except (re.error, RecursionError, OverflowError, ValueError) as exc:
            # RecursionError/OverflowError: thousands of nested groups, a repeat count beyond 2**32.
            raise CollectConfigError(f"{where}: multiline pattern {show(pattern)} is not a valid regex: "
                                     f"{' '.join(str(exc).split()) or type(exc).__name__}") from None
    negate = raw.get("negate", False)
    if not isinstance(negate, bool):
        raise CollectConfigError(f"{where}: multiline negate must be true or false, got {show(negate)}")
    match = raw.get("match", "after")
    if match not in ("after", "before"):
        raise CollectConfigError(f"{where}: multiline match must be 'after' or 'before', got {show(match)}")
    max_lines = _number(raw, "max_lines", 500, integer=True, zero_ok=False, where=where)
    max_bytes = _number(raw, "max_bytes", 0, integer=True, zero_ok=True, where=where)
    timeout = _number(raw, "timeout", 5.0, integer=False, zero_ok=False, where=where)
    return MultilineSpec(pattern=pattern if not preset else "", negate=negate, match=match, preset=preset,
                         max_lines=int(max_lines), max_bytes=int(max_bytes), timeout=float(timeout))


class PythonTraceback:
    """From `Traceback (most recent call last):` through the final exception line, chained ones too."""

    CHAIN = ("During handling of the above exception", "The above exception was the direct cause")

    def __init__(self) -> None:
        self.state = "idle"

    def __call__(self, text: str) -> bool:
        if text.startswith("Traceback (most recent call last):"):
            self.state = "trace"
            return True
        if self.state == "trace":
            if not text or text[0] in " \t" or text.startswith(self.CHAIN):
                return True
            self.state = "after"  # the exception line ends the trace
            return True
        if self.state == "after":
            if not text:
                return True
            if text.startswith(self.CHAIN):
                self.state = "trace"
                return True
        self.state = "idle"
        return False


class GoPanic:
    """A `panic:` / `fatal error:` line starts an event; the goroutine dump continues it."""

    def __init__(self) -> None:
        self.in_panic = False

    def __call__(self, text: str) -> bool:
        if text.startswith(("panic: ", "fatal error: ")):
            if self.in_panic and text.endswith("[recovered]"):
                return True
            self.in_panic = True
            return False
        if self.in_panic and (not text or text[0] in " \t" or text.startswith(
                ("goroutine ", "[signal ", "exit status ", "created by ", "runtime.", "main.")) or
                GO_CALL.match(text)):
            return True
        self.in_panic = False
        return False


class Aggregator:
    """Turns lines into events; holds the event being built between chunks."""

    def __init__(self, spec: MultilineSpec, encoding: str, max_line_bytes: int) -> None:
        self.spec = spec
        self._continues = spec.continuation()
        self._encoding = encoding
        self._joiner = "\n".encode(encoding)  # the effective codec: a BOM was already resolved
        self._max_bytes = spec.max_bytes or max_line_bytes
        self._parts: list[bytes] = []
        self._start = 0
        self._size = 0
        self._count = 0
        self._truncated = False
        self.last_line = time.monotonic()

    @property
    def pending_start(self) -> int | None:
        """Offset of the first line of the event being built; the registry may not pass it."""
        return self._start if self._parts else None

    def _add(self, line: Line) -> None:
        offset, data, truncated = line
        if not self._parts:
            self._start, self._size, self._count, self._truncated = offset, 0, 0, False
        self._count += 1
        self._truncated |= truncated
        if self._count > self.spec.max_lines:
            self._truncated = True
            return
        extra = len(data) + (len(self._joiner) if self._parts else 0)
        if self._size + extra > self._max_bytes:
            room = self._max_bytes - self._size - (len(self._joiner) if self._parts else 0)
            room -= room % len(self._joiner)
            if room > 0:
                self._parts.append(data[:room])
                self._size = self._max_bytes
            self._truncated = True
            return
        self._parts.append(data)
        self._size += extra

    def _take(self) -> list[Line]:
        if not self._parts:
            return []
        event = (self._start, self._joiner.join(self._parts), self._truncated)
        self._parts = []
        return [event]

    def push(self, lines: list[Line]) -> list[Line]:
        """Events completed by these lines."""
        out: list[Line] = []
        if not lines:
            return out
        self.last_line = time.monotonic()
        after = self.spec.match == "after"
        for line in lines:
            text = line[1].decode(self._encoding, "replace")
            cont = self._continues(text)
            if after:
                if not (cont and self._parts):
                    out += self._take()
                self._add(line)
            else:
                self._add(line)
                if not cont:
                    out += self._take()
        return out

    def reset(self) -> None:
        """Forget the pending event (a rewind reads it again)."""
        self._parts = []

    def due(self, now: float) -> bool:
        """True when a pending event waited `timeout` without a continuation."""
        return bool(self._parts) and now - self.last_line >= self.spec.timeout

    def flush(self) -> list[Line]:
        """The pending event, now (timeout, rotation, or end of the file)."""
        return self._take()
