"""The configuration in force, from every etcd key it comes from. No I/O.

The keys: the host's own two (`collect_log_key`, `collect_sysinfo_key`, as the Go agent had them)
and, under the fleet prefix (control/fleet/keys.py), its groups' keys, its central group assignment
and its groups' rollouts. Each key's value is judged when it changes, and only when it concerns
this host (a group it is not in is never parsed, so never logged about). A value refused as a
whole leaves that key's last good value in force; a bad entry is refused on its own. The good
values are merged (control/fleet/layers.py) into the effective configuration, and a `Change` says
what of it the agent must apply. A value seen before (same bytes) is no news: a reconnect re-reads
without re-applying.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from logagent.config.sysinfo import SysinfoSettings, parse_sysinfo_value
from logagent.config.values import decode_optional, unique_names
from logagent.control.fleet.keys import FleetKeys, KeyKind
from logagent.control.fleet.layers import (
    CollectLayer,
    LayerRefused,
    Merged,
    Origin,
    config_hash,
    merge_collect,
    merge_sysinfo,
    parse_collect_layer,
)
from logagent.control.fleet.rollout import Rollout, chosen, parse_rollout, why_refused
from logagent.errors import ConfigError
from logagent.sources.files.entry import CollectEntry, entry_items

SAVED_VERSION = 1


@dataclass
class Change:
    """What an update asks the agent to apply: the new effective collect list and/or sysinfo
    settings (None: unchanged), and what was refused on the way, one line per problem."""

    key: str = ""  # the key updated, when one was
    collect: list[CollectEntry] | None = None
    sysinfo: SysinfoSettings | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)  # (key, one error line)
    refused_keys: list[str] = field(default_factory=list)  # values refused as a whole: last good stays

    @property
    def errors(self) -> list[str]:
        return [text for _, text in self.problems]

    @property
    def refused(self) -> bool:
        return bool(self.refused_keys)

    @property
    def applies(self) -> bool:
        return self.collect is not None or self.sysinfo is not None

    def then(self, later: Change) -> Change:
        """This change followed by `later`, as one."""
        return Change(self.key or later.key,
                      later.collect if later.collect is not None else self.collect,
                      later.sysinfo if later.sysinfo is not None else self.sysinfo,
                      self.problems + later.problems, self.refused_keys + later.refused_keys)


@dataclass(frozen=True)
class FleetScope:
    """Who this host is in the fleet: the key layout, its id, its groups from config.ini."""

    keys: FleetKeys
    host_id: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Good:
    """The last good value of one key, as parsed, and that key's mod revision (0: not set)."""

    value: Any
    revision: int


class ConfigTracker:
    """The configuration in force and the last value seen per key (see the module docstring)."""

    def __init__(self, collect_key: str, sysinfo_key: str, allowed: tuple[str, ...],
                 base_sysinfo: SysinfoSettings, fleet: FleetScope | None = None) -> None:
        self.collect_key, self.sysinfo_key = collect_key, sysinfo_key
        self.allowed, self.base_sysinfo = allowed, base_sysinfo
        self.fleet = fleet
        self.collect: list[CollectEntry] | None = None  # None: nothing applied yet
        self.sysinfo: SysinfoSettings = base_sysinfo
        self.sysinfo_override: dict[str, Any] | None = None
        self.merged = Merged()
        self.revision = 0
        self.failed_rollouts: dict[str, str] = {}  # rollout id -> why it failed here (never applied again)
        self._sysinfo_applied = False
        self._raw: dict[str, tuple[bytes | None, int]] = {}  # every key seen: value, mod revision
        self._judged: dict[str, bytes | None] = {}  # the value last judged per key
        self._good: dict[str, Good] = {}
        self._refused: dict[str, list[str]] = {}  # key -> why its value was refused as a whole
        self._entry_errors: dict[str, list[str]] = {}  # key -> its refused entries (the rest applies)
        self._hash: tuple[tuple[list[CollectEntry], dict[str, Any]], str] | None = None
        self._sources: dict[str, int] | None = None  # sources(), until the next merge

    # ---- what is read and watched

    @property
    def keys(self) -> tuple[str, str]:
        """The host's own keys."""
        return self.collect_key, self.sysinfo_key

    @property
    def prefixes(self) -> tuple[str, ...]:
        """Prefixes read and watched whole (the fleet's config keys)."""
        return (self.fleet.keys.config_prefix,) if self.fleet is not None else ()

    def raw_value(self, key: str) -> bytes | None:
        """The value last seen of a key (None: not set, or never seen)."""
        known = self._raw.get(key)
        return known[0] if known is not None else None

    def concerns(self, key: str) -> bool:
        return key in self.keys or any(key.startswith(p) for p in self.prefixes)

    # ---- updates

    def update(self, key: str, value: bytes | None, revision: int) -> Change:
        """The change a value read or watched at `revision` asks for (state updated)."""
        change = self.update_many({key: value}, revision)
        change.key = key
        return change

    def update_many(self, values: Mapping[str, bytes | None], revision: int,
                    mod_revisions: Mapping[str, int] | None = None, complete: bool = False) -> Change:
        """Several keys at once (a read, or one watch response), merged once: no half-applied state.

        complete: `values` is a whole read; a fleet key seen before and missing from it was deleted.
        """
        mods = mod_revisions or {}
        fresh = dict(values)
        if complete:
            for key in self._raw:
                if key not in fresh and any(key.startswith(p) for p in self.prefixes):
                    fresh[key] = None
        news = False
        for key, value in fresh.items():
            if not self.concerns(key):
                continue
            known = self._raw.get(key)
            if known is not None and known[0] == value:
                continue
            self._raw[key] = (value, 0 if value is None else mods.get(key, revision))
            news = True
        change = self._recompute() if news else Change()  # nothing new (a re-read): nothing to merge
        if not any(key in self._refused for key in fresh):
            self.revision = max(self.revision, revision)
        return change

    def rebase(self, allowed: tuple[str, ...], base_sysinfo: SysinfoSettings,
               groups: tuple[str, ...] | None = None) -> Change:
        """New allow-list, [sysinfo] defaults and groups (SIGHUP): every value is judged again."""
        self.allowed, self.base_sysinfo = allowed, base_sysinfo
        if groups is not None and self.fleet is not None:
            self.fleet = FleetScope(self.fleet.keys, self.fleet.host_id, groups)
        # A last good collect value is judged again too (the allow-list may have narrowed): it stays
        # the fallback of a key whose current value is refused.
        for key, good in list(self._good.items()):
            if isinstance(good.value, CollectLayer):
                try:
                    layer = parse_collect_layer(json.dumps(good.value.value()), key, allowed)
                except ConfigError:
                    layer = CollectLayer()
                self._good[key] = Good(layer, good.revision)
        self._judged.clear()
        self._refused.clear()
        self._entry_errors.clear()
        return self._recompute()

    def refresh(self) -> Change:
        """Merge again (a rollout failed here, a bake ended): what changed since the last merge."""
        return self._recompute()

    # ---- judging one key

    def _kind(self, key: str) -> str | None:
        if key == self.collect_key:
            return "host_collect"
        if key == self.sysinfo_key:
            return "host_sysinfo"
        kind: KeyKind | None = self.fleet.keys.classify(key) if self.fleet is not None else None
        return kind.kind if kind is not None else None

    def _judge(self, key: str, problems: list[tuple[str, str]], refused: list[str]) -> Good | None:
        """The key's last good value, judging its current one first when it is news."""
        if key not in self._raw:
            return self._good.get(key)  # never seen: nothing of it, or what was adopted
        raw, mod = self._raw[key]
        if key in self._judged and self._judged[key] == raw:
            return self._good.get(key)
        self._judged[key] = raw
        try:
            value, errors = self._parse(key, raw)
        except ConfigError as exc:
            lines = exc.errors if isinstance(exc, LayerRefused) else [str(exc)]
            self._refused[key] = lines
            problems.extend((key, line) for line in lines)
            refused.append(key)
            return self._good.get(key)
        self._refused.pop(key, None)
        self._entry_errors[key] = errors
        problems.extend((key, line) for line in errors)
        self._good[key] = Good(value, mod)
        return self._good[key]

    def _parse(self, key: str, raw: bytes | None) -> tuple[Any, list[str]]:
        """(parsed value, refused entries) of one key; ConfigError when refused as a whole."""
        kind = self._kind(key)
        if kind in ("host_collect", "group_collect"):
            layer = parse_collect_layer(raw, key, self.allowed)
            return layer, list(layer.errors)
        if kind in ("host_sysinfo", "group_sysinfo"):
            return parse_sysinfo_value(raw, key, self.base_sysinfo)[1], []
        if kind == "host_groups":
            return parse_groups(raw, key), []
        if kind == "rollout":
            # The candidate's refused entries fail the rollout here (why_refused), not the host's config.
            return parse_rollout(raw, key, self.allowed), []
        return None, []

    # ---- merging

    def groups(self) -> tuple[str, ...]:
        """The host's groups: the central assignment when its key is set, else config.ini's."""
        if self.fleet is None:
            return ()
        assigned = self._good.get(self.fleet.keys.host_groups(self.fleet.host_id))
        if assigned is not None and assigned.value is not None:
            return tuple(assigned.value)
        return self.fleet.groups

    def _collect_of_group(self, group: str, problems: list[tuple[str, str]],
                          refused: list[str]) -> tuple[Origin, CollectLayer] | None:
        """The group's collect layer in force here: a rollout's candidate when this host is one of its
        canaries (and the candidate did not fail here), else the group key's last good value."""
        assert self.fleet is not None
        keys = self.fleet.keys
        rollout_key = keys.rollout(group)
        good_rollout = self._judge(rollout_key, problems, refused)
        rollout: Rollout | None = good_rollout.value if good_rollout is not None else None
        if rollout is not None and rollout.active and rollout.id not in self.failed_rollouts \
                and chosen(self.fleet.host_id, rollout.id, rollout.percent):
            assert good_rollout is not None
            why = why_refused(rollout)
            if why is not None:  # never applied: a candidate with a refused entry fails at once
                self.failed_rollouts[rollout.id] = why
                return self._collect_of_group(group, problems, refused)
            return Origin(rollout_key, good_rollout.revision, f"rollout {rollout.id} of group {group}"), \
                rollout.candidate
        key = keys.group_collect(group)
        good = self._judge(key, problems, refused)
        if good is None:
            return None
        return Origin(key, good.revision, f"group {group}"), good.value

    def _recompute(self) -> Change:
        self._sources = None
        problems: list[tuple[str, str]] = []
        refused: list[str] = []
        host = self.fleet.keys.host_groups(self.fleet.host_id) if self.fleet is not None else None
        if host is not None:
            self._judge(host, problems, refused)
        layers: list[tuple[Origin, CollectLayer]] = []
        overrides: list[dict[str, Any] | None] = []
        for group in self.groups():
            assert self.fleet is not None
            layer = self._collect_of_group(group, problems, refused)
            if layer is not None:
                layers.append(layer)
            good = self._judge(self.fleet.keys.group_sysinfo(group), problems, refused)
            if good is not None:
                overrides.append(good.value)
        own = self._judge(self.collect_key, problems, refused)
        if own is not None:
            layers.append((Origin(self.collect_key, own.revision, "host"), own.value))
        own_sysinfo = self._judge(self.sysinfo_key, problems, refused)
        if own_sysinfo is not None:
            overrides.append(own_sysinfo.value)
        change = Change(problems=problems, refused_keys=refused)
        merged = merge_collect(layers)
        if self._collect_known() and (self.collect is None or merged.entries != self.collect):
            change.collect = self.collect = merged.entries
        self.merged = merged
        if self._sysinfo_known():
            settings, override = merge_sysinfo(overrides, self.base_sysinfo)
            self.sysinfo_override = override
            if not self._sysinfo_applied or settings != self.sysinfo:
                change.sysinfo = self.sysinfo = settings
                self._sysinfo_applied = True
        return change

    def _relevant(self, kinds: tuple[str, ...]) -> list[str]:
        """The keys of these kinds that this host's configuration takes."""
        keys = {"host_collect": [self.collect_key], "host_sysinfo": [self.sysinfo_key]}
        if self.fleet is not None:
            keys["group_collect"] = [self.fleet.keys.group_collect(g) for g in self.groups()]
            keys["group_collect"] += [self.fleet.keys.rollout(g) for g in self.groups()]
            keys["group_sysinfo"] = [self.fleet.keys.group_sysinfo(g) for g in self.groups()]
        return [k for kind in kinds for k in keys.get(kind, [])]

    def _collect_known(self) -> bool:
        """Some key the collect list comes from has been read (or adopted): it can be applied."""
        return any(k in self._raw or k in self._good for k in self._relevant(("host_collect", "group_collect")))

    def _sysinfo_known(self) -> bool:
        return any(k in self._raw or k in self._good for k in self._relevant(("host_sysinfo", "group_sysinfo")))

    # ---- what the status and `config show --effective` report

    def sources(self) -> dict[str, int]:
        """Every key this host's configuration depends on, with the mod revision of the value in
        force (0: not set, or nothing good of it yet). Cached until the next merge."""
        if self._sources is None:
            out = {self.collect_key: 0, self.sysinfo_key: 0}
            if self.fleet is not None:
                out[self.fleet.keys.host_groups(self.fleet.host_id)] = 0
                for group in self.groups():
                    for key in (self.fleet.keys.group_collect(group), self.fleet.keys.group_sysinfo(group),
                                self.fleet.keys.rollout(group)):
                        out[key] = 0
            for key in out:
                good = self._good.get(key)
                out[key] = good.revision if good is not None else 0
            self._sources = out
        return dict(self._sources)

    def problems(self) -> dict[str, list[str]]:
        """Per relevant key, what of its current value is refused (whole value or entries)."""
        out: dict[str, list[str]] = {}
        for key in self.sources():
            lines = self._refused.get(key) or self._entry_errors.get(key) or []
            if lines:
                out[key] = list(lines)
        return out

    def config_hash(self) -> str:
        """The hash of the configuration in force (cached: the status asks for it every few seconds)."""
        key = (list(self.collect or []), dict(self.sysinfo_override or {}))
        if self._hash is None or self._hash[0] != key:
            self._hash = (key, config_hash(self.collect or [], self.sysinfo_override))
        return self._hash[1]

    def rollouts(self) -> dict[str, Rollout]:
        """The active rollouts of this host's groups, by group."""
        out: dict[str, Rollout] = {}
        if self.fleet is None:
            return out
        for group in self.groups():
            good = self._good.get(self.fleet.keys.rollout(group))
            if good is not None and good.value is not None and good.value.active:
                out[group] = good.value
        return out

    def rollouts_known(self) -> bool:
        """The fleet keys were read from etcd (not only taken from the saved file): which rollouts
        run is known, so failed ones that ended can be forgotten."""
        return self.fleet is not None and any(k.startswith(self.fleet.keys.config_prefix) or k in self.keys
                                              for k in self._judged)

    def canary_of(self, group: str) -> Rollout | None:
        """The rollout whose candidate this host runs for `group`, if any."""
        rollout = self.rollouts().get(group)
        if rollout is None or self.fleet is None or rollout.id in self.failed_rollouts:
            return None
        return rollout if chosen(self.fleet.host_id, rollout.id, rollout.percent) else None

    # ---- the saved form (the last good configuration under data_dir)

    def refused_unapplied(self) -> list[str]:
        """Keys whose value was refused while nothing good of theirs is known (the start)."""
        return [key for key in self._refused if key not in self._good]

    def adopt(self, key: str, value: bytes | None, revision: int) -> list[str]:
        """Take a saved value as `key`'s last good one (its etcd value was refused at start).
        Returns the saved value's own refused entries; ConfigError when it is refused too."""
        parsed, errors = self._parse(key, value)
        self._good[key] = Good(parsed, revision)
        self._sources = None
        self._entry_errors[key] = errors
        return errors

    def restore(self, collect: list[CollectEntry], sysinfo: SysinfoSettings,
                override: dict[str, Any] | None, revision: int) -> None:
        """Take a saved configuration (of the host keys only) as the one in force."""
        self._good = {self.collect_key: Good(CollectLayer(tuple(collect)), revision),
                      self.sysinfo_key: Good(override, revision)}
        self._raw.clear()
        self._judged.clear()
        self._refused.clear()
        self._sources = None
        self.collect, self.sysinfo, self.sysinfo_override = collect, sysinfo, override
        self._sysinfo_applied = True
        self.merged = merge_collect([(Origin(self.collect_key, revision, "host"), self._good[self.collect_key].value)])
        self.revision = revision

    def restore_layers(self, layers: Mapping[str, tuple[bytes | None, int]], revision: int) -> Change:
        """Take saved values of every key as the ones in force (etcd is down at start)."""
        self._raw = dict(layers)
        self._judged.clear()
        self._good.clear()
        self._refused.clear()
        change = self._recompute()
        self.revision = revision
        return change

    def saved_form(self) -> dict[str, Any]:
        """The JSON document SavedConfig writes: the effective configuration, and each key's last
        good value (so a start without etcd merges the same configuration again)."""
        layers: dict[str, Any] = {}
        for key in self.sources():
            good = self._good.get(key)
            if good is not None and good.value is not None:
                layers[key] = {"value": _saved_value(good.value), "revision": good.revision}
        return {"version": SAVED_VERSION, "collect_log_key": self.collect_key,
                "collect_sysinfo_key": self.sysinfo_key, "revision": self.revision,
                "collect": entry_items(self.collect or []), "sysinfo": self.sysinfo_override,
                "layers": layers, "failed_rollouts": dict(self.failed_rollouts)}


def _saved_value(value: Any) -> Any:
    if isinstance(value, CollectLayer):
        return value.value()
    if isinstance(value, Rollout):
        return value.document()
    if isinstance(value, tuple):
        return list(value)
    return value


def parse_groups(raw: bytes | None, key: str) -> tuple[str, ...] | None:
    """A central group assignment: a JSON array of group names; None (not set, or null): the host's
    [agent] groups apply. ConfigError (one line naming the key) when refused."""
    data = decode_optional(raw, key, list, "a JSON array of group names")
    if data is None:
        return None
    try:
        return unique_names(data, "group")
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def saved_layers(doc: Mapping[str, Any]) -> dict[str, tuple[bytes | None, int]]:
    """The per-key values of a saved document (empty for a file written before fleet keys)."""
    layers = doc.get("layers")
    if not isinstance(layers, dict):
        return {}
    out: dict[str, tuple[bytes | None, int]] = {}
    for key, item in layers.items():
        if isinstance(key, str) and isinstance(item, dict) and isinstance(item.get("revision"), int):
            out[key] = (json.dumps(item.get("value")).encode(), item["revision"])
    return out
