"""`logagent config show --effective [--id H]`: a host's configuration as it merges, entry by entry,
with the key (and its revision) each entry comes from.

The merge is the agent's own (control/tracker.py) over one read of etcd: the host's two keys and
everything under the fleet's config prefix. Its groups are the central assignment when there is
one, else what its status (or its last-seen record) reports, else `--groups`, else this config's
`[agent] groups` when H is this host. Entries are judged against this config.ini's allowed_paths
(the host's own may differ: its status says what it refused).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from logagent.config.settings import Settings, load
from logagent.config.values import decode_json
from logagent.control.etcd_client import connect
from logagent.control.fleet.keys import FleetKeys, check_name
from logagent.control.fleet.layers import Origin
from logagent.control.tracker import ConfigTracker, FleetScope, parse_groups
from logagent.errors import ConfigError
from logagent.runtime.names import escape_controls
from logagent.sources.files.entry import entry_items


def _reported_groups(values: dict[str, bytes | None]) -> tuple[str, ...] | None:
    """The groups a status or seen record says the host has (the first that says)."""
    for raw in values.values():
        if raw is None:
            continue
        try:
            doc = decode_json(raw)
        except ValueError:
            continue
        groups = doc.get("groups") if isinstance(doc, dict) else None
        if isinstance(groups, list) and all(isinstance(g, str) for g in groups):
            return tuple(groups)
    return None


def _groups_of(args: argparse.Namespace, settings: Settings, host_id: str, keys: FleetKeys,
               snap_values: dict[str, bytes | None], reported: tuple[str, ...] | None) -> tuple[tuple[str, ...], str]:
    """(the host's groups, where that came from) for the merge."""
    try:
        assigned = parse_groups(snap_values.get(keys.host_groups(host_id)), keys.host_groups(host_id))
    except ConfigError:
        assigned = None
    if assigned is not None:
        return assigned, f"central assignment {keys.host_groups(host_id)}"
    if args.groups is not None:
        return tuple(check_name(g.strip(), "group") for g in args.groups.split(",") if g.strip()), "--groups"
    if reported is not None:
        return reported, "its status"
    if host_id == settings.id:
        return settings.agent.groups, f"[agent] groups of {settings.source}"
    return (), "unknown (no assignment, no status: give --groups)"


def _where(origin: Origin) -> str:
    return f"{origin.label}: {origin.key} rev {origin.revision}"


def show_effective(args: argparse.Namespace) -> int:
    settings = load(args.config)
    if not settings.etcd.address:
        raise ConfigError(f"{settings.source}: [etcd] address is empty: there is no etcd to use")
    host_id = check_name(args.host_id, "host id") if args.host_id else settings.id
    keys = FleetKeys(settings.fleet.prefix)
    collect_key, sysinfo_key = settings.etcd.keys_for(host_id)
    timeout = float(args.timeout) if args.timeout else settings.etcd.timeout
    with connect(settings.etcd, timeout) as client:
        snap = client.read([collect_key, sysinfo_key, keys.status(host_id), keys.seen(host_id)],
                           [keys.config_prefix])
    values = dict(snap.values)
    reported = _reported_groups({k: values.pop(k, None) for k in (keys.status(host_id), keys.seen(host_id))})
    groups, source = _groups_of(args, settings, host_id, keys, values, reported)
    tracker = ConfigTracker(collect_key, sysinfo_key, settings.agent.allowed_paths, settings.sysinfo,
                            FleetScope(keys, host_id, groups))
    tracker.update_many(values, snap.revision, snap.mod_revisions, complete=True)
    if args.json:
        print(json.dumps(_document(tracker, host_id, groups, source, snap.revision), indent=2))
    else:
        for line in _lines(tracker, settings, host_id, groups, source, snap.revision):
            print(escape_controls(line))
    return 0


def _document(tracker: ConfigTracker, host_id: str, groups: tuple[str, ...], source: str,
              revision: int) -> dict[str, Any]:
    return {"id": host_id, "revision": revision, "groups": list(groups), "groups_from": source,
            "hash": tracker.config_hash(),
            "collect": [dict(entry_items([p.entry])[0], origin={"key": p.origin.key, "revision": p.origin.revision,
                                                                "label": p.origin.label},
                             replaces=[{"key": o.key, "revision": o.revision} for o in p.replaced])
                        for p in tracker.merged.placed],
            "removed": [{"path": r.path, "by": {"key": r.by.key, "revision": r.by.revision},
                         "was": [{"key": o.key, "revision": o.revision} for o in r.removed]}
                        for r in tracker.merged.removed],
            "sysinfo": tracker.sysinfo_override, "sources": tracker.sources(), "refused": tracker.problems(),
            "failed_rollouts": tracker.failed_rollouts}


def _lines(tracker: ConfigTracker, settings: Settings, host_id: str, groups: tuple[str, ...], source: str,
           revision: int) -> list[str]:
    out = [f"# etcd {','.join(settings.etcd.address)} at revision {revision}",
           f"# host {host_id}, groups {', '.join(groups) or '(none)'} (from {source})",
           f"# effective configuration, hash {tracker.config_hash()}: {len(tracker.merged.placed)} entr"
           f"{'y' if len(tracker.merged.placed) == 1 else 'ies'}"]
    for placed in tracker.merged.placed:
        line = f"{placed.entry.path} -> {placed.entry.topic}    [{_where(placed.origin)}]"
        if placed.replaced:
            line += "  replaces " + "; ".join(_where(o) for o in placed.replaced)
        out.append(line)
    for removed in tracker.merged.removed:
        was = "; ".join(_where(o) for o in removed.removed) or "no entry below it"
        out.append(f"removed {removed.path}    [{_where(removed.by)}]  was {was}")
    override = tracker.sysinfo_override
    out.append(f"# sysinfo: {json.dumps(override) if override else '[sysinfo] defaults'} -> "
               f"enabled={tracker.sysinfo.enabled} topic={tracker.sysinfo.topic} "
               f"interval={tracker.sysinfo.interval:g} format={tracker.sysinfo.format}")
    for group, rollout in tracker.rollouts().items():
        canary = tracker.canary_of(group) is not None
        out.append(f"# rollout {rollout.id} of group {group} at {rollout.percent:g}%: this host "
                   f"{'is a canary (runs the candidate)' if canary else 'is not chosen'}")
    for key, lines in tracker.problems().items():
        for line in lines:
            out.append(f"# refused ({key}): {line}")
    return out
