"""The Kafka message of a log line: its JSON, and fit_message cutting it to a topic's limit."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logagent.pipeline import message
from logagent.pipeline.message import MessageFormat, utc_timestamp
from tests.kit import need_compiled


def test_message_format_matches_design():
    fmt = MessageFormat("10.0.0.5", "web-1", "/var/log/app.log", "web", {"env": "prod"})
    [raw] = fmt.build([(1048576, b"GET /x 200", False)], b"2026-11-25T14:00:00.123456Z")
    msg = json.loads(raw)
    assert msg == {"ip": "10.0.0.5", "data": "GET /x 200", "host": "web-1", "path": "/var/log/app.log",
                   "offset": 1048576, "timestamp": "2026-11-25T14:00:00.123456Z", "module": "web",
                   "env": "prod"}
    assert list(msg)[:2] == ["ip", "data"]


def test_message_format_invalid_utf8_nul_quotes_and_truncated():
    fmt = MessageFormat("1.2.3.4", "h", '/p "q"')
    raws = fmt.build([(0, b'bad \xff "x" \x00 \\', False), (9, b"cut", True)], b"T")
    first, second = (json.loads(r) for r in raws)
    assert first["data"] == 'bad \ufffd "x" \x00 \\'
    assert "module" not in first and "truncated" not in first
    assert second["truncated"] is True and second["path"] == '/p "q"'



def test_fit_message_cuts_data_to_the_limit_and_flags_it():
    import orjson

    from logagent.pipeline.message import MessageFormat, fit_message

    fmt = MessageFormat("10.0.0.5", "web-1", "/var/log/app.log", "web")
    [value] = fmt.build([(7, "é\x01".encode() * 50_000, False)], b"2026-11-29T00:00:00.000000Z")
    for limit in (300_000, 100_000, 2_000, 300):
        out, path = fit_message(value, limit)
        doc = orjson.loads(out)
        assert len(out) <= limit and doc["truncated"] is True and path == "/var/log/app.log"
        assert doc["offset"] == 7 and doc["module"] == "web" and "é\x01".startswith(doc["data"][:2])
    assert fit_message(value, 100) is None  # not even the envelope fits
    assert fit_message(b"cpu,host=a usage=1 1", 10) is None  # not a log message: left alone


def test_msgid_is_the_prefix_and_the_offset_in_both_paths():
    fmt = MessageFormat("10.0.0.5", "web-1", "/var/log/100%.log", id_prefix="web-1/8-9-100/")
    plain = [json.loads(m) for m in fmt.build_plain(10, [b"abc", b"de"], b"T", True)]
    slow = [json.loads(m) for m in fmt.build([(10, b"abc", False), (14, b"d\xffe", True)], b"T")]
    records = [(10, b"abc", False, b"2026-12-06T10:00:00Z", b"stdout"), (14, b"de", True, b"", b"")]
    container = [json.loads(m) for m in fmt.build_records(records, b"T")]
    assert [m["msgid"] for m in plain] == [m["msgid"] for m in slow] == [m["msgid"] for m in container] == \
        ["web-1/8-9-100/10", "web-1/8-9-100/14"]
    assert container[0]["stream"] == "stdout" and "stream" not in container[1] and container[1]["truncated"]
    assert "msgid" not in json.loads(MessageFormat("ip", "h", "/p").build([(0, b"x", False)], b"T")[0])

@pytest.mark.parametrize("now_ns", [1_764_979_199_999_999_000, 1_764_979_200_000_000_000, 1_764_979_200_000_001_000,
                                    1_764_979_261_500_000_999])
def test_utc_timestamp_is_iso_8601_utc_with_microseconds(monkeypatch: pytest.MonkeyPatch, now_ns: int):
    """The second's prefix is cached: across a second (and a day) boundary it is formatted again."""
    utc_timestamp()  # a cached prefix from another second
    monkeypatch.setattr(time, "time_ns", lambda: now_ns)
    exact = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=now_ns // 1000)  # no float rounding
    want = exact.strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
    assert utc_timestamp() == want
    assert message._cached[0] == now_ns // 1_000_000_000


_UNSAFE = b'"\\\n' + bytes(range(0x20)) + bytes(range(0x7F, 0x100))  # what json_plain() sends the slow way
_ascii_line = st.binary(max_size=300).map(lambda b: b.translate(None, _UNSAFE))


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(_ascii_line, max_size=20), start=st.integers(0, 2**53), ids=st.booleans(),
       path=st.text(max_size=40), fields=st.dictionaries(st.sampled_from(["env", "team", "a%b"]), st.text(max_size=10)),
       module=st.text(max_size=10))
def test_the_c_builder_makes_the_bytes_of_the_percent_formatting(lines: list[bytes], start: int, ids: bool,
                                                                 path: str, fields: dict[str, str], module: str):
    """_format.build_plain (C) and the `%` loop give the same messages, byte for byte: `%` in the
    constant parts, an id or none, module and fields, any offset."""
    need_compiled("" if message._format else "logagent/pipeline/_format.c is not built", "the C message builder")
    fmt = MessageFormat("10.0.0.1", "host%d", path, module=module, fields=fields,
                        id_prefix="h%s/2049-1-1/" if ids else "")
    ts = b"2026-12-07T20:00:00.000000Z"
    built = fmt.build_plain(start, lines, ts, True)
    c_module, message._format = message._format, None
    try:
        by_percent = fmt.build_plain(start, lines, ts, True)
    finally:
        message._format = c_module
    assert built == by_percent
    for value in built:
        json.loads(value)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_the_c_plain_check_agrees_with_translate(data: bytes):
    """_format.json_plain (C, a table) says what the translate() pass says, for every byte value and
    for any bytes; and the agent uses it where it is built."""
    need_compiled("" if message._format else "logagent/pipeline/_format.c is not built", "the C plain check")
    assert message.json_plain is message._format.json_plain
    for b in range(256):
        one = bytes([b])
        assert message._format.json_plain(one) == message._json_plain(one) == (one not in _UNSAFE or one == b"\n")
    assert message._format.json_plain(data) == message._json_plain(data)
    assert message._format.json_plain(b"") and message._format.json_plain(memoryview(b"ok\n"))
