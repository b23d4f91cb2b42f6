"""Container log formats: CRI and Docker json-file records parsed, partial lines joined per stream,
malformed lines kept, and the resume offset never inside a line still partial."""

from __future__ import annotations

import json

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from logagent.pipeline.message import MessageFormat
from logagent.sources.files.container import Joiner, parse_auto, parse_cri, parse_docker
from logagent.sources.files.lines import LineSplitter

T = "2026-12-06T10:00:00.123456789Z"


def cri(stream: str, tag: str, text: str, time: str = T) -> bytes:
    return f"{time} {stream} {tag} {text}\n".encode()


def docker(stream: str, log: str, time: str = T) -> bytes:
    return orjson.dumps({"log": log, "stream": stream, "time": time}) + b"\n"


def records(fmt: str, data: bytes, max_bytes: int = 1 << 20) -> tuple[list[tuple[int, bytes, bool, bytes, bytes]],
                                                                      Joiner]:
    joiner = Joiner(fmt, max_bytes)
    splitter = LineSplitter(1 << 20)
    out = joiner.push(splitter.feed(data, 0))
    return out, joiner


# ---------------------------------------------------------------------------- parsing

def test_cri_records_parse():
    assert parse_cri(b"2026-12-06T10:00:00.1Z stdout F hello world") == \
        (b"2026-12-06T10:00:00.1Z", b"stdout", False, b"hello world")
    assert parse_cri(b"2026-12-06T10:00:00+01:00 stderr P part ") == \
        (b"2026-12-06T10:00:00+01:00", b"stderr", True, b"part ")
    assert parse_cri(f"{T} stdout F ".encode()) == (T.encode(), b"stdout", False, b"")  # an empty line
    assert parse_cri(f"{T} stdout F".encode()) == (T.encode(), b"stdout", False, b"")
    assert parse_cri(f"{T} stdout F:x  two  spaces".encode()) == (T.encode(), b"stdout", False, b" two  spaces")


def test_what_is_not_a_cri_record():
    for line in [b"", b"plain text", f"{T} stdin F x".encode(), f"{T} stdout X x".encode(),
                 b"2026-12-06 10:00:00Z stdout F x", b"yesterday stdout F x", f"{T} stdout".encode(),
                 b'{"log":"x\\n","stream":"stdout","time":"' + T.encode() + b'"}']:
        assert parse_cri(line) is None, line


def test_docker_records_parse():
    assert parse_docker(docker("stdout", "hello\n")[:-1]) == (T.encode(), b"stdout", False, b"hello")
    assert parse_docker(docker("stderr", "part")[:-1]) == (T.encode(), b"stderr", True, b"part")
    assert parse_docker(docker("stdout", "caf\u00e9 \"q\" \\\n")[:-1]) == \
        (T.encode(), b"stdout", False, 'caf\u00e9 "q" \\'.encode())
    with_attrs = b'{"log":"x\\n","stream":"stdout","attrs":{"a":"b"},"time":"' + T.encode() + b'"}'
    assert parse_docker(with_attrs) == (T.encode(), b"stdout", False, b"x")


def test_what_is_not_a_docker_record():
    for line in [b"", b"{", b"[1]", b'"x"', b'{"log": 1, "stream": "stdout", "time": "' + T.encode() + b'"}',
                 b'{"log": "x\\n", "stream": "stdin", "time": "' + T.encode() + b'"}',
                 b'{"log": "x\\n", "stream": "stdout", "time": "now"}', b'{"log": "x\\n", "stream": "stdout"}',
                 cri("stdout", "F", "x")[:-1]]:
        assert parse_docker(line) is None, line


def test_auto_takes_either_format_line_by_line():
    assert parse_auto(cri("stdout", "F", "a")[:-1]) == (T.encode(), b"stdout", False, b"a")
    assert parse_auto(docker("stdout", "b\n")[:-1]) == (T.encode(), b"stdout", False, b"b")
    assert parse_auto(b"neither") is None


# ---------------------------------------------------------------------------- joining

def test_partial_cri_records_are_joined_with_the_time_of_the_first():
    data = cri("stdout", "P", "hel", "2026-12-06T10:00:00Z") + cri("stdout", "P", "lo ") + cri("stdout", "F", "world")
    out, joiner = records("cri", data)
    assert out == [(0, b"hello world", False, b"2026-12-06T10:00:00Z", b"stdout")]
    assert joiner.pending_start is None


def test_the_other_stream_goes_on_while_a_line_is_partial():
    data = cri("stdout", "P", "out-1 ") + cri("stderr", "F", "err whole") + cri("stderr", "P", "err ") + \
        cri("stdout", "F", "out-2") + cri("stderr", "F", "end")
    out, _ = records("cri", data)
    second = len(cri("stdout", "P", "out-1 "))
    third = second + len(cri("stderr", "F", "err whole"))
    assert [(r[0], r[1], r[4]) for r in out] == [(second, b"err whole", b"stderr"), (0, b"out-1 out-2", b"stdout"),
                                                 (third, b"err end", b"stderr")]


def test_docker_log_without_its_newline_is_continued():
    data = docker("stdout", "a" * 5) + docker("stderr", "e\n") + docker("stdout", "b\n") + docker("stdout", "\n")
    out, _ = records("docker", data)
    assert [(r[1], r[4]) for r in out] == [(b"e", b"stderr"), (b"aaaaab", b"stdout"), (b"", b"stdout")]


def test_a_joined_line_is_cut_at_max_bytes_and_the_rest_skipped():
    data = cri("stdout", "P", "abcd") + cri("stdout", "P", "efgh") + cri("stdout", "F", "ijkl") + \
        cri("stdout", "F", "next")
    out, _ = records("cri", data, max_bytes=6)
    assert [(r[1], r[2]) for r in out] == [(b"abcdef", True), (b"next", False)]
    out, _ = records("cri", cri("stdout", "F", "0123456789"), max_bytes=6)
    assert [(r[1], r[2]) for r in out] == [(b"012345", True)]


def test_a_malformed_line_is_kept_as_it_is_and_counted():
    data = cri("stdout", "P", "a ") + b"garbage in the middle\n" + cri("stdout", "F", "b") + b"\n"
    out, joiner = records("cri", data)
    assert [(r[1], r[3], r[4]) for r in out] == [(b"garbage in the middle", b"", b""), (b"a b", T.encode(), b"stdout"),
                                                 (b"", b"", b"")]
    assert joiner.malformed == 2


def test_pending_start_holds_the_offset_of_the_first_partial_record():
    joiner = Joiner("cri", 1 << 20)
    splitter = LineSplitter(1 << 20)
    first = cri("stdout", "F", "done")
    data = first + cri("stdout", "P", "held ")
    assert [r[1] for r in joiner.push(splitter.feed(data, 0))] == [b"done"]
    assert joiner.pending_start == len(first)
    assert joiner.flush() == [(len(first), b"held ", False, T.encode(), b"stdout")]
    assert joiner.pending_start is None


def test_a_line_carried_to_the_next_file_is_joined_there():
    old = Joiner("cri", 1 << 20)
    old.push(LineSplitter(1 << 20).feed(cri("stdout", "F", "x") + cri("stdout", "P", "begun in the old file, "), 0))
    chains = old.take()
    assert not old.holding and old.pending_start is None
    new = Joiner("cri", 1 << 20)
    new.seed(chains, 0)
    assert new.pending_start == 0 and new.holds_carried
    data = cri("stderr", "F", "other") + cri("stdout", "F", "ended in the new one")
    out = new.push(LineSplitter(1 << 20).feed(data, 0))
    start_in_old = len(cri("stdout", "F", "x"))
    assert [(r[0], r[1]) for r in out] == [(0, b"other"),
                                           (start_in_old, b"begun in the old file, ended in the new one")]
    assert new.carried_done == len(cri("stderr", "F", "other"))


def test_messages_carry_time_and_stream_and_a_malformed_line_has_neither():
    fmt = MessageFormat("10.0.0.1", "node-1", "/var/log/pods/ns_p_u/c/0.log", fields={"kubernetes": {"pod": "p"}})
    out = fmt.build_records([(0, b"hello \"you\"", False, T.encode(), b"stderr"), (40, b"raw", True, b"", b"")],
                            b"2026-12-06T10:00:01.000000Z")
    first, second = (json.loads(v) for v in out)
    assert first == {"ip": "10.0.0.1", "data": 'hello "you"', "host": "node-1", "path": "/var/log/pods/ns_p_u/c/0.log",
                     "offset": 0, "timestamp": "2026-12-06T10:00:01.000000Z", "time": T, "stream": "stderr",
                     "kubernetes": {"pod": "p"}}
    assert "time" not in second and "stream" not in second and second["truncated"] is True


# ---------------------------------------------------------------------------- properties

@st.composite
def container_log(draw: st.DrawFn) -> tuple[list[tuple[str, str]], bytes, str]:
    """Lines of two streams, each written as CRI or json-file records cut at random points (CRI: at
    any byte; json-file: between characters), the streams' records interleaved at random; returns
    (the lines (stream, text), the file, its format)."""
    fmt = draw(st.sampled_from(["cri", "docker"]))
    alphabet = st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r")
    lines = draw(st.lists(st.tuples(st.sampled_from(["stdout", "stderr"]), st.text(alphabet, max_size=12)),
                          max_size=12))
    queues: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
    for stream, text in lines:
        whole: bytes | str = text.encode() if fmt == "cri" else text
        cuts = sorted(draw(st.lists(st.integers(1, max(1, len(whole) - 1)), max_size=3, unique=True)))
        cuts = [c for c in cuts if c < len(whole)]
        pieces = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            if isinstance(piece, bytes):
                queues[stream].append(f"{T} {stream} {'F' if last else 'P'} ".encode() + piece + b"\n")
            else:
                queues[stream].append(docker(stream, piece + ("\n" if last else "")))
    order = draw(st.permutations(["stdout"] * len(queues["stdout"]) + ["stderr"] * len(queues["stderr"])))
    data = b"".join(queues[s].pop(0) for s in order)
    return lines, data, fmt


def _read(fmt: str, data: bytes, start: int, chunks: list[int]) -> tuple[list[tuple[int, bytes, bool, bytes, bytes]],
                                                                         int]:
    """Records of data[start:] fed in chunks of these sizes; and where a restart would resume."""
    joiner, splitter = Joiner(fmt, 1 << 20), LineSplitter(1 << 20)
    splitter.reset(start)
    out, pos, i = [], start, 0
    while pos < len(data):
        size = chunks[i % len(chunks)] if chunks else len(data)
        out += joiner.push(splitter.feed(data[pos:pos + size], pos))
        pos += size
        i += 1
    pending = joiner.pending_start
    return out, splitter.resume_offset if pending is None else pending


@settings(max_examples=300, deadline=None)
@given(container_log(), st.lists(st.integers(1, 40), min_size=1, max_size=5))
def test_every_line_comes_out_whole_per_stream_in_order(log: tuple[list[tuple[str, str]], bytes, str],
                                                        chunks: list[int]):
    lines, data, fmt = log
    out, _ = _read(fmt, data, 0, chunks)
    for stream in ("stdout", "stderr"):
        want = [text.encode() for s, text in lines if s == stream]
        assert [r[1] for r in out if r[4] == stream.encode()] == want
    assert all(r[3] == T.encode() for r in out)


@settings(max_examples=300, deadline=None)
@given(container_log(), st.lists(st.integers(1, 40), min_size=1, max_size=5), st.data())
def test_a_restart_from_the_resume_offset_never_ships_part_of_a_line_twice(
        log: tuple[list[tuple[str, str]], bytes, str], chunks: list[int], draw: st.DataObject):
    """Killed after any byte: what was sent, and what a restart from the resume offset sends, hold
    every line whole (a line sent twice is sent whole, never a part of it); with one stream, each
    line exactly once."""
    lines, data, fmt = log
    cut = draw.draw(st.integers(0, len(data)))
    before, resume = _read(fmt, data[:cut], 0, chunks)
    assert resume <= cut
    after, _ = _read(fmt, data, resume, chunks)
    whole = {(s.encode(), t.encode()) for s, t in lines}
    sent = [(r[4], r[1]) for r in before + after]
    assert all(item in whole for item in sent), "a part of a line was sent as a line"
    for item in whole:
        assert item in sent
    if len({stream for stream, _ in lines}) == 1:
        assert len(sent) == len(lines), "one stream: each line exactly once"
