"""Validation is total: any value put in etcd either validates or is refused with one line.

A property-based test (hypothesis) over generated JSON values, shaped and unshaped: deep
nesting, integers beyond 64 bits, NaN and infinities, lone surrogates, text that is not
UTF-8. Each value given to parse_collect_value and parse_sysinfo_value must come back as
entries/settings or as the project's ConfigError with a one-line message, and what is
accepted must go through everything downstream that used to crash: the message builder
(orjson), the saved last-good configuration (UTF-8 JSON) and parsing that back.
Deterministic (derandomize): the same examples every run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from logagent.config.sysinfo import SysinfoSettings, parse_sysinfo_value
from logagent.config.values import decode_json
from logagent.errors import CollectConfigError, ConfigError
from logagent.pipeline.message import MessageFormat
from logagent.sources.files.entry import CollectEntry, dump_entries, parse_collect_value

CK = "/logagent/10.0.0.5/collect_log/config"
SK = "/logagent/10.0.0.5/collect_sysinfo/config"
ALLOWED = ("/var/log/**",)
BASE = SysinfoSettings()
T = TypeVar("T")

FUZZ = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ---------------------------------------------------------------------------- strategies

surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
texts = st.one_of(st.text(max_size=12), st.text(alphabet=st.one_of(st.characters(), surrogates), max_size=6),
                  st.sampled_from(["", ".", "..", "__consumer_offsets", "a\nb", "x" * 250, "utf-8", "idna",
                                   "punycode", "rot13", "utf-16", "java", "after", "before", "end", "beginning",
                                   "yes", "off", "json", "influx", "5", "nan", "inf", "-1"]))
integers = st.one_of(st.integers(-10, 1000), st.sampled_from([2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1, 2 ** 64,
                                                               -(2 ** 63), -(2 ** 63) - 1, 10 ** 30, 10 ** 400]))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e308, 5.5]))
scalars = st.one_of(st.none(), st.booleans(), integers, floats, texts)


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(children, max_size=4), st.dictionaries(texts, children, max_size=4))


json_values = st.recursive(scalars, containers, max_leaves=20)


@st.composite
def deep(draw: st.DrawFn) -> Any:
    """A value nested n deep (arrays or objects), up to past orjson's 254 and json's ~1000."""
    n = draw(st.one_of(st.integers(1, 70), st.sampled_from([253, 254, 255, 300, 1000, 5000])))
    value: Any = draw(scalars)
    for _ in range(n):
        value = [value] if draw(st.booleans()) else {"k": value}
    return value


paths = st.one_of(st.sampled_from(["/var/log/a.log", "/var/log/*.log", "/var/log//b.log", "/var/log/./c.log",
                                   "/var/log/../etc/shadow", "/etc/passwd", "rel.log", "/var/log/\udcff.log",
                                   "/var/log/a\x00.log", "/var/log/**"]), json_values)
topics = st.one_of(st.sampled_from(["t", "web_log", ".", "..", "__consumer_offsets", "a b", ""]), json_values)
multilines = st.one_of(
    st.none(), st.sampled_from(["java", "python", "go", "cobol"]), json_values,
    st.fixed_dictionaries({}, optional={"preset": st.one_of(st.sampled_from(["java", ""]), json_values),
                                        "pattern": st.one_of(st.sampled_from(["^ ", "(", "(" * 3000, "\udcff"]),
                                                             json_values),
                                        "negate": st.one_of(st.booleans(), json_values),
                                        "match": st.one_of(st.sampled_from(["after", "before"]), json_values),
                                        "max_lines": st.one_of(integers, floats, json_values),
                                        "max_bytes": st.one_of(integers, floats),
                                        "timeout": st.one_of(integers, floats)}))
entries = st.fixed_dictionaries(
    {"path": paths, "topic": topics},
    optional={"module": st.one_of(texts, json_values), "start": st.one_of(st.sampled_from(["end", "beginning"]),
                                                                          json_values),
              "fields": st.one_of(st.dictionaries(texts, st.one_of(json_values, deep()), max_size=3), json_values),
              "encoding": st.one_of(texts, json_values), "multiline": multilines, "extra": json_values})
collect_values = st.one_of(st.lists(st.one_of(entries, json_values), max_size=5), json_values, deep())
sysinfo_values = st.one_of(
    st.fixed_dictionaries({}, optional={"enabled": st.one_of(st.booleans(), texts, json_values),
                                        "topic": topics, "interval": st.one_of(integers, floats, texts, json_values),
                                        "format": st.one_of(texts, json_values), "other": st.one_of(json_values,
                                                                                                    deep())}),
    json_values, deep())


@st.composite
def encoded(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> bytes | str:
    """A value as etcd or a file would hold it: JSON text (NaN, Infinity and escaped or raw
    surrogates included) as str or bytes, UTF-8 or not, or a few raw oddities."""
    value = draw(values)
    try:
        text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    except RecursionError:
        text = "[" * 100_000 + "]" * 100_000
    how = draw(st.sampled_from(["str", "utf-8", "utf-16", "latin-1", "cut"]))
    if how == "str":
        return text
    if how == "cut":
        return text[: draw(st.integers(0, len(text)))].encode("utf-8", "surrogatepass")
    return text.encode("utf-8" if how == "utf-8" else how, "surrogatepass" if how != "latin-1" else "replace")


# ---------------------------------------------------------------------------- properties

def one_line(message: str, key: str) -> None:
    assert message.startswith(key + "") and "\n" not in message and len(message) < 1000, message


def validates_or_is_refused_in_one_line(parse: Callable[[], T], refusal: type[Exception], key: str,
                                        usable: Callable[[T], None]) -> None:
    """parse() either raises `refusal`, with one line naming `key`, or returns what `usable` accepts."""
    try:
        parsed = parse()
    except refusal as exc:
        one_line(str(exc), key)
        return
    usable(parsed)


def collect_usable(parsed: tuple[list[CollectEntry], list[str]]) -> None:
    """Each refused entry said in one line; the entries taken usable downstream."""
    entries, errors = parsed
    for error in errors:
        one_line(error, CK + " entry ")
    usable_downstream(entries)


def sysinfo_usable(parsed: tuple[SysinfoSettings, dict[str, Any] | None]) -> None:
    """Settings with a usable interval; the override saved as UTF-8 and parsed back to the same settings."""
    result, override = parsed
    assert isinstance(result, SysinfoSettings) and math.isfinite(result.interval) and result.interval > 0
    json.dumps(override, ensure_ascii=False).encode("utf-8")  # saved and logged as UTF-8
    assert parse_sysinfo_value(json.dumps(override), SK, BASE)[0] == result


def usable_downstream(entries: list[Any]) -> None:
    """What used to crash after validation: building a message, saving, reading the save back."""
    for entry in entries:
        fmt = MessageFormat("10.0.0.5", "host", entry.path, entry.module, entry.fields, entry.encoding)
        message = fmt.build([(0, "line é\n".encode(), False)], b"2026-01-01T00:00:00.000000Z")[0]
        assert json.loads(message)["path"] == entry.path
        if entry.multiline is not None:
            assert math.isfinite(entry.multiline.timeout) and entry.multiline.max_lines > 0
            entry.multiline.continuation()("line")
    dumped = dump_entries(entries)
    dumped.encode("utf-8")  # strict: no lone surrogate reaches the saved file
    assert parse_collect_value(dumped, CK, ALLOWED) == (entries, [])


@FUZZ
@given(encoded(collect_values))
def test_any_collect_value_validates_or_is_refused_in_one_line(value: bytes | str) -> None:
    validates_or_is_refused_in_one_line(lambda: parse_collect_value(value, CK, ALLOWED), CollectConfigError, CK,
                                        collect_usable)


@FUZZ
@given(encoded(sysinfo_values))
def test_any_sysinfo_value_validates_or_is_refused_in_one_line(value: bytes | str) -> None:
    validates_or_is_refused_in_one_line(lambda: parse_sysinfo_value(value, SK, BASE), ConfigError, SK,
                                        sysinfo_usable)


@FUZZ
@given(entries)
def test_any_single_entry_validates_or_is_refused_entry_by_entry(entry: dict[str, Any]) -> None:
    """An entry, good or bad, beside a good one: the good one always applies."""
    good = {"path": "/var/log/good.log", "topic": "good"}
    try:
        text = json.dumps([good, entry], allow_nan=False)
        decode_json(text)
    except (ValueError, RecursionError):
        # Not JSON (NaN, Infinity) or nested deeper than MAX_DEPTH: refused as a whole value,
        # like a syntax error (the other two tests cover that); here entries are the point.
        assume(False)
    found, errors = parse_collect_value(text, CK, ALLOWED)
    assert found[0].path == "/var/log/good.log" and len(found) + len(errors) == 2
    usable_downstream(found)
