"""Checks shared by config.ini, the etcd values and the CLI: one of each.

- ``decode_json`` / ``decode_json_value``: the guard every etcd value (and ``[collect] files``) passes
  before its schema is looked at: size, UTF-8, strict JSON (no NaN/Infinity), nesting.
- ``decode_optional``: that guard for a key that may be unset or null, and the kind of document it holds.
- ``parse_bool``: the words config.ini, etcd values and CLI flags take for true/false.
- ``topic_problem``: Kafka's own rule for topic names, and no internal topics.
- ``orjson_problem``: whether a value can go through orjson, which builds every message.
- ``show``: a bad value, short, on one line, safe for any decoded value.
- ``split_host_port``: `host:port` (or `[v6]:port`) of every address setting.
- ``has_glob``: whether a path or one of its parts is a glob pattern.
- ``name_problem``: a host id or group name that can name an etcd key without escaping its place;
  ``unique_names``: a list of them, each checked, each once.

Nothing here imports psutil, prometheus_client or the Kafka client, so settings.py and the
CLI can use it cheaply.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from collections.abc import Iterable
from typing import Any

import orjson

from logagent.errors import ConfigError

MAX_VALUE_BYTES = 1024 * 1024
"""Largest etcd value taken; etcd's own default request limit is 1.5 MiB."""

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects taken in a value. A collect value needs 4 levels
(array, entry, fields, a nested field); 64 stays far below orjson's 254 (the message builder
could not encode deeper fields) and below Python's recursion limit (json.loads raises
RecursionError near 1,000), so nothing downstream can fail on depth."""

TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
FALSE_WORDS = frozenset({"false", "no", "off", "0"})

_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
TOPIC_RULE = "letters, digits, '.', '_', '-'; 1 to 249 characters; not '.' or '..'"

SHOW_CHARS = 200
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
NAME_RULE = "1 to 128 letters, digits, '.', '_', ':', '@', '-', starting with a letter or digit"
RESERVED_NAMES = frozenset({"fleet"})
_HOSTPORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$")
GLOB_CHARS = "*?["
_repr = reprlib.Repr()
_repr.maxstring = SHOW_CHARS
_repr.maxother = SHOW_CHARS
_repr.maxlevel = 3


def show(value: Any) -> str:
    """repr of a value for an error message: at most SHOW_CHARS characters (a whole path, a
    cut 1 MB string), one line, and safe for any decoded JSON (deep nesting, huge strings and
    lone surrogates are all cut or escaped)."""
    text = _repr.repr(value)
    return text if len(text) <= SHOW_CHARS else text[:SHOW_CHARS - 3] + "..."


def parse_bool(value: Any) -> bool | None:
    """True/False for a JSON bool or a word (true/yes/on/1, false/no/off/0, any case); None if neither."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    return None


def topic_problem(name: Any) -> str | None:
    """What is wrong with `name` as the topic of our messages, or None when Kafka takes it.

    Kafka's rule (legal characters, 1..249, not "." or ".."), and no internal topic: names
    starting with "__" (__consumer_offsets, __transaction_state) belong to the broker, and
    writing log lines there would corrupt it or be refused forever.
    """
    if not isinstance(name, str) or not name:
        return f"topic must be a non-empty string, got {show(name)}"
    if not _TOPIC.fullmatch(name) or name in (".", ".."):
        return f"topic must be a valid Kafka topic name ({TOPIC_RULE}), got {show(name)}"
    if name.startswith("__"):
        return f"topic {show(name)} is internal to Kafka (names starting with '__' are the broker's)"
    return None


def check_topic(name: Any, where: str, error: type[ConfigError] = ConfigError) -> str:
    """`name` when it is a topic Kafka takes; else raise `error` naming `where`."""
    problem = topic_problem(name)
    if problem is not None:
        raise error(f"{where}: {problem}")
    return str(name)


def orjson_problem(value: Any) -> str | None:
    """Why orjson (the message builder) cannot encode `value`, or None when it can.

    orjson refuses integers outside 64 bits, strings with lone surrogates and nesting
    beyond 254 levels; it writes NaN and infinities as null, which would silently change
    a value, so they are refused here too.
    """
    try:
        orjson.dumps(value)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        return str(exc) or type(exc).__name__
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return f"the number {item} is not finite"
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _nesting(data: Any, limit: int) -> bool:
    """True when `data` nests arrays/objects deeper than `limit` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def decode_json(value: bytes | str) -> Any:
    """The decoded JSON of an etcd value or of config.ini JSON text; ValueError(reason) if refused.

    Refused as a whole: more than MAX_VALUE_BYTES; bytes that are not UTF-8 (a UTF-16 BOM,
    latin-1 text: etcd values are UTF-8 JSON, as the Go agent wrote them); a byte-order mark;
    not JSON; the non-standard constants NaN, Infinity and -Infinity that Python's json takes
    by default; nesting deeper than MAX_DEPTH. What is left is plain JSON data that every later
    check can walk without an exception other than the ones it expects.
    """
    size = len(value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value)
    if size > MAX_VALUE_BYTES:
        raise ValueError(f"value of {size} bytes refused (limit {MAX_VALUE_BYTES})")
    if isinstance(value, str):
        text = value
    else:
        try:
            text = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 (byte {exc.start} is not): etcd values must be UTF-8 JSON") from None
    if text.startswith("\ufeff"):
        raise ValueError("starts with a byte-order mark: etcd values must be UTF-8 JSON without one")
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError(f"not valid JSON: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if _nesting(data, MAX_DEPTH):
        raise ValueError(f"not valid JSON: nested deeper than {MAX_DEPTH} levels")
    return data


def decode_json_value(value: bytes | str, key: str, error: type[ConfigError] = ConfigError) -> Any:
    """decode_json, with a refusal raised as `error` naming `key` (one line)."""
    try:
        return decode_json(value)
    except ValueError as exc:
        raise error(f"{key}: {exc}") from None


def decode_optional(raw: bytes | str | None, key: str, kind: type, expected: str) -> Any:
    """The document of a key that may be unset: None when it is not set or holds null, else the
    decoded value, which must be a `kind` (ConfigError, one line naming the key and saying
    `expected`, when it is not, or when decode_json refuses it)."""
    if raw is None:
        return None
    data = decode_json_value(raw, key)
    if data is not None and not isinstance(data, kind):
        raise ConfigError(f"{key}: expected {expected}, got {type(data).__name__}")
    return data


def split_host_port(raw: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`, host kept in its brackets) into (host, port); ValueError naming
    the rule when it is not one, or the port is not 1 to 65535."""
    match = _HOSTPORT.match(raw.strip())
    if not match or not 0 < int(match.group(2)) < 65536:
        raise ValueError("host:port with a port from 1 to 65535")
    return match.group(1), int(match.group(2))


def has_glob(text: str) -> bool:
    """True when `text` (a path or one of its parts) holds a glob character: `*`, `?` or `[`."""
    return any(ch in text for ch in GLOB_CHARS)


def name_problem(name: Any, what: str) -> str | None:
    """Why `name` cannot be a host id or a group name (`what` says which), or None when it can.

    Each becomes one component of an etcd key (`<prefix>/config/groups/<group>/collect_log`,
    `/logagent/<id>/collect_log/config`): a '/', a '..', a control character or a space would
    move the key elsewhere or make it unreadable, so only NAME_RULE's characters are taken.
    'fleet' is refused (any case): `/logagent/fleet/...` is the fleet's own prefix.
    """
    if not isinstance(name, str) or not name:
        return f"{what} must be a non-empty string, got {show(name)}"
    if not _NAME.fullmatch(name):
        return f"{what} {show(name)} refused: expected {NAME_RULE} (no '/', '..', space or control character)"
    if name.lower() in RESERVED_NAMES:
        return f"{what} {show(name)} refused: the name is reserved (the fleet keys live under /logagent/fleet)"
    return None


def unique_names(names: Iterable[Any], what: str) -> tuple[str, ...]:
    """`names` in their order, each once (a repeat is dropped); ValueError with name_problem's words
    at the first that cannot be a `what`."""
    out: list[str] = []
    for name in names:
        problem = name_problem(name, what)
        if problem is not None:
            raise ValueError(problem)
        if name not in out:
            out.append(name)
    return tuple(out)
