"""Merging a host's configuration from layers: groups in order, then the host's own key."""

from __future__ import annotations

import json

import pytest

from logagent.config.sysinfo import SysinfoSettings
from logagent.control.fleet.layers import (
    CollectLayer,
    LayerRefused,
    Origin,
    config_hash,
    merge_collect,
    merge_sysinfo,
    parse_collect_layer,
)
from logagent.errors import CollectConfigError
from logagent.sources.files.entry import CollectEntry

ALLOWED = ("/var/log/**",)
WEB = Origin("/f/config/groups/web/collect_log", 10, "group web")
EU = Origin("/f/config/groups/eu/collect_log", 11, "group eu")
HOST = Origin("/logagent/h/collect_log/config", 12, "host")


def layer(*items: dict) -> CollectLayer:
    return parse_collect_layer(json.dumps(list(items)), "k", ALLOWED)


def test_a_host_entry_replaces_a_group_entry_and_a_removal_takes_one_away() -> None:
    web = layer({"path": "/var/log/a.log", "topic": "a"}, {"path": "/var/log/b.log", "topic": "b"},
                {"path": "/var/log/c.log", "topic": "c"})
    host = layer({"path": "/var/log/b.log", "topic": "b-host"}, {"path": "/var/log//c.log", "remove": True},
                 {"path": "/var/log/own.log", "topic": "own"})
    merged = merge_collect([(WEB, web), (HOST, host)])
    assert merged.entries == [CollectEntry("/var/log/a.log", "a"), CollectEntry("/var/log/b.log", "b-host"),
                              CollectEntry("/var/log/own.log", "own")]
    assert [p.origin for p in merged.placed] == [WEB, HOST, HOST]
    assert merged.placed[1].replaced == (WEB,)
    assert [(r.path, r.by, r.removed) for r in merged.removed] == [("/var/log/c.log", HOST, (WEB,))]


def test_a_later_group_replaces_an_earlier_one_and_the_host_replaces_both() -> None:
    web = layer({"path": "/var/log/a.log", "topic": "web"})
    eu = layer({"path": "/var/log/a.log", "topic": "eu"})
    assert merge_collect([(WEB, web), (EU, eu)]).entries == [CollectEntry("/var/log/a.log", "eu")]
    merged = merge_collect([(WEB, web), (EU, eu), (HOST, layer({"path": "/var/log/a.log", "topic": "h"}))])
    assert merged.entries == [CollectEntry("/var/log/a.log", "h")] and merged.placed[0].replaced == (EU, WEB)


def test_a_removal_of_a_path_no_group_has_is_harmless() -> None:
    merged = merge_collect([(WEB, layer({"path": "/var/log/a.log", "topic": "a"})),
                            (HOST, layer({"path": "/var/log/zzz.log", "remove": True}))])
    assert merged.entries == [CollectEntry("/var/log/a.log", "a")]
    assert [(r.path, r.removed) for r in merged.removed] == [("/var/log/zzz.log", ())]


def test_bad_entries_are_refused_one_by_one_and_a_value_of_only_bad_ones_as_a_whole() -> None:
    got = layer({"path": "/var/log/a.log", "topic": "a"}, {"path": "/var/log/b.log", "remove": "yes"},
                {"path": "rel", "remove": True}, {"path": "/etc/x", "topic": "x"})
    assert got.entries == (CollectEntry("/var/log/a.log", "a"),) and got.removals == ()
    assert len(got.errors) == 3 and "remove must be true or false" in got.errors[0]
    assert "entry 3" in got.errors[2] and "allowed_paths" in got.errors[2]
    with pytest.raises(LayerRefused) as err:
        layer({"path": "/etc/x", "topic": "x"}, {"path": "rel.log", "topic": "y"})
    assert len(err.value.errors) == 2
    with pytest.raises(CollectConfigError, match="expected a JSON array"):
        parse_collect_layer(b'{"path": "/var/log/a.log"}', "k", ALLOWED)
    assert layer({"path": "/var/log/a.log", "remove": False, "topic": "a"}).entries[0].topic == "a"
    assert parse_collect_layer(None, "k", ALLOWED) == CollectLayer()


def test_a_layer_dumps_back_to_itself() -> None:
    got = layer({"path": "/var/log/a.log", "topic": "a", "module": "m"}, {"path": "/var/log/b.log", "remove": True})
    assert parse_collect_layer(json.dumps(got.value()), "k", ALLOWED) == got


def test_sysinfo_merges_field_by_field() -> None:
    base = SysinfoSettings(enabled=False, topic="base", interval=7)
    settings, override = merge_sysinfo([{"interval": 2, "topic": "web"}, None, {"topic": "host"}], base)
    assert settings == SysinfoSettings(enabled=False, topic="host", interval=2) and override == {"interval": 2,
                                                                                                "topic": "host"}
    assert merge_sysinfo([None, {}], base) == (base, None)


def test_config_hash_is_the_same_for_the_same_configuration_only() -> None:
    a = [CollectEntry("/var/log/a.log", "a")]
    assert config_hash(a, {"interval": 2, "topic": "t"}) == config_hash(list(a), {"topic": "t", "interval": 2})
    assert config_hash(a, None) != config_hash([CollectEntry("/var/log/a.log", "b")], None)
    assert config_hash(a, None) != config_hash(a, {"interval": 2})
    assert len(config_hash([], None)) == 16
