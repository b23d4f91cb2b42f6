"""LineSplitter (bytes to lines; the fast path to messages is checked against the general one)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from logagent.pipeline import message
from logagent.pipeline.message import MessageFormat
from logagent.sources.files.lines import LineSplitter
from tests.kit import need_compiled


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


_chunks = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\0", b"x")) |
                   st.sampled_from([b"\n", b"a\nb", b"plain line\n", b"\r\n", b'q"uote\n', b"\xc3\xa9\n", b"x" * 30]),
                   max_size=12)


@settings(max_examples=400, deadline=None)
@given(chunks=_chunks, ids=st.booleans(), max_line=st.integers(4, 40))
def test_the_one_call_split_gives_the_messages_and_the_state_of_the_general_path(chunks: list[bytes], ids: bool,
                                                                                 max_line: int):
    """feed_built (one C call: split, check, build) takes a chunk only when it can, as the shipper uses it
    (else feed, the general path, takes it), and then gives the very messages, held bytes and resume
    offset the general path gives, whatever the chunks: lines cut anywhere, CRs, quotes, non-ASCII,
    over-long lines and the skipping after them."""
    need_compiled("" if message._format else "logagent/pipeline/_format.c is not built", "the C split")
    fmt = MessageFormat("1.2.3.4", "h%s", "/var/log/100%.log", "m", {"k": "v"}, id_prefix="h/1/" if ids else "")
    one, general = LineSplitter(max_line), LineSplitter(max_line)

    def messages(lines: list[tuple[int, bytes, bool]]) -> list[bytes]:
        return fmt.build(lines, b"T") if lines else []  # (as the shipper calls it: not for no line)

    got: list[bytes] = []
    want: list[bytes] = []
    taken = 0
    offset = 0
    for chunk in chunks:
        built = one.feed_built(chunk, offset, fmt, b"T")
        if built is None:
            built = messages(one.feed(chunk, offset))
        else:
            taken += 1
        got += built
        want += messages(general.feed(chunk, offset))
        offset += len(chunk)
        assert (one.held, one.resume_offset, one.pending) == (general.held, general.resume_offset, general.pending)
    assert got == want
    if chunks and all(c.isascii() and b"\r" not in c and b'"' not in c and b"\\" not in c
                      and all(32 <= b < 127 or b == 10 for b in c) for c in chunks) \
            and max(len(line) for line in b"".join(chunks).split(b"\n")) <= max_line:
        assert taken == len(chunks)  # plain and short: every chunk went the one-call way


def test_the_one_call_split_declines_what_needs_care():
    need_compiled("" if message._format else "logagent/pipeline/_format.c is not built", "the C split")
    fmt = MessageFormat("1.2.3.4", "h", "/p")
    s = LineSplitter(8)
    for chunk in (b"crlf\r\n", b"much too long line\n", b"\xef\xbb\xbfbom\n", b'a"b\n', b"tab\t\n", b"123456789"):
        assert s.feed_built(chunk, 0, fmt, b"T") is None and s.pending == 0  # nothing consumed
    assert s.feed_built(b"ok\nrest", 0, fmt, b"T") == [fmt.build([(0, b"ok", False)], b"T")[0]]
    assert (s.held, s.resume_offset) == (b"rest", 3)
    assert s.feed_built(b"12345", 7, fmt, b"T") is None  # held + new: past 8 bytes without a newline
    assert (s.held, s.resume_offset) == (b"rest", 3)
