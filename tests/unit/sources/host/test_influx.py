"""Line-protocol encoder: escaping, value types, NaN removal."""

from __future__ import annotations

import math

import pytest

from logagent.sources.host.influx import encode_line, escape_key, escape_measurement, format_field_value


def test_brief_example() -> None:
    line = encode_line("cpu", {"host": "web-1", "ip": "10.0.0.5", "cpu": "cpu-total"},
                       {"usage_percent": 12.5}, 1764079200 * 1_000_000_000)
    assert line == "cpu,host=web-1,ip=10.0.0.5,cpu=cpu-total usage_percent=12.5 1764079200000000000"


def test_no_timestamp_and_no_tags() -> None:
    assert encode_line("mem", {}, {"used": 1}) == "mem used=1i"


@pytest.mark.parametrize(("raw", "escaped"), [
    ("my measurement", r"my\ measurement"),
    ("a,b", r"a\,b"),
    ("a=b", "a=b"),  # equals needs no escape in a measurement
    ("back\\slash", r"back\\slash"),
])
def test_escape_measurement(raw: str, escaped: str) -> None:
    assert escape_measurement(raw) == escaped


@pytest.mark.parametrize(("raw", "escaped"), [
    ("two words", r"two\ words"),
    ("a,b", r"a\,b"),
    ("k=v", r"k\=v"),
    (r"ends\ ", r"ends\\\ "),
    ("ends\\", "ends\\\\"),
    ("line\nbreak\ttab\r", r"line\nbreak\ttab\r"),
])
def test_escape_key(raw: str, escaped: str) -> None:
    assert escape_key(raw) == escaped


def test_tags_and_field_keys_escaped() -> None:
    line = encode_line("disk", {"path": "/mnt/my disk,x=1", "dev ice": "a=b"}, {"used percent": 1.5, "a,b=c": 2})
    assert line == r"disk,path=/mnt/my\ disk\,x\=1,dev\ ice=a\=b used\ percent=1.5,a\,b\=c=2i"


def test_empty_tags_left_out() -> None:
    assert encode_line("m", {"a": "", "": "x", "n": None, "ok": "1"}, {"f": 1}) == "m,ok=1 f=1i"


def test_non_string_tag_values_are_stringified() -> None:
    assert encode_line("m", {"port": 80}, {"f": 1}) == "m,port=80 f=1i"


@pytest.mark.parametrize(("value", "text"), [
    (0, "0i"),
    (-42, "-42i"),
    (2**63 - 1, "9223372036854775807i"),
    (2**63, "9.223372036854776e+18"),  # beyond int64: written as a float
    (12.5, "12.5"),
    (1.0, "1.0"),
    (True, "true"),
    (False, "false"),
    ("plain", '"plain"'),
    ('say "hi"', r'"say \"hi\""'),
    ("back\\slash", r'"back\\slash"'),
    ("multi\nline", r'"multi\nline"'),
    ("with space, comma=equals", '"with space, comma=equals"'),
])
def test_field_values(value: object, text: str) -> None:
    assert format_field_value(value) == text


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, None, b"bytes", [1], {"a": 1}])
def test_field_values_without_form(value: object) -> None:
    assert format_field_value(value) is None


def test_nan_fields_dropped() -> None:
    line = encode_line("m", {"t": "x"}, {"a": math.nan, "b": 1.5, "c": math.inf, "d": -math.inf}, 7)
    assert line == "m,t=x b=1.5 7"


def test_line_without_fields_is_not_written() -> None:
    assert encode_line("m", {"t": "x"}, {"a": math.nan}, 7) is None
    assert encode_line("m", {"t": "x"}, {}, 7) is None


def test_empty_measurement_refused() -> None:
    with pytest.raises(ValueError):
        encode_line("", {}, {"a": 1})


def test_float_subclass_uses_plain_repr() -> None:
    class Weird(float):
        def __repr__(self) -> str:
            return "Weird(1.0)"

    assert format_field_value(Weird(1.0)) == "1.0"


def test_output_is_one_line() -> None:
    line = encode_line("m\n", {"t\n": "v\r\n"}, {"s": "a\nb"}, 1)
    assert line is not None and "\n" not in line and "\r" not in line
