"""InfluxDB line protocol encoder: pure functions, no I/O.

One point is one line: ``measurement[,tag=value...] field=value[,...] [timestamp_ns]``.

Escaping, as the line-protocol reference asks:

- measurement: comma and space;
- tag keys, tag values, field keys: comma, equals sign and space;
- string field values: inside double quotes, with ``"`` and ``\\`` escaped.

Two additions keep every line parseable whatever a name holds:

- a backslash in a name is written as two, so a name that ends in one (or has one
  before a comma) cannot escape the delimiter after it; InfluxDB 2.x reads ``\\\\``
  back as one backslash;
- newline, carriage return and tab would break the line, so they are written as the
  two characters ``\\n``, ``\\r``, ``\\t`` (as Telegraf does).

Field values: ``bool`` -> ``true``/``false``, ``int`` -> ``123i``, ``float`` -> shortest
round-trip repr, ``str`` -> quoted. NaN and infinities have no line-protocol form, so
such a field is left out; a point with no field left is not written at all (``None``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

_CONTROL = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_MEASUREMENT = str.maketrans({"\\": "\\\\", ",": "\\,", " ": "\\ ", **_CONTROL})
_KEY = str.maketrans({"\\": "\\\\", ",": "\\,", "=": "\\=", " ": "\\ ", **_CONTROL})
_STRING = str.maketrans({"\\": "\\\\", '"': '\\"', **_CONTROL})


def escape_measurement(name: str) -> str:
    """Escape a measurement name (comma, space, backslash, control characters)."""
    return name.translate(_MEASUREMENT)


def escape_key(text: str) -> str:
    """Escape a tag key, tag value or field key (comma, equals, space, backslash, control characters)."""
    return text.translate(_KEY)


def format_field_value(value: Any) -> str | None:
    """Line-protocol text of one field value, or None when it has none (NaN, inf, other types)."""
    # bool first: it is a subclass of int.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return f"{int(value)}i"
        # InfluxDB integers are int64; a float is the one type every version reads.
        try:
            value = float(value)
        except OverflowError:
            return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        # float() so a float subclass (numpy.float64) cannot bring its own repr.
        return repr(float(value))
    if isinstance(value, str):
        return '"' + value.translate(_STRING) + '"'
    return None


def encode_line(
    measurement: str,
    tags: Mapping[str, Any],
    fields: Mapping[str, Any],
    timestamp_ns: int | None = None,
) -> str | None:
    """One line-protocol line (without the trailing newline), or None when no field is left.

    Tags are written in the order given. A tag with an empty key or value (or value None)
    is left out: line protocol has no way to write it.
    """
    if not measurement:
        raise ValueError("measurement name must not be empty")
    head = [escape_measurement(measurement)]
    for key, value in tags.items():
        if value is None:
            continue
        key_text, value_text = str(key), str(value)
        if key_text and value_text:
            head.append(f"{escape_key(key_text)}={escape_key(value_text)}")
    body = []
    for key, value in fields.items():
        text = format_field_value(value)
        if key and text is not None:
            body.append(f"{escape_key(str(key))}={text}")
    if not body:
        return None
    line = ",".join(head) + " " + ",".join(body)
    if timestamp_ns is not None:
        line += f" {int(timestamp_ns)}"
    return line
