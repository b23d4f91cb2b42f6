"""LineSplitter (bytes to lines; the fast path to messages is checked against the general one)."""

from __future__ import annotations

import json

from logagent.pipeline.message import MessageFormat
from logagent.sources.files.lines import LineSplitter


def test_splits_lines_with_offsets_and_holds_partial():
    s = LineSplitter(100)
    assert s.feed(b"ab\ncd\nef", 0) == [(0, b"ab", False), (3, b"cd", False)]
    assert s.resume_offset == 6 and s.pending == 2
    assert s.feed(b"gh\n", 8) == [(6, b"efgh", False)]
    assert s.resume_offset == 11 and s.pending == 0


def test_crlf_stripped_and_empty_lines_kept():
    s = LineSplitter(100)
    assert s.feed(b"a\r\n\nb\r\n", 0) == [(0, b"a", False), (3, b"", False), (4, b"b", False)]


def test_over_long_line_cut_and_rest_skipped_across_chunks():
    s = LineSplitter(4)
    assert s.feed(b"123456", 0) == [(0, b"1234", True)]
    assert s.resume_offset == 0  # a restart re-reads the cut line rather than shipping its tail
    assert s.feed(b"789", 6) == []
    assert s.feed(b"0\nok\n", 9) == [(11, b"ok", False)]
    assert s.resume_offset == 14
    assert s.feed(b"abcdefgh\nxy\n", 14) == [(14, b"abcd", True), (23, b"xy", False)]


def test_flush_sends_held_partial_as_last_line():
    s = LineSplitter(100)
    s.feed(b"a\nlast\r", 0)
    assert s.flush() == [(2, b"last", False)]
    assert s.flush() == []
    assert s.resume_offset == 7


def test_reset_forgets_partial():
    s = LineSplitter(100)
    s.feed(b"partial", 0)
    s.reset(0)
    assert s.feed(b"new\n", 0) == [(0, b"new", False)]


def test_fast_path_gives_the_same_messages_as_the_general_path():
    from logagent.pipeline.message import json_plain

    fmt = MessageFormat("1.2.3.4", "h%s", "/var/log/100%.log", "m", {"k": "v"})
    chunks = [b"plain one\nplain tw", b"o\nwith \"quote\" and \\ and \xc3\xa9\n", b"tab\there\n"]
    fast, slow = LineSplitter(100), LineSplitter(100)
    got, want = [], []
    offset = 0
    for chunk in chunks:
        held = fast.held
        start, parts = fast.feed_plain(chunk, offset)
        got += fmt.build_plain(start, parts, b"T", json_plain(chunk) and json_plain(held))
        want += fmt.build(slow.feed(chunk, offset), b"T")
        offset += len(chunk)
    assert got == want and len(got) == 4
    assert json.loads(got[2])["data"] == 'with "quote" and \\ and é'


def test_fast_path_declines_what_needs_care():
    s = LineSplitter(8)
    assert s.feed_plain(b"crlf\r\n", 0) is None
    assert s.feed_plain(b"much too long line\n", 0) is None
    assert s.feed_plain(b"\xef\xbb\xbfbom\n", 0) is None
    assert s.feed_plain(b"ok\n", 0) == (0, [b"ok"])
