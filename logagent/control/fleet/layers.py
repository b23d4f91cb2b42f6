"""A host's effective configuration, merged from layers: its groups' keys, then its own keys.

Each key in force is a layer. A collect layer holds entries and removals (an entry
`{"path": P, "remove": true}` takes P out of what the layers before it gave). The layers are
merged in order of precedence, lowest first: the host's groups in their listed order (a later
group's entry for a path replaces an earlier one's), then the host's own key (its entry for a path
replaces every group's; its removal takes a group's entry away). Sysinfo values merge field by
field in the same order over `[sysinfo]`.

Validation is the host key's of today, layer by layer: a value refused as a whole (not JSON, not
an array, only bad entries) leaves that layer's last good value in force; a bad entry is refused
on its own and the rest of its layer applies. Pure: no I/O, no etcd.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from logagent.config.sysinfo import SysinfoSettings
from logagent.config.values import decode_json_value, show
from logagent.errors import CollectConfigError
from logagent.sources.files.entry import CollectEntry, entry_items, entry_label, normalise_path, parse_collect_items


class LayerRefused(CollectConfigError):
    """A collect value whose every entry is refused: refused as a whole, one line per entry."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(errors[0] if errors else "every entry refused")
        self.errors = errors


@dataclass(frozen=True)
class Origin:
    """Where a layer came from: its key, that key's mod revision, and how people call it
    ("host", "group web", "rollout r-1a2b of group web")."""

    key: str
    revision: int
    label: str


@dataclass(frozen=True)
class CollectLayer:
    """The good part of one collect value: entries, removals (normalised paths), and one error line
    per refused entry."""

    entries: tuple[CollectEntry, ...] = ()
    removals: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()

    def value(self) -> list[dict[str, Any]]:
        """The JSON array that parses back to this layer (its refused entries left out)."""
        return entry_items(self.entries) + [{"path": p, "remove": True} for p in self.removals]


def _removal(raw: Any, label: str) -> str | None:
    """The normalised path of a removal entry; None when `raw` is not one; CollectConfigError when
    it is a bad one."""
    if not isinstance(raw, dict) or "remove" not in raw:
        return None
    flag = raw["remove"]
    if flag is False:
        return None
    if flag is not True:
        raise CollectConfigError(f"{label}: remove must be true or false, got {show(flag)}")
    path = raw.get("path")
    if not isinstance(path, str) or not path.startswith("/") or "\x00" in path or ".." in path.split("/"):
        raise CollectConfigError(f"{label}: a removal needs the absolute path of the entry to remove, "
                                 f"got {show(path)}")
    return normalise_path(path)


def parse_collect_layer(value: bytes | str | None, key: str, allowed: tuple[str, ...]) -> CollectLayer:
    """A collect value as a layer. A missing key (None) is an empty layer.

    Raises CollectConfigError (one line naming the key) when the value is refused as a whole: the
    caller keeps the layer's last good value.
    """
    if value is None:
        return CollectLayer()
    data = decode_json_value(value, key, CollectConfigError)
    if not isinstance(data, list):
        hint = " (to collect nothing, set [])" if data is None else ""
        raise CollectConfigError(f"{key}: expected a JSON array of entries, got "
                                 f"{'null' if data is None else type(data).__name__}{hint}")
    removals: list[str] = []
    errors: list[str] = []
    items: list[tuple[int, Any]] = []
    for index, raw in enumerate(data):
        label = entry_label(key, index, raw)
        try:
            path = _removal(raw, label)
        except CollectConfigError as exc:
            errors.append(str(exc))
            continue
        if path is None:
            items.append((index, raw))
        elif path not in removals:
            removals.append(path)
    entries, entry_errors = parse_collect_items(items, key, allowed)
    errors.extend(entry_errors)
    if errors and not entries and not removals:
        # Only bad entries: stopping everything for a typo would be worse than waiting.
        raise LayerRefused(errors)
    return CollectLayer(tuple(entries), tuple(removals), tuple(errors))


@dataclass(frozen=True)
class Placed:
    """One entry of the effective configuration and the layer that gave it."""

    entry: CollectEntry
    origin: Origin
    replaced: tuple[Origin, ...] = ()  # lower layers whose entry for the same path it replaced


@dataclass(frozen=True)
class Removed:
    """A path a layer took out, and the layers whose entry it removed."""

    path: str
    by: Origin
    removed: tuple[Origin, ...]


@dataclass
class Merged:
    """The effective collect list with the origin of each entry, and what was removed."""

    placed: list[Placed] = field(default_factory=list)
    removed: list[Removed] = field(default_factory=list)

    @property
    def entries(self) -> list[CollectEntry]:
        return [p.entry for p in self.placed]


def merge_collect(layers: Iterable[tuple[Origin, CollectLayer]]) -> Merged:
    """Merge collect layers, lowest precedence first (see the module docstring)."""
    current: dict[str, Placed] = {}
    removed: list[Removed] = []
    for origin, layer in layers:
        for path in layer.removals:
            gone = current.pop(path, None)
            lower = () if gone is None else (gone.origin, *gone.replaced)
            removed = [r for r in removed if r.path != path] + [Removed(path, origin, lower)]
        for entry in layer.entries:
            before = current.pop(entry.path, None)
            lower = () if before is None else (before.origin, *before.replaced)
            current[entry.path] = Placed(entry, origin, lower)
            removed = [r for r in removed if r.path != entry.path]
    return Merged(list(current.values()), removed)


def merge_sysinfo(overrides: Iterable[Mapping[str, Any] | None], base: SysinfoSettings
                  ) -> tuple[SysinfoSettings, dict[str, Any] | None]:
    """Sysinfo overrides (each already validated), lowest precedence first, field by field over
    `base`: (settings, the merged override; None when no layer sets a field)."""
    merged: dict[str, Any] = {}
    for override in overrides:
        merged.update(override or {})
    if not merged:
        return base, None
    return SysinfoSettings.from_mapping(merged, base=base), merged


def config_hash(entries: Sequence[CollectEntry], sysinfo_override: Mapping[str, Any] | None) -> str:
    """A short stable hash of an effective configuration (entries in order, sysinfo fields): equal on
    every host that runs the same configuration, whatever keys it came from."""
    doc = {"collect": entry_items(entries), "sysinfo": dict(sorted((sysinfo_override or {}).items()))}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
