"""Multiline joining (Filebeat semantics, presets) and line splitting in other encodings."""

from __future__ import annotations

import time

import pytest

from logagent.errors import CollectConfigError
from logagent.pipeline.message import MessageFormat
from logagent.sources.files.lines import LineSplitter, resolve_encoding
from logagent.sources.files.multiline import Aggregator, MultilineSpec, parse_multiline


def _lines(text: str, encoding: str = "utf-8") -> list[tuple[int, bytes, bool]]:
    s = LineSplitter(1 << 20, encoding)
    return s.feed(text.encode(encoding), 0)


def _events(spec: MultilineSpec, text: str, max_line_bytes: int = 1 << 20) -> list[str]:
    agg = Aggregator(spec, "utf-8", max_line_bytes)
    out = agg.push(_lines(text)) + agg.flush()
    return [e[1].decode() for e in out]


JAVA = """2026-11-25 ERROR boom
java.lang.IllegalStateException: outer
\tat com.example.A.run(A.java:10)
\tat com.example.Main.main(Main.java:5)
Caused by: java.io.IOException: inner
\tat com.example.B.read(B.java:20)
\t... 12 more
2026-11-25 INFO next
"""


def test_java_preset_joins_trace_with_caused_by_and_more():
    events = _events(MultilineSpec(preset="java"), JAVA)
    assert len(events) == 3
    assert events[0] == "2026-11-25 ERROR boom"
    assert events[1].startswith("java.lang.IllegalStateException: outer\n\tat com.example.A")
    assert events[1].endswith("Caused by: java.io.IOException: inner\n\tat com.example.B.read(B.java:20)"
                              "\n\t... 12 more")
    assert events[2] == "2026-11-25 INFO next"


PY = """INFO start
ERROR failed
Traceback (most recent call last):
  File "a.py", line 1, in <module>
    main()
ValueError: bad

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "b.py", line 2, in <module>
KeyError: 'x'
INFO after
"""


def test_python_preset_joins_traceback_to_its_log_line_through_chained_exceptions():
    events = _events(MultilineSpec(preset="python"), PY)
    assert events[0] == "INFO start"
    assert events[1].startswith("ERROR failed\nTraceback (most recent call last):")
    assert events[1].endswith("KeyError: 'x'")
    assert "During handling" in events[1]
    assert events[2] == "INFO after"


GO = """starting
panic: runtime error: index out of range [5] with length 3

goroutine 1 [running]:
main.main()
\t/tmp/x.go:8 +0x1d
exit status 2
after panic
"""


def test_go_preset_joins_panic_dump():
    events = _events(MultilineSpec(preset="go"), GO)
    assert events == ["starting",
                      "panic: runtime error: index out of range [5] with length 3\n\ngoroutine 1 [running]:\n"
                      "main.main()\n\t/tmp/x.go:8 +0x1d\nexit status 2",
                      "after panic"]


def test_regex_negate_after_event_starts_with_a_date():
    spec = MultilineSpec(pattern=r"^\d{4}-", negate=True, match="after")
    assert _events(spec, "2026-1 a\n cont\nmore\n2026-2 b\n") == ["2026-1 a\n cont\nmore", "2026-2 b"]


def test_regex_before_trailing_backslash_continues_into_next_line():
    spec = MultilineSpec(pattern=r"\\$", match="before")
    assert _events(spec, "a \\\nb \\\nc\nd\n") == ["a \\\nb \\\nc", "d"]


def test_max_lines_and_max_bytes_cap_with_truncated():
    agg = Aggregator(MultilineSpec(preset="java", max_lines=3), "utf-8", 1 << 20)
    out = agg.push(_lines("head\n at 1\n at 2\n at 3\n at 4\nnext\n")) + agg.flush()
    assert [(e[1].decode(), e[2]) for e in out] == [("head\n at 1\n at 2", True), ("next", False)]
    agg = Aggregator(MultilineSpec(preset="java", max_bytes=8), "utf-8", 1 << 20)
    out = agg.push(_lines("head\n at 1\n at 2\n")) + agg.flush()
    assert out[0][1] == b"head\n at" and out[0][2] is True


def test_pending_event_offset_holds_the_registry_and_timeout_flushes():
    agg = Aggregator(MultilineSpec(preset="java", timeout=0.05), "utf-8", 1 << 20)
    assert agg.push(_lines("one\ntwo\n at x\n")) == [(0, b"one", False)]
    assert agg.pending_start == 4
    assert not agg.due(time.monotonic())
    time.sleep(0.06)
    assert agg.due(time.monotonic())
    assert agg.flush() == [(4, b"two\n at x", False)]
    assert agg.pending_start is None


@pytest.mark.parametrize("raw, problem", [
    ({"pattern": "("}, "not a valid regex"),
    ("cobol", "unknown"),
    ({"pattern": "x", "match": "middle"}, "match must be"),
    ({"pattern": "x", "max_lines": 0}, "max_lines"),
    ({"negate": True}, "needs a pattern"),
    (5, "preset name or an object"),
])
def test_bad_multiline_values_are_refused(raw, problem):
    with pytest.raises(CollectConfigError, match=problem):
        parse_multiline(raw, "key entry 0")


@pytest.mark.parametrize("encoding, text", [
    ("gbk", "中文日志 第一行\n第二行\n"),
    ("gb18030", "编码 𠀀\n好\n"),
    ("big5", "繁體中文\n第二\n"),
    ("shift_jis", "日本語のログ\nソ表\n"),
    ("latin-1", "café\nnaïve\n"),
    ("utf-16-le", "ਊ\u0a0a newline-looking bytes\nnext\n"),
    ("utf-16-be", "big endian\nline 2\n"),
])
def test_split_and_decode_in_other_encodings(encoding, text):
    lines = _lines(text, encoding)
    fmt = MessageFormat("ip", "h", "/p", encoding=encoding)
    import json

    assert [json.loads(m)["data"] for m in fmt.build(lines, b"t")] == text.splitlines()


def test_utf16_with_bom_resolves_byte_order_and_bom_is_not_data():
    import codecs
    import json

    raw = codecs.BOM_UTF16_LE + "first\nsecond\n".encode("utf-16-le")
    enc = resolve_encoding("utf-16", raw[:4])
    assert enc == "utf-16-le"
    lines = LineSplitter(1 << 20, enc).feed(raw, 0)
    data = [json.loads(m)["data"] for m in MessageFormat("ip", "h", "/p", encoding=enc).build(lines, b"t")]
    assert data == ["first", "second"]
    assert resolve_encoding("utf-16", codecs.BOM_UTF16_BE) == "utf-16-be"


def test_utf16_newline_never_split_inside_a_character_across_chunks():
    s = LineSplitter(1 << 20, "utf-16-le")
    raw = "\u0a41\u0100x\n".encode("utf-16-le")  # contains b"\\n\\x00" at an odd offset
    out = []
    for i in range(len(raw)):  # one byte at a time
        out += s.feed(raw[i:i + 1], i)
    assert [line.decode("utf-16-le") for _, line, _ in out] == ["\u0a41\u0100x"]
