"""SIGHUP's diff of two Settings: every field is either applied live or named as restart-only."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from logagent.config.reload import LIVE, NOT_SETTINGS, RESTART_ONLY, diff, ini_name, leaves, merge
from logagent.config.settings import Settings, load


def test_every_settings_field_is_classified_once():
    """A key added to Settings or to any of its sections (walked with dataclasses.fields) fails
    here until someone decides whether SIGHUP applies it live or names it for a restart."""
    fields = set(leaves(Settings()))
    sets = {"LIVE": LIVE, "RESTART_ONLY": RESTART_ONLY, "NOT_SETTINGS": NOT_SETTINGS}
    unclassified = sorted(f for f in fields if not any(f in s for s in sets.values()))
    assert not unclassified, f"classify in logagent/config/reload.py (LIVE or RESTART_ONLY): {unclassified}"
    twice = sorted(f for f in fields if sum(f in s for s in sets.values()) > 1)
    assert not twice, f"in more than one set: {twice}"
    stale = sorted(n for s in sets.values() for n in s if n not in fields)
    assert not stale, f"names no field of Settings any more: {stale}"


def test_leaves_walk_nested_settings():
    names = set(leaves(Settings()))
    assert {"kafka.address", "kafka.producer", "etcd.password", "agent.max_open_files", "collect_files",
            "sysinfo.interval"} <= names
    assert not any(name in ("kafka", "etcd", "agent", "sysinfo") for name in names)


def _ini(tmp_path: Path, name: str, text: str) -> Settings:
    path = tmp_path / name
    path.write_text(text)
    return load(path, environ={})


BASE = """
[kafka]
address = 127.0.0.1:9092
[kafka.producer]
linger.ms = 5
sasl.password = old-secret
[agent]
ip = 10.1.2.3
hostname = h1
log_level = INFO
max_open_files = 1024
close_inactive = 300
[collect]
files = []
[sysinfo]
interval = 5
"""


def test_diff_splits_changes_into_live_and_restart_only(tmp_path):
    old = _ini(tmp_path, "old.ini", BASE)
    new = _ini(tmp_path, "new.ini", BASE.replace("address = 127.0.0.1:9092", "address = 127.0.0.1:9093")
               .replace("linger.ms = 5", "linger.ms = 50").replace("old-secret", "new-secret")
               .replace("log_level = INFO", "log_level = DEBUG").replace("max_open_files = 1024", "max_open_files = 64")
               .replace("close_inactive = 300", "close_inactive = 30").replace("interval = 5", "interval = 2")
               .replace("files = []", 'files = [{"path": "/var/log/x.log", "topic": "x"}]'))
    d = diff(old, new)
    assert d.live == ("agent.log_level", "collect_files", "sysinfo.interval")
    assert d.restart_only == ("agent.close_inactive", "agent.max_open_files", "kafka.address", "kafka.producer")
    assert d.restart_names == ("[agent] close_inactive", "[agent] max_open_files", "[kafka] address",
                               "[kafka.producer] linger.ms, sasl.password")
    assert "secret" not in " ".join(d.restart_names).replace("sasl.password", "")  # names, never values
    assert diff(old, old) == diff(new, new) == type(d)((), (), ())


def test_merge_takes_live_values_and_keeps_restart_only_ones(tmp_path):
    old = _ini(tmp_path, "old.ini", BASE)
    new = _ini(tmp_path, "new.ini", BASE.replace("log_level = INFO", "log_level = DEBUG")
               .replace("max_open_files = 1024", "max_open_files = 64").replace("interval = 5", "interval = 2"))
    merged = merge(old, new)
    assert merged.agent.log_level == "DEBUG" and merged.sysinfo.interval == 2
    assert merged.agent.max_open_files == 1024  # what runs; the next SIGHUP names it again
    assert diff(merged, new).restart_names == ("[agent] max_open_files",)
    assert merged.source == new.source


def test_an_unclassified_field_that_changed_is_named_not_dropped():
    @dataclasses.dataclass(frozen=True)
    class Later(Settings):
        added_later: int = 0

    d = diff(Later(), Later(added_later=1))
    assert d.restart_only == ("added_later",) and d.live == ()


def test_ini_names():
    assert ini_name("collect_files") == "[collect] files"
    assert ini_name("agent.http_listen") == "[agent] http_listen"
    assert ini_name("kafka.producer", {"a": "1", "b": "2"}, {"a": "1", "b": "3", "c": "4"}) == "[kafka.producer] b, c"
