"""The configuration in force from the host's keys and its fleet keys (groups, assignment): what
each update asks the agent to apply, judged key by key, merged once."""

from __future__ import annotations

import json

import pytest

from logagent.config.sysinfo import SysinfoSettings
from logagent.control.fleet.keys import FleetKeys
from logagent.control.tracker import ConfigTracker, FleetScope, parse_groups
from logagent.errors import ConfigError
from logagent.sources.files.entry import CollectEntry

K = FleetKeys("/logagent/fleet")
CK = "/logagent/h1/collect_log/config"
SK = "/logagent/h1/collect_sysinfo/config"
BASE = SysinfoSettings(enabled=False, topic="base", interval=7)


def value(*entries: tuple[str, str]) -> bytes:
    return json.dumps([{"path": p, "topic": t} for p, t in entries]).encode()


def tracker(groups: tuple[str, ...] = ("web",)) -> ConfigTracker:
    return ConfigTracker(CK, SK, ("/var/log/**",), BASE, FleetScope(K, "h1", groups))


def paths(entries: list[CollectEntry] | None) -> list[str] | None:
    return None if entries is None else [e.path for e in entries]


def test_a_read_merges_the_groups_and_the_host_key_once() -> None:
    t = tracker(("web", "eu"))
    change = t.update_many({CK: value(("/var/log/own.log", "own"), ("/var/log/a.log", "host-a")), SK: None,
                            K.group_collect("web"): value(("/var/log/a.log", "web-a"), ("/var/log/w.log", "w")),
                            K.group_collect("eu"): value(("/var/log/e.log", "e")),
                            K.group_sysinfo("eu"): b'{"interval": 3}',
                            K.group_collect("db"): value(("/var/log/db.log", "db"))},
                           20, {CK: 18, K.group_collect("web"): 12, K.group_collect("eu"): 13,
                                K.group_sysinfo("eu"): 14, K.group_collect("db"): 15}, complete=True)
    assert [(e.path, e.topic) for e in change.collect or []] == [  # in layer order: groups, then the host's
        ("/var/log/w.log", "w"), ("/var/log/e.log", "e"), ("/var/log/own.log", "own"), ("/var/log/a.log", "host-a")]
    assert change.sysinfo == SysinfoSettings(enabled=False, topic="base", interval=3)
    assert [(p.origin.label, p.origin.revision) for p in t.merged.placed] == [
        ("group web", 12), ("group eu", 13), ("host", 18), ("host", 18)]
    sources = t.sources()
    assert sources[K.group_collect("web")] == 12 and sources[K.group_sysinfo("eu")] == 14
    assert sources[K.group_sysinfo("web")] == 0 and sources[K.host_groups("h1")] == 0
    assert K.group_collect("db") not in sources  # not this host's group


def test_one_group_write_changes_the_effective_list_and_others_groups_are_not_judged() -> None:
    t = tracker()
    t.update_many({CK: None, SK: None, K.group_collect("web"): value(("/var/log/a.log", "a"))}, 5, complete=True)
    change = t.update(K.group_collect("web"), value(("/var/log/a.log", "a"), ("/var/log/b.log", "b")), 6)
    assert paths(change.collect) == ["/var/log/a.log", "/var/log/b.log"]
    change = t.update(K.group_collect("db"), b"{not json", 7)
    assert not change.applies and change.problems == []  # a group it is not in: never parsed, never logged


def test_a_bad_group_value_keeps_its_last_good_one_and_bad_entries_go_alone() -> None:
    t = tracker()
    t.update_many({CK: None, SK: None, K.group_collect("web"): value(("/var/log/a.log", "a"))}, 5, complete=True)
    change = t.update(K.group_collect("web"), b"[{broken", 6)
    assert change.refused and change.collect is None and change.errors[0].startswith(K.group_collect("web"))
    assert paths(t.collect) == ["/var/log/a.log"] and t.sources()[K.group_collect("web")] == 5
    change = t.update(K.group_collect("web"), value(("/var/log/b.log", "b"), ("/etc/passwd", "x")), 7)
    assert paths(change.collect) == ["/var/log/b.log"] and len(change.errors) == 1 and not change.refused
    assert list(t.problems()) == [K.group_collect("web")]


def test_central_assignment_overrides_config_ini_groups_until_deleted() -> None:
    t = tracker(("web",))
    t.update_many({CK: None, SK: None, K.group_collect("web"): value(("/var/log/w.log", "w")),
                   K.group_collect("db"): value(("/var/log/d.log", "d"))}, 5, complete=True)
    assert paths(t.collect) == ["/var/log/w.log"]
    change = t.update(K.host_groups("h1"), b'["db"]', 6)
    assert paths(change.collect) == ["/var/log/d.log"] and t.groups() == ("db",)
    assert t.update(K.host_groups("h1"), b'["db", "../x"]', 7).refused  # refused: the last good stays
    assert t.groups() == ("db",)
    change = t.update(K.host_groups("h1"), None, 8)
    assert paths(change.collect) == ["/var/log/w.log"] and t.groups() == ("web",)


def test_a_central_assignment_is_an_array_of_group_names_each_once() -> None:
    key = K.host_groups("h1")
    assert parse_groups(None, key) is None and parse_groups(b"null", key) is None  # [agent] groups apply
    assert parse_groups(b'["web", "db", "web"]', key) == ("web", "db") and parse_groups(b"[]", key) == ()
    for raw, problem in ((b'{"web": 1}', "expected a JSON array of group names, got dict"),
                         (b'["web", 5]', "group must be a non-empty string, got 5"),
                         (b'["web", "a b"]', "group 'a b' refused: expected"),
                         (b'["Fleet"]', "group 'Fleet' refused: the name is reserved"),
                         (b"[NaN]", "not valid JSON")):
        with pytest.raises(ConfigError) as caught:
            parse_groups(raw, key)
        assert str(caught.value).startswith(f"{key}: {problem}"), caught.value


def test_a_complete_read_forgets_fleet_keys_deleted_meanwhile() -> None:
    t = tracker()
    t.update_many({CK: None, SK: None, K.group_collect("web"): value(("/var/log/w.log", "w"))}, 5, complete=True)
    change = t.update_many({CK: None, SK: None}, 9, complete=True)  # e.g. after a reconnect
    assert change.collect == []


def test_a_removal_in_the_host_key_takes_a_group_entry_away() -> None:
    t = tracker()
    t.update_many({CK: b'[{"path": "/var/log/w.log", "remove": true}]', SK: None,
                   K.group_collect("web"): value(("/var/log/w.log", "w"), ("/var/log/x.log", "x"))}, 5, complete=True)
    assert paths(t.collect) == ["/var/log/x.log"]
    assert [r.path for r in t.merged.removed] == ["/var/log/w.log"]


def test_groups_change_on_reload_and_the_saved_form_merges_back_the_same() -> None:
    t = tracker(("web",))
    t.update_many({CK: value(("/var/log/own.log", "o")), SK: b'{"topic": "h"}',
                   K.group_collect("web"): value(("/var/log/w.log", "w")),
                   K.group_collect("db"): value(("/var/log/d.log", "d"))}, 5, complete=True)
    change = t.rebase(("/var/log/**",), BASE, ("db",))
    assert paths(change.collect) == ["/var/log/d.log", "/var/log/own.log"]
    saved = t.saved_form()
    again = tracker(("db",))
    from logagent.control.tracker import saved_layers

    again.restore_layers(saved_layers(json.loads(json.dumps(saved))), saved["revision"])
    assert again.collect == t.collect and again.sysinfo == t.sysinfo and again.config_hash() == t.config_hash()


def test_a_reload_keeps_the_last_good_value_of_a_key_whose_value_is_refused() -> None:
    t = tracker()
    group = value(("/var/log/a.log", "a"), ("/var/log/x/b.log", "b"))
    t.update_many({CK: None, SK: None, K.group_collect("web"): group}, 5, complete=True)
    assert t.update(K.group_collect("web"), b"[{broken", 6).refused
    change = t.rebase(("/var/log/**",), BASE)  # SIGHUP: the broken value is judged again, still refused
    assert change.collect is None and paths(t.collect) == ["/var/log/a.log", "/var/log/x/b.log"]
    change = t.rebase(("/var/log/a.log",), BASE)  # narrowed: the last good value is judged again too
    assert paths(change.collect) == ["/var/log/a.log"]


def test_a_read_with_nothing_new_merges_nothing() -> None:
    t = tracker()
    values = {CK: None, SK: None, K.group_collect("web"): value(("/var/log/a.log", "a"))}
    t.update_many(values, 5, complete=True)
    change = t.update_many(values, 9, complete=True)  # e.g. after a reconnect
    assert not change.applies and change.problems == [] and t.revision == 9
