"""SysinfoSettings: the [sysinfo] section and the collect_sysinfo etcd value, validated."""

from __future__ import annotations

import math
from typing import Any

import pytest

from logagent.config.sysinfo import SysinfoSettings
from logagent.errors import ConfigError

IP, HOST = "10.0.0.5", "web-1"



# ---------------------------------------------------------------------------- settings

def test_settings_defaults() -> None:
    s = SysinfoSettings()
    assert (s.enabled, s.topic, s.interval, s.format) == (True, "collect_system_info", 5.0, "json")


def test_from_mapping_etcd_value() -> None:
    s = SysinfoSettings.from_mapping({"interval": 10, "topic": "metrics", "enabled": False, "format": "influx"})
    assert s == SysinfoSettings(enabled=False, topic="metrics", interval=10.0, format="influx")
    assert isinstance(s.interval, float)


def test_from_mapping_ini_strings() -> None:
    s = SysinfoSettings.from_mapping({"interval": " 2.5 ", "enabled": "no", "format": "Influx"})
    assert (s.interval, s.enabled, s.format) == (2.5, False, "influx")
    for word, expected in (("true", True), ("yes", True), ("1", True), ("false", False), ("0", False)):
        assert SysinfoSettings.from_mapping({"enabled": word}).enabled is expected


def test_from_mapping_missing_keys_come_from_base() -> None:
    base = SysinfoSettings(enabled=False, topic="base", interval=7, format="influx")
    assert SysinfoSettings.from_mapping({}, base) == base
    s = SysinfoSettings.from_mapping({"interval": 1, "whatever": [1, 2]}, base)  # unknown key ignored
    assert s == SysinfoSettings(enabled=False, topic="base", interval=1, format="influx")


@pytest.mark.parametrize(("field", "value"), [
    ("interval", 0),
    ("interval", -5),
    ("interval", "0"),
    ("interval", True),
    ("interval", "fast"),
    ("interval", None),
    ("interval", math.nan),
    ("interval", math.inf),
    ("interval", [5]),
    ("topic", ""),
    ("topic", 5),
    ("topic", None),
    ("topic", "has space"),
    ("topic", ".."),
    ("enabled", "maybe"),
    ("enabled", 1),
    ("enabled", None),
    ("format", "xml"),
    ("format", 3),
])
def test_from_mapping_refuses(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        SysinfoSettings.from_mapping({field: value}, source="/logagent/10.0.0.5/collect_sysinfo/config")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("/logagent/10.0.0.5/collect_sysinfo/config: ")
    assert field in message and repr(value)[:20] in message


def test_from_mapping_refuses_non_object() -> None:
    with pytest.raises(ConfigError, match="sysinfo: expected an object"):
        SysinfoSettings.from_mapping([5], source="sysinfo")  # type: ignore[arg-type]


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ConfigError, match="interval"):
        SysinfoSettings(interval=0)
