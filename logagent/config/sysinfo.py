"""The sysinfo settings: ``[sysinfo]`` in config.ini and the ``collect_sysinfo`` etcd value.

Kept apart from sources/host/reporter.py (the psutil sampler and the reporter) so that settings.py, the
etcd control plane and the CLI validate a value without importing psutil or
prometheus_client.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from logagent.config.values import check_topic, decode_json_value, parse_bool, show
from logagent.errors import ConfigError

FORMATS = ("json", "influx")
FIELDS = ("enabled", "topic", "interval", "format")


def _parse_enabled(value: Any, source: str) -> bool:
    flag = parse_bool(value)
    if flag is None:
        raise ConfigError(f"{source}: enabled must be true or false, got {show(value)}")
    return flag


def _parse_interval(value: Any, source: str) -> float:
    number: float | None = None
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            number = float(value.strip())
    except (ValueError, OverflowError):
        number = None
    # <= 0, NaN and inf are refused: each would mean "never sample", a silent stop.
    if number is None or not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{source}: interval must be a number of seconds > 0, got {show(value)}")
    return number


def _parse_topic(value: Any, source: str) -> str:
    return check_topic(value, source)


def _parse_format(value: Any, source: str) -> str:
    if isinstance(value, str) and value.strip().lower() in FORMATS:
        return value.strip().lower()
    raise ConfigError(f"{source}: format must be one of {', '.join(FORMATS)}, got {show(value)}")


_PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "enabled": _parse_enabled, "topic": _parse_topic, "interval": _parse_interval, "format": _parse_format}


@dataclass(frozen=True)
class SysinfoSettings:
    """What the reporter does: on/off, Kafka topic, seconds between samples, json|influx."""

    enabled: bool = True
    topic: str = "collect_system_info"
    interval: float = 5.0
    format: str = "json"

    def __post_init__(self) -> None:
        # Validate and normalise direct construction too, so a bad value cannot exist.
        for name, parse in _PARSERS.items():
            object.__setattr__(self, name, parse(getattr(self, name), "sysinfo"))

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        base: SysinfoSettings | None = None,
        source: str = "sysinfo",
    ) -> SysinfoSettings:
        """Build from a dict (etcd JSON or config.ini strings); missing keys come from base.

        Raises ConfigError with a one-line message naming source, field, value and what was
        expected. Unknown keys are ignored.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(
                f'{source}: expected an object like {{"interval": 5, "topic": "..."}},'
                f" got {type(data).__name__} {show(data)}"
            )
        base = base if base is not None else cls()
        values = {name: _PARSERS[name](data[name], source) if name in data else getattr(base, name)
                  for name in FIELDS}
        return cls(**values)


def parse_sysinfo_value(value: bytes | str | None, key: str,
                        base: SysinfoSettings) -> tuple[SysinfoSettings, dict[str, Any] | None]:
    """(settings, the override mapping) of a collect_sysinfo value; a missing key or null means base.

    The override keeps only the known fields (validated): unknown keys are ignored, so an
    odd value there (a lone surrogate, a deep object) is neither applied, saved nor logged.
    Raises ConfigError naming the key when the value is unusable.
    """
    if value is None:
        return base, None
    data = decode_json_value(value, key)
    if data is None:
        return base, None
    settings = SysinfoSettings.from_mapping(data, base=base, source=key)
    return settings, {name: data[name] for name in FIELDS if name in data}
