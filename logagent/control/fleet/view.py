"""The fleet as `logagent fleet status` shows it: one row per host, from the status and seen keys.

Pure: the CLI reads etcd (the status and seen keys, and the current revision of every key a host's
configuration came from) and hands it here.

- A host with a status key is live: its state is the status's (APPLIED, FAILED, STOPPED).
- A host with only a seen record: `stopped` when it stopped cleanly, else `offline` (its lease
  expired: killed, crashed, cut off).
- On the desired configuration: every key its configuration came from is at the revision the host
  applied (a key refused as a whole keeps the host on its last good revision: not desired). A host
  that is not live is not on it; its row shows the hash it last reported with a state change.

Exit status: 0 when every live host is APPLIED and on the desired configuration and no host is
offline; 1 otherwise. A cleanly stopped host fails nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from logagent.config.values import decode_json
from logagent.runtime.names import escape_controls


@dataclass
class HostRow:
    """One host in `fleet status`."""

    id: str
    state: str  # APPLIED | FAILED | STOPPED | stopped | offline
    version: str = ""
    hostname: str = ""
    groups: list[str] = field(default_factory=list)
    hash: str = ""
    desired: bool = False
    stale: list[str] = field(default_factory=list)  # keys newer in etcd than what the host applied
    behind: int = 0
    changed: str = ""
    errors: list[str] = field(default_factory=list)
    rollouts: dict[str, Any] = field(default_factory=dict)
    live: bool = True

    @property
    def ok(self) -> bool:
        if not self.live:
            return self.state == "stopped"
        return self.state in ("APPLIED", "STOPPED") and self.desired


def decode(raw: bytes) -> dict[str, Any] | None:
    try:
        doc = decode_json(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def source_keys(docs: list[dict[str, Any]]) -> set[str]:
    """Every key any of these statuses' configurations came from."""
    keys: set[str] = set()
    for doc in docs:
        sources = (doc.get("config") or {}).get("sources") if "config" in doc else doc.get("sources")
        if isinstance(sources, dict):
            keys.update(k for k in sources if isinstance(k, str))
    return keys


def _stale(sources: Any, current: Mapping[str, int]) -> tuple[bool, list[str]]:
    if not isinstance(sources, dict) or not sources:
        return False, ["(no sources reported)"]
    stale = [k for k, rev in sources.items() if current.get(k, 0) != rev]
    return not stale, stale


def rows(statuses: Mapping[str, dict[str, Any]], seen: Mapping[str, dict[str, Any]],
         current: Mapping[str, int]) -> list[HostRow]:
    """The rows, by host id (see the module docstring)."""
    out: list[HostRow] = []
    for host_id in sorted(set(statuses) | set(seen)):
        doc = statuses.get(host_id)
        if doc is not None:
            config = doc.get("config") or {}
            desired, stale = _stale(config.get("sources"), current)
            out.append(HostRow(host_id, str(doc.get("state", "?")), str(doc.get("version", "")),
                               str(doc.get("hostname", "")), list(doc.get("groups") or []), str(config.get("hash", "")),
                               desired, stale, int(doc.get("behind") or 0), str(doc.get("changed", "")),
                               [str(e) for e in doc.get("errors") or []], dict(doc.get("rollouts") or {})))
            continue
        last = seen[host_id]
        state = "stopped" if last.get("state") == "STOPPED" else "offline"
        out.append(HostRow(host_id, state, str(last.get("version", "")), str(last.get("hostname", "")),
                           list(last.get("groups") or []), str(last.get("hash", "")), False, [],
                           changed=str(last.get("at", "")), live=False))
    return out


def exit_status(table: list[HostRow]) -> int:
    return 0 if all(row.ok for row in table) else 1


def _age(stamp: str, now: datetime) -> str:
    try:
        then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return "?"
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n}B"


def table_lines(table: list[HostRow], now: datetime | None = None) -> list[str]:
    """The text table: one line per host, then one line per error or failed rollout."""
    now = now or datetime.now(UTC)
    head = ("ID", "VERSION", "STATE", "CONFIG", "DESIRED", "BEHIND", "LAST CHANGE", "GROUPS")
    body = [(r.id, r.version or "-", r.state, r.hash or "-", "yes" if r.desired else "no",
             _bytes(r.behind) if r.live else "-", _age(r.changed, now), ",".join(r.groups) or "-") for r in table]
    widths = [max(len(str(row[i])) for row in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in [head, *body]]
    for r in table:
        said = set()
        for group, rollout in r.rollouts.items():
            if isinstance(rollout, dict):
                why = f": {rollout.get('why')}" if rollout.get("why") else ""
                lines.append(f"  {r.id}: rollout {rollout.get('id')} of group {group} {rollout.get('state')}{why}")
                said.add(f"rollout {rollout.get('id')}: {rollout.get('why')}")
        for error in [e for e in r.errors if e not in said][:5]:  # a failed rollout is said once, above
            lines.append(f"  {r.id}: {error}")
        if r.live and not r.desired and r.stale:
            lines.append(f"  {r.id}: not on the desired configuration: {', '.join(r.stale[:3])} changed since")
    return [escape_controls(line) for line in lines]


def as_json(table: list[HostRow]) -> str:
    return json.dumps([dict(asdict(r), ok=r.ok) for r in table], indent=2)
