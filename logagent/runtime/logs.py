"""The agent's own log: one handler on stderr, as text or as one JSON object per line, and
never a line that the text of a record (a file name, a server's error) could forge.

`setup_logging` is called by the CLI at start and by the agent when a SIGHUP changes
`[agent] log_format`.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from logagent.runtime.names import escape_controls

# JSON leaves DEL, C1 controls and U+2028/U+2029 in strings as they are; some readers split
# lines on them (U+0085 and U+2028 among them). `\uXXXX` is the same string to a JSON reader.
_JSON_UNSAFE = {c: f"\\u{c:04x}" for c in [*range(0x7F, 0xA0), 0x2028, 0x2029]}


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, one line per record whatever the message holds.

    Control characters in the message text are escaped (runtime/names.escape_controls): names are
    escaped where they are logged (runtime/names.display_name), and this is the second wall, so no
    text that reaches a message (a file name, a server's error) can start a line that looks
    like a record of its own. The lines of a traceback after it are the traceback's."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)  # set by format() for this call
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the message escaped as TextFormatter escapes it, and no
    character a line splitter could break on left in any field (see _JSON_UNSAFE)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) +
               f".{int(record.msecs):03d}Z", "level": record.levelname, "logger": record.name,
               "message": escape_controls(record.getMessage())}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False).translate(_JSON_UNSAFE)


def setup_logging(level: str, fmt: str = "text") -> None:
    """Send every logger's records to stderr in `fmt` (text or json) from `level` up."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
