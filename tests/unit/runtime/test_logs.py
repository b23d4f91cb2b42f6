"""The agent's own log: a record is one line, whatever its message holds (a name holding a newline
and a forged record once forged the agent's own log)."""

from __future__ import annotations

import json
import logging
import sys

from logagent.runtime.logs import JsonFormatter, TextFormatter

FORGED_PREFIX = "2026-12-06 00:00:00,000 CRITICAL logagent.agent:"
FORGED = f"x\n{FORGED_PREFIX} FORGED\r\x1b[2K\u2028\x85.log"


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("logagent.tailer", logging.WARNING, __file__, 1, msg, args, exc_info)


def test_text_log_records_stay_one_line_whatever_a_message_holds():
    fmt = TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    line = fmt.format(_record("%s was renamed or deleted", FORGED))
    assert line.splitlines() == [line] and "\x1b" not in line and "\r" not in line
    assert f"x\\x0a{FORGED_PREFIX} FORGED\\x0d\\x1b[2K\\xe2\\x80\\xa8\\xc2\\x85.log was renamed" in line
    # A traceback still follows on its own lines, after the one line of the record.
    lines = fmt.format(_record("%s crashed", FORGED, exc=True)).split("\n")
    assert "\\x0a" in lines[0] and lines[1] == "Traceback (most recent call last):" and lines[-1] == "ValueError: boom"
    assert not any(ln.startswith(FORGED_PREFIX) for ln in lines)


def test_json_log_records_stay_one_line_for_any_line_splitter():
    text = JsonFormatter().format(_record("%s gone \u2028 \x85 \x7f", FORGED, exc=True))
    assert text.splitlines() == [text]  # str.splitlines splits on U+2028, U+0085, \x1c-\x1e too
    assert not any(ch in text for ch in "\x7f\x85\u2028\u2029\n\r")
    doc = json.loads(text)
    assert doc["message"].startswith(f"x\\x0a{FORGED_PREFIX} FORGED\\x0d\\x1b[2K")
    assert doc["exception"].endswith("ValueError: boom")
