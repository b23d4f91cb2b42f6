"""parse_collect_value: the collect_log value as the old Go agent wrote it, and every way it can be bad."""

from __future__ import annotations

import json

import pytest

from logagent.collect import (
    MAX_VALUE_BYTES,
    CollectEntry,
    dump_entries,
    parse_collect_value,
)
from logagent.errors import CollectConfigError

KEY = "/logagent/10.0.0.5/collect_log/config"
ALLOWED = ("/var/log/**",)

# Byte for byte what the Go agent's operators put in etcd.
GO_VALUE = (b'[{"path":"/var/log/nginx/access.log","topic":"web_log"},'
            b'{"path":"/var/log/app.log","topic":"app_log"}]')


def test_go_agent_value_is_read_unchanged() -> None:
    entries, errors = parse_collect_value(GO_VALUE, KEY, ALLOWED)
    assert errors == []
    assert entries == [CollectEntry("/var/log/nginx/access.log", "web_log"),
                       CollectEntry("/var/log/app.log", "app_log")]
    assert entries[0].start == "end" and entries[0].module == "" and dict(entries[0].fields) == {}


def test_optional_fields() -> None:
    value = json.dumps([{"path": "/var/log/*.log", "topic": "t", "module": "web", "start": "beginning",
                         "fields": {"env": "prod"}}])
    (entry,), errors = parse_collect_value(value, KEY, ALLOWED)
    assert errors == []
    assert (entry.module, entry.start, dict(entry.fields), entry.is_glob) == ("web", "beginning", {"env": "prod"}, True)


def test_dump_entries_round_trips() -> None:
    entries, _ = parse_collect_value(GO_VALUE, KEY, ALLOWED)
    assert parse_collect_value(dump_entries(entries), KEY, ALLOWED) == (entries, [])


def test_missing_key_and_null_mean_nothing() -> None:
    assert parse_collect_value(None, KEY, ALLOWED) == ([], [])
    assert parse_collect_value(b"null", KEY, ALLOWED) == ([], [])
    assert parse_collect_value(b"[]", KEY, ALLOWED) == ([], [])


@pytest.mark.parametrize("value, problem", [
    (b'[{"path": "/var/log/a.log", "topic": "t"', "not valid JSON"),
    (b"\xff\xfe not utf-8", "not valid JSON"),
    (b'{"path": "/var/log/a.log", "topic": "t"}', "expected a JSON array"),
    (b'"just a string"', "expected a JSON array"),
])
def test_wholly_bad_value_raises_naming_the_key(value: bytes, problem: str) -> None:
    with pytest.raises(CollectConfigError) as err:
        parse_collect_value(value, KEY, ALLOWED)
    assert KEY in str(err.value) and problem in str(err.value)


@pytest.mark.parametrize("entry, problem", [
    ("a string", "expected an object"),
    ({"path": 5, "topic": "t"}, "path must be a non-empty string"),
    ({"topic": "t"}, "path must be a non-empty string"),
    ({"path": "var/log/a.log", "topic": "t"}, "is relative"),
    ({"path": "/var/log/a.log", "topic": ""}, "topic must be a non-empty string"),
    ({"path": "/var/log/a.log", "topic": "   "}, "topic must be a non-empty string"),
    ({"path": "/var/log/a.log"}, "topic must be a non-empty string"),
    ({"path": "/var/log/a.log", "topic": 7}, "topic must be a non-empty string"),
    ({"path": "/var/log/a.log", "topic": "bad topic!"}, "not a valid Kafka topic name"),
    ({"path": "/etc/passwd", "topic": "t"}, "outside [agent] allowed_paths"),
    ({"path": "/var/log/../../etc/shadow", "topic": "t"}, "contains '..'"),
    ({"path": "/var/log/a.log", "topic": "t", "module": 3}, "module must be a string"),
    ({"path": "/var/log/a.log", "topic": "t", "start": "middle"}, "start must be"),
    ({"path": "/var/log/a.log", "topic": "t", "fields": [1]}, "fields must be an object"),
    ({"path": "/var/log/a.log", "topic": "t", "fields": {"ip": "x"}}, "reserved keys"),
])
def test_bad_entry_is_refused_with_key_entry_and_problem(entry: object, problem: str) -> None:
    entries, errors = parse_collect_value(json.dumps([entry]), KEY, ALLOWED)
    assert entries == []
    assert len(errors) == 1
    assert KEY in errors[0] and "entry 0" in errors[0] and problem in errors[0], errors[0]


def test_one_bad_entry_does_not_stop_the_good_ones_beside_it() -> None:
    value = json.dumps([
        {"path": "/var/log/a.log", "topic": "a"},
        {"path": "/etc/shadow", "topic": "stolen"},
        {"path": "relative.log", "topic": "r"},
        {"path": "/var/log/b.log", "topic": "b"},
        {"path": "/var/log/a.log", "topic": "again"},
    ])
    entries, errors = parse_collect_value(value, KEY, ALLOWED)
    assert [(e.path, e.topic) for e in entries] == [("/var/log/a.log", "a"), ("/var/log/b.log", "b")]
    assert len(errors) == 3
    assert "entry 1 ('/etc/shadow')" in errors[0] and "allowed_paths" in errors[0]
    assert "entry 2 ('relative.log')" in errors[1] and "relative" in errors[1]
    assert "entry 4" in errors[2] and "duplicate" in errors[2]


def test_oversized_value_is_refused_before_parsing() -> None:
    big = b"[" + b" " * MAX_VALUE_BYTES + b"]"
    with pytest.raises(CollectConfigError) as err:
        parse_collect_value(big, KEY, ALLOWED)
    assert "refused" in str(err.value) and str(MAX_VALUE_BYTES) in str(err.value) and KEY in str(err.value)


def test_value_at_the_limit_is_accepted() -> None:
    body = json.dumps([{"path": "/var/log/a.log", "topic": "t"}])
    value = body + " " * (MAX_VALUE_BYTES - len(body))
    assert len(value) == MAX_VALUE_BYTES
    entries, errors = parse_collect_value(value, KEY, ALLOWED)
    assert len(entries) == 1 and errors == []


def test_allow_list_globs() -> None:
    allowed = ("/srv/*/logs/**", "/data/app.log")
    value = json.dumps([{"path": "/srv/web/logs/x/y.log", "topic": "t"},
                        {"path": "/data/app.log", "topic": "t"},
                        {"path": "/srv/web/other/y.log", "topic": "t"},
                        {"path": "/data/app.log.1", "topic": "t"}])
    entries, errors = parse_collect_value(value, KEY, allowed)
    assert [e.path for e in entries] == ["/srv/web/logs/x/y.log", "/data/app.log"]
    assert len(errors) == 2 and all("allowed_paths" in e for e in errors)
