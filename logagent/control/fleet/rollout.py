"""Staged rollouts: a candidate collect list for a group, tried first on a share of its hosts.

The rollout key (`<prefix>/config/rollouts/<group>`) holds one JSON object:

    {"id": "r-...", "group": "web", "state": "running", "percent": 5, "max_failed": 0,
     "bake": 60, "candidate": [ ...collect entries... ], "base_revision": 41, "started": "..."}

A host of the group is a canary when `chosen(host id, rollout id, percent)`: a stable hash of the
two, so the same hosts are chosen again and raising the percentage only adds hosts (5 -> 25 -> 100).
A canary runs the candidate instead of the group's list for `bake` seconds while it checks itself
(control/fleet/bake.py); if a check fails it goes back to the group's list by itself and reports
the rollout FAILED with why. `state` other than running (aborted, done) means: nobody runs the
candidate. Pure: parsing, choosing, and the decisions of `logagent fleet rollout` (advance_problem).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from logagent.config.values import decode_optional, name_problem, show
from logagent.control.fleet.layers import CollectLayer, parse_collect_layer
from logagent.errors import ConfigError

STATES = ("running", "aborted", "done")
STEPS = (5.0, 25.0, 100.0)  # `advance` without --to goes to the next of these
DEFAULT_BAKE = 60.0
MAX_BAKE = 24 * 3600.0


def chosen(host_id: str, rollout_id: str, percent: float) -> bool:
    """Whether a host runs a rollout's candidate at `percent`: stable per (host, rollout), and
    monotonic in percent (a host chosen at 5 % is chosen at 25 %)."""
    digest = hashlib.sha256(f"{rollout_id}\x00{host_id}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % 10_000  # 0.01 % steps
    return bucket < round(percent * 100)


def parse_percent(raw: str) -> float:
    """'5%', '5' or '0.5%' as a percentage in (0, 100]; ValueError naming the rule."""
    text = raw.strip().removesuffix("%").strip()
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"a percentage like 5% (0 < p <= 100), got {raw!r}") from None
    if not math.isfinite(value) or not 0 < value <= 100:
        raise ValueError(f"a percentage like 5% (0 < p <= 100), got {raw!r}")
    return value


@dataclass(frozen=True)
class Rollout:
    """One rollout as a host and the CLI read it."""

    id: str
    group: str
    state: str
    percent: float
    candidate: CollectLayer
    bake: float = DEFAULT_BAKE
    max_failed: int = 0
    base_revision: int = 0
    started: str = ""
    candidate_value: list[Any] = field(default_factory=list)  # the candidate as written
    refused: tuple[str, ...] = ()  # why the candidate is refused as a whole (this host's judgement)

    @property
    def active(self) -> bool:
        return self.state == "running"

    def document(self) -> dict[str, Any]:
        """The JSON object of the rollout key."""
        return {"id": self.id, "group": self.group, "state": self.state, "percent": self.percent,
                "max_failed": self.max_failed, "bake": self.bake, "candidate": self.candidate_value,
                "base_revision": self.base_revision, "started": self.started}


def _number(doc: dict[str, Any], name: str, default: float, low: float, high: float, key: str) -> float:
    value = doc.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise ConfigError(f"{key}: {name} must be a number from {low:g} to {high:g}, got {show(value)}")
    return float(value)


def parse_rollout(raw: bytes | str | None, key: str, allowed: tuple[str, ...]) -> Rollout | None:
    """The rollout of a rollout key (None: not set). ConfigError when the document is unusable; a
    candidate this host refuses is kept (`refused`, `candidate.errors`): the host fails the rollout
    without applying it."""
    doc = decode_optional(raw, key, dict, "a rollout object")
    if doc is None:
        return None
    rollout_id = doc.get("id")
    problem = name_problem(rollout_id, "rollout id")
    if problem is not None:
        raise ConfigError(f"{key}: {problem}")
    state = doc.get("state")
    if state not in STATES:
        raise ConfigError(f"{key}: state must be one of {', '.join(STATES)}, got {show(state)}")
    percent = _number(doc, "percent", 0, 0, 100, key)
    bake = _number(doc, "bake", DEFAULT_BAKE, 0, MAX_BAKE, key)
    max_failed = int(_number(doc, "max_failed", 0, 0, 1e9, key))
    base = doc.get("base_revision", 0)
    candidate = doc.get("candidate")
    if not isinstance(candidate, list):
        raise ConfigError(f"{key}: candidate must be a JSON array of collect entries, got {show(candidate)}")
    refused: tuple[str, ...] = ()
    try:
        layer = parse_collect_layer(json.dumps(candidate), f"{key} candidate", allowed)
    except ConfigError as exc:
        layer = CollectLayer()
        refused = tuple(getattr(exc, "errors", None) or [str(exc)])
    return Rollout(str(rollout_id), str(doc.get("group") or ""), state, percent, layer, bake, max_failed,
                   base if isinstance(base, int) else 0, str(doc.get("started") or ""), candidate, refused)


def why_refused(rollout: Rollout) -> str | None:
    """Why a host does not even try a candidate (an entry it refuses), or None."""
    lines = list(rollout.refused) or list(rollout.candidate.errors)
    if not lines:
        return None
    more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
    return f"candidate refused: {lines[0]}{more}"


def next_step(percent: float) -> float:
    """The next step of the default ladder after `percent` (100 stays 100)."""
    return next((step for step in STEPS if step > percent), 100.0)


@dataclass(frozen=True)
class Tally:
    """Where the canaries of a rollout stand, from their status keys."""

    chosen: int = 0
    passed: int = 0
    failed: int = 0
    baking: int = 0
    silent: int = 0  # chosen but reporting nothing of this rollout yet (offline, or not applied)
    failed_hosts: tuple[tuple[str, str], ...] = ()  # (host id, why)


def tally(rollout: Rollout, hosts: Iterable[tuple[str, dict[str, Any] | None]]) -> Tally:
    """Count the chosen hosts by the rollout state their status reports. `hosts`: (id, the
    rollout part of its status for this group, None when it has no status)."""
    chosen_n = passed = failed = baking = silent = 0
    failures: list[tuple[str, str]] = []
    for host_id, report in hosts:
        if not chosen(host_id, rollout.id, rollout.percent):
            continue  # the share only grows: a host that ran the candidate is still chosen
        chosen_n += 1
        state = report.get("state") if report is not None and report.get("id") == rollout.id else None
        if state == "PASSED":
            passed += 1
        elif state == "FAILED":
            failed += 1
            failures.append((host_id, str(report.get("why") or "") if report is not None else ""))
        elif state == "BAKING":
            baking += 1
        else:
            silent += 1
    return Tally(chosen_n, passed, failed, baking, silent, tuple(failures))


def advance_problem(rollout: Rollout, t: Tally) -> str | None:
    """Why the rollout may not go to its next step now, or None: it advances only when every chosen
    host reported PASSED, except at most `max_failed` that FAILED."""
    if not rollout.active:
        return f"rollout {rollout.id} is {rollout.state}"
    if t.failed > rollout.max_failed:
        hosts = ", ".join(f"{h} ({why})" for h, why in t.failed_hosts[:5])
        return (f"halted: {t.failed} canar{'y' if t.failed == 1 else 'ies'} failed "
                f"(max_failed {rollout.max_failed}): {hosts}")
    if t.baking or t.silent:
        return (f"{t.baking} canar{'y' if t.baking == 1 else 'ies'} still baking, {t.silent} not reporting this "
                "rollout yet; try again when they passed")
    return None
