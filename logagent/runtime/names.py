"""How names the agent did not choose are shown, and carried in JSON.

File names are bytes on Linux and anyone who can create a file in a collected folder
chooses them. Two forms of a name leave the agent:
- `display_name`, for people and their tools: log lines, metric labels, `check` output,
  status text. A name with a newline, a carriage return, an ESC or any other control
  character (C0, DEL, C1, and the line and paragraph separators U+2028/U+2029 that some
  log readers split on) would forge lines in the agent's own log or rewrite a terminal, so
  such a name is escaped: each backslash doubled, and each byte that is not UTF-8 or that
  encodes one of those characters written `\\xNN` (U+0085 is `\\xc2\\x85`, the bytes of
  its UTF-8 form). A name that already reads as an escape (`\\x0a` or `\\\\` literally) is
  escaped too, so that no two names look alike. Every other name is shown as it is.
  Lossless: `from_display` turns any display form back into the name.
- `wire_name`, for what JSON carries (the message's `path`, its key, the registry and
  the spool): the name itself when it is valid UTF-8 (JSON escapes its control
  characters); otherwise (a `str` with surrogate escapes, which JSON cannot carry) each
  backslash doubled and each byte that is not UTF-8 written `\\xNN`.
"""

from __future__ import annotations

import os
import re

# What a name shown to people must not hold as it is: C0 controls (newline, CR, tab, ESC...),
# DEL, C1 controls (U+0080-U+009F, NEL among them), the Unicode line and paragraph separators,
# and surrogates (the bytes that are not UTF-8; they are escaped as those bytes).
_UNSAFE = "\x00-\x1f\x7f-\x9f\u2028\u2029"
_UNSAFE_CHAR = re.compile(f"[{_UNSAFE}]")
_NEEDS_ESCAPE = re.compile(f"[{_UNSAFE}\ud800-\udfff]|\\\\(?:\\\\|x[0-9a-f]{{2}})")
_TO_ESCAPE = re.compile(f"[\\\\{_UNSAFE}\ud800-\udfff]")


def _escaped(m: re.Match[str]) -> str:
    """A backslash doubled; any other character as `\\xNN` per byte of its file-system encoding."""
    char = m.group()
    if char == "\\":
        return "\\\\"
    try:
        raw = os.fsencode(char)
    except UnicodeEncodeError:  # a lone surrogate no file name can hold: shown all the same, never raised
        raw = char.encode("utf-8", "surrogatepass")
    return "".join(f"\\x{b:02x}" for b in raw)


def display_name(path: str) -> str:
    """The name as logs, metric labels, `check` and status show it (see the module docstring):
    one line, no control character, lossless."""
    if _NEEDS_ESCAPE.search(path) is None:
        return path
    return _TO_ESCAPE.sub(_escaped, path)


def wire_name(path: str) -> str:
    """The name as JSON carries it: message `path` and key, registry, spool (see the module docstring)."""
    if not is_raw(path):
        return path
    return os.fsencode(path).replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def escape_controls(text: str) -> str:
    """`text` with each control character (as in display_name) written `\\xNN`, backslashes left
    as they are: for whole messages (one log record is one line), where names are already
    display names and must not be escaped twice. Not lossless; names are escaped at the source."""
    if _UNSAFE_CHAR.search(text) is None:
        return text
    return _UNSAFE_CHAR.sub(_escaped, text)


def is_raw(path: str) -> bool:
    """True when the name is not valid UTF-8 (its wire form is escaped)."""
    if path.isascii():  # nearly every name, and no exception to catch (the registry asks per entry per write)
        return False
    try:
        path.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


_ESCAPE = re.compile(rb"\\(\\|x[0-9a-f]{2})")


def from_display(shown: str) -> str:
    """The file name behind a display form, or behind the wire form of a name that `is_raw`."""
    raw = _ESCAPE.sub(lambda m: b"\\" if m.group(1) == b"\\" else bytes([int(m.group(1)[1:], 16)]),
                      shown.encode("utf-8"))
    return os.fsdecode(raw)
