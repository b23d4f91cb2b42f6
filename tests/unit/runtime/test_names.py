"""runtime/names: names get a lossless display form with no control character (a name with a
newline once forged lines in the agent's own log), and names that are not UTF-8 a lossless form
JSON can carry."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logagent.runtime.names import display_name, escape_controls, from_display, is_raw, wire_name


@pytest.mark.parametrize("raw", [b"/var/log/\xff.log", b"/var/log/a\\b\xfe\\x41.log", b"/var/log/plain.log"])
def test_display_name_is_lossless(raw: bytes) -> None:
    name = os.fsdecode(raw)
    shown = display_name(name)
    shown.encode("utf-8")  # always valid UTF-8: JSON, labels and logs carry it
    if is_raw(name):
        assert from_display(shown) == name
        assert "\\x" in shown
    else:
        assert shown == name


# Every character a shown name must not hold as it is: C0, DEL, C1 (NEL among them), U+2028, U+2029.
CONTROLS = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]]
FORGED = "x\n2026-12-06 00:00:00,000 CRITICAL logagent.agent: FORGED.log"


def _safe(shown: str) -> bool:
    """Nothing in it can end a line, rewrite a terminal or be split on: printable ASCII and
    printable non-ASCII only (str.isprintable is False for every character of CONTROLS)."""
    return shown.isprintable() and not any(ch in shown for ch in CONTROLS)


@pytest.mark.parametrize("char", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
def test_every_control_character_is_escaped_as_its_bytes_and_comes_back(char: str) -> None:
    name = f"/var/log/a{char}b.log"
    shown = display_name(name)
    assert shown == "/var/log/a" + "".join(f"\\x{b:02x}" for b in char.encode()) + "b.log"
    assert _safe(shown)
    assert from_display(shown) == name
    assert wire_name(name) == name  # the message's path and key: the name itself (JSON escapes it)


def test_the_forging_name_is_one_line_and_comes_back() -> None:
    shown = display_name(FORGED)
    assert shown == "x\\x0a2026-12-06 00:00:00,000 CRITICAL logagent.agent: FORGED.log"
    assert from_display(shown) == FORGED


def test_bytes_that_are_not_utf8_and_control_characters_together() -> None:
    name = os.fsdecode(b"/var/log/\xff\n\x1b[31m\\\xc2\x85\xc2.log")  # bad byte, LF, ESC, \\, NEL, lone lead byte
    shown = display_name(name)
    assert shown == "/var/log/\\xff\\x0a\\x1b[31m\\\\\\xc2\\x85\\xc2.log"
    assert _safe(shown) and from_display(shown) == name
    # NEL as a character and 0x85 as a byte that is not UTF-8 look different.
    assert display_name(os.fsdecode(b"\x85")) == "\\x85" != display_name("\x85") == "\\xc2\\x85"


@pytest.mark.parametrize(("name", "shown"), [
    ("/var/log/x\\x0a.log", "/var/log/x\\\\x0a.log"),  # reads as an escape: backslash doubled
    ("/var/log/x\n.log", "/var/log/x\\x0a.log"),  # the newline it could be taken for
    ("/var/log/a\\\\b.log", "/var/log/a\\\\\\\\b.log"),  # a doubled backslash literally
    ("/var/log/a\\b.log", "/var/log/a\\b.log"),  # a lone backslash is no escape: as it is
    ("/var/log/x\\xZZ\\X0A.log", "/var/log/x\\xZZ\\X0A.log"),  # nor \\x without two lowercase hex digits
    ("/var/log/plain.log", "/var/log/plain.log"),
    ("/var/log/caf\u00e9 \u65e5\u672c.log", "/var/log/caf\u00e9 \u65e5\u672c.log"),  # printable Unicode stays
])
def test_a_name_that_reads_as_an_escape_stays_distinguishable(name: str, shown: str) -> None:
    assert display_name(name) == shown
    assert from_display(shown) == name


def test_no_two_tricky_names_look_alike() -> None:
    names = ["x\n", "x\\x0a", "x\\\\x0a", "x\\\n", "x\\\\\n", os.fsdecode(b"x\n\xff"), os.fsdecode(b"x\\x0a\xff"),
             "x\x85", os.fsdecode(b"x\x85"), "x\\xc2\\x85", "x\u2028", "x\\"]
    shown = [display_name(n) for n in names]
    assert len(set(shown)) == len(names), shown
    assert [from_display(s) for s in shown] == names


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(st.binary(max_size=24) | st.lists(st.sampled_from([b"\\", b"x", b"0a", b"\n", b"\xff", b"\xc2", b"\x85",
                                                          b"\xe2\x80\xa8", b"\x1b", b"a"]), max_size=10).map(b"".join))
def test_display_name_is_lossless_one_line_and_plain_when_it_can_be(raw: bytes) -> None:
    name = os.fsdecode(raw)
    shown = display_name(name)
    shown.encode("utf-8")  # always valid UTF-8: JSON, labels and logs carry it
    assert not any(ch in shown for ch in CONTROLS)
    assert from_display(shown) == name
    if not is_raw(name) and not any(ch in name for ch in CONTROLS) and from_display(name) == name:
        assert shown == name  # a name that needs no escaping is shown (and labelled) as it was before
    wire = wire_name(name)
    wire.encode("utf-8")
    assert wire == name or (is_raw(name) and from_display(wire) == name)


def test_escape_controls_escapes_only_control_characters() -> None:
    assert escape_controls("plain \\x0a text") == "plain \\x0a text"  # backslashes are left: names are escaped already
    assert escape_controls(f"a{FORGED}") == "ax\\x0a2026-12-06 00:00:00,000 CRITICAL logagent.agent: FORGED.log"
    assert _safe(escape_controls("".join(CONTROLS)))
