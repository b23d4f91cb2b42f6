"""parse_collect_value: the collect_log value as the old Go agent wrote it, and every way it can be bad."""

from __future__ import annotations

import json

import pytest

from logagent.errors import CollectConfigError
from logagent.sources.files.entry import (
    MAX_VALUE_BYTES,
    CollectEntry,
    dump_entries,
    parse_collect_value,
)

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


def test_missing_key_and_empty_list_mean_nothing() -> None:
    assert parse_collect_value(None, KEY, ALLOWED) == ([], [])
    assert parse_collect_value(b"[]", KEY, ALLOWED) == ([], [])


@pytest.mark.parametrize("value, got", [(b"null", "got null (to collect nothing, set [])"),
                                        (b"5", "got int"), (b'"x"', "got str"), (b"{}", "got dict"),
                                        (b"true", "got bool")])
def test_null_and_other_non_lists_are_refused_not_taken_as_nothing(value: bytes, got: str) -> None:
    # null used to mean "no entries": one bad put stopped every file, silently.
    with pytest.raises(CollectConfigError) as err:
        parse_collect_value(value, KEY, ALLOWED)
    assert str(err.value) == f"{KEY}: expected a JSON array of entries, {got}"


@pytest.mark.parametrize("value, problem", [
    (b'[{"path": "/var/log/a.log", "topic": "t"', "not valid JSON"),
    (b"\xff\xfe not utf-8", "not UTF-8 (byte 0 is not): etcd values must be UTF-8 JSON"),
    ('[{"path": "/var/log/a.log", "topic": "t"}]'.encode("utf-16"), "etcd values must be UTF-8 JSON"),
    (b"\xef\xbb\xbf[]", "starts with a byte-order mark"),
    (b"[NaN]", "not valid JSON: NaN is not JSON"),
    (b'[{"path": "/var/log/a.log", "topic": "t", "multiline": {"preset": "java", "max_lines": Infinity}}]',
     "Infinity is not JSON"),
    (b"[-Infinity]", "-Infinity is not JSON"),
    (b"[" * 200_000 + b"]" * 200_000, "nested deeper than 64 levels"),
    (b"[" * 65 + b"]" * 65, "nested deeper than 64 levels"),
    (b"[1" + b"0" * 5000 + b"]", "not valid JSON"),
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
    ({"path": "/var/log/a.log", "topic": "   "}, "topic must be a valid Kafka topic name"),
    ({"path": "/var/log/a.log"}, "topic must be a non-empty string"),
    ({"path": "/var/log/a.log", "topic": 7}, "topic must be a non-empty string"),
    ({"path": "/var/log/a.log", "topic": "bad topic!"}, "topic must be a valid Kafka topic name"),
    ({"path": "/var/log/a.log", "topic": "."}, "topic must be a valid Kafka topic name"),
    ({"path": "/var/log/a.log", "topic": ".."}, "topic must be a valid Kafka topic name"),
    ({"path": "/var/log/a.log", "topic": "a\nb"}, "topic must be a valid Kafka topic name"),
    ({"path": "/var/log/a.log", "topic": "x" * 250}, "topic must be a valid Kafka topic name"),
    ({"path": "/var/log/a.log", "topic": "__consumer_offsets"}, "is internal to Kafka"),
    ({"path": "/var/log/a.log", "topic": "__transaction_state"}, "is internal to Kafka"),
    ({"path": "/var/log/a.log", "topic": "t", "fields": {"n": 2 ** 64}}, "fields cannot be sent as JSON"),
    ({"path": "/var/log/a.log", "topic": "t", "fields": {"n": -(2 ** 63) - 1}}, "fields cannot be sent as JSON"),
    ({"path": "/var/log/a.log", "topic": "t", "fields": {"s": "\udcff"}}, "fields cannot be sent as JSON"),
    ({"path": "/var/log/a.log", "topic": "t", "fields": {"\ud800": 1}}, "fields cannot be sent as JSON"),
    ({"path": "/var/log/a\udcff.log", "topic": "t"}, "not valid Unicode"),
    ({"path": "/var/log/a.log", "topic": "t\udcff"}, "topic must be a valid Kafka topic name"),
    ({"path": "/var/log/a.log", "topic": "t", "module": "m\udcff"}, "module cannot be sent as JSON"),
    ({"path": "/var/log/a.log", "topic": "t", "encoding": "\udcff"}, "unknown encoding"),
    ({"path": "/var/log/a.log", "topic": "t", "multiline": {"pattern": "^\udcff"}}, "not valid Unicode"),
    ({"path": "/var/log/a.log", "topic": "t", "multiline": {"pattern": "(" * 5000}}, "not a valid regex"),
    ({"path": "/var/log/a.log", "topic": "t", "multiline": {"preset": "java", "timeout": 10 ** 400}},
     "timeout must be a number > 0"),
    ({"path": "/var/log/a.log", "topic": "t", "multiline": {"preset": ["java"]}}, "preset ['java'] unknown"),
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


@pytest.mark.parametrize("text, problem", [
    ('"fields": {"x": 1e400}', "fields cannot be sent as JSON: the number inf is not finite"),
    ('"multiline": {"preset": "java", "max_lines": 1e400}', "max_lines must be a whole number > 0, got inf"),
    ('"multiline": {"preset": "java", "max_lines": 18446744073709551616}', None),  # big but whole: taken
])
def test_numbers_beyond_a_float_in_raw_json(text: str, problem: str | None) -> None:
    value = '[{"path": "/var/log/a.log", "topic": "t", ' + text + '}]'
    entries, errors = parse_collect_value(value, KEY, ALLOWED)
    if problem is None:
        assert len(entries) == 1 and errors == []
    else:
        assert entries == [] and len(errors) == 1 and problem in errors[0], errors


def test_fields_as_deep_as_orjson_takes_are_refused_as_a_whole_value_beyond_the_depth_limit() -> None:
    deep: object = 1
    for _ in range(300):  # orjson stops at 254: the message builder would crash on every line
        deep = {"k": deep}
    value = json.dumps([{"path": "/var/log/a.log", "topic": "t", "fields": {"deep": deep}}])
    with pytest.raises(CollectConfigError, match="nested deeper than 64 levels"):
        parse_collect_value(value, KEY, ALLOWED)


@pytest.mark.parametrize("encoding, problem", [
    ("idna", "cannot decode with replacement"), ("punycode", "lines cannot be split"),
    ("rot13", "not a text encoding"), ("hex", "not a text encoding"), ("base64", "not a text encoding"),
    ("zlib", "not a text encoding"), ("unicode_escape", "lines cannot be split"),
    ("cp037", "lines cannot be split"), ("utf-8-sig", "lines cannot be split"),
    ("undefined", "cannot decode with replacement"),
])
def test_an_encoding_the_tailer_cannot_read_with_replacement_is_refused(encoding: str, problem: str) -> None:
    entries, errors = parse_collect_value(json.dumps([{"path": "/var/log/a.log", "topic": "t",
                                                       "encoding": encoding}]), KEY, ALLOWED)
    assert entries == [] and len(errors) == 1
    assert f"encoding {encoding!r} refused: " in errors[0] and problem in errors[0], errors[0]
    entries, errors = parse_collect_value(json.dumps([{"path": "/var/log/a.log", "topic": "t",
                                                       "encoding": "no-such-codec"}]), KEY, ALLOWED)
    assert errors == [f"{KEY} entry 0 ('/var/log/a.log'): unknown encoding 'no-such-codec'"]


@pytest.mark.parametrize("encoding", ["utf-8", "UTF8", "latin-1", "cp1252", "utf-16", "utf-16-be", "utf-32",
                                      "shift_jis", "gb18030", "big5", "euc-kr", "utf-7"])
def test_text_encodings_are_accepted(encoding: str) -> None:
    (entry,), errors = parse_collect_value(json.dumps([{"path": "/var/log/a.log", "topic": "t",
                                                        "encoding": encoding}]), KEY, ALLOWED)
    assert errors == [] and entry.encoding == encoding


def test_paths_are_normalised_and_the_same_path_twice_is_one_entry() -> None:
    value = json.dumps([{"path": "/var/log/d/dup.log", "topic": "a"},
                        {"path": "/var/log/d//dup.log", "topic": "b"},
                        {"path": "/var/log/d/./dup.log", "topic": "c"},
                        {"path": "//var/log/./d/other.log/", "topic": "d"},
                        {"path": "/var//log/d/**/*.[lg]og", "topic": "e"}])
    entries, errors = parse_collect_value(value, KEY, ALLOWED)
    assert [(e.path, e.topic) for e in entries] == [("/var/log/d/dup.log", "a"), ("/var/log/d/other.log", "d"),
                                                    ("/var/log/d/**/*.[lg]og", "e")]
    assert len(errors) == 2
    for index, error in zip((1, 2), errors, strict=True):
        assert error.startswith(f"{KEY} entry {index} (") and "duplicate path" in error
        assert f"{KEY} entry 0 ('/var/log/d/dup.log') has the same path" in error  # the entry that won


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


def test_container_formats_are_accepted_and_round_trip() -> None:
    value = json.dumps([{"path": f"/var/log/pods/*/*/{fmt}.log", "topic": "t", "format": fmt}
                        for fmt in ("plain", "cri", "docker", "auto")] + [{"path": "/var/log/x.log", "topic": "t"}])
    entries, errors = parse_collect_value(value, KEY, ALLOWED)
    assert errors == []
    assert [e.format for e in entries] == ["plain", "cri", "docker", "auto", "plain"]
    again, _ = parse_collect_value(dump_entries(entries), KEY, ALLOWED)
    assert again == entries
    assert "format" not in dump_entries(entries[:1])  # plain is the default, left out
    assert not entries[1].same_reading(entries[1].__class__(entries[1].path, "t", format="docker"))


@pytest.mark.parametrize("extra, problem", [
    ({"format": "json"}, "format must be one of plain, cri, docker, auto, got 'json'"),
    ({"format": 1}, "format must be one of"),
    ({"format": "cri", "multiline": "java"}, "multiline cannot be combined with format 'cri'"),
    ({"format": "docker", "encoding": "utf-16"}, "needs an encoding that writes ASCII as ASCII"),
    ({"format": "cri", "fields": {"stream": "x"}}, "fields may not set ['stream']"),
    ({"format": "auto", "fields": {"kubernetes": {}, "time": 1}}, "fields may not set ['kubernetes', 'time']"),
])
def test_bad_container_format_values_are_refused(extra: dict[str, object], problem: str) -> None:
    value = json.dumps([{"path": "/var/log/pods/*/*/*.log", "topic": "t", **extra}])
    entries, errors = parse_collect_value(value, KEY, ALLOWED)
    assert entries == [] and len(errors) == 1 and problem in errors[0], errors


def test_a_plain_entry_may_still_set_time_and_stream_fields() -> None:
    (entry,), errors = parse_collect_value(json.dumps([{"path": "/var/log/a.log", "topic": "t",
                                                        "fields": {"time": 1, "stream": "x"}}]), KEY, ALLOWED)
    assert errors == [] and dict(entry.fields) == {"time": 1, "stream": "x"}
