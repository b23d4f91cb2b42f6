"""`logagent fleet rollout start|status|advance|abort --group G`: a candidate collect list staged over
a group's hosts (control/fleet/rollout.py has the rules, docs/fleet.md the walk-through).

- start: validate the candidate (as set-collect does), write the rollout key (refused while another
  rollout of the group runs); the canaries apply it and bake.
- status: the chosen hosts and what each reports (BAKING, PASSED, FAILED and why); exit 1 when halted.
- advance: to the next step (5 -> 25 -> 100 %, or --to) only when every chosen host PASSED, but for at
  most --max-failed FAILED; at 100 % it promotes the candidate into the group key and ends the rollout.
- abort: every host back to the group key.

Every write is a transaction on the rollout key's revision: two operators cannot step on each other.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from logagent.cli.config_cmd import EXIT_BAD_VALUE, _read_input
from logagent.control.etcd_client import EtcdClient, connect
from logagent.control.fleet.keys import FleetKeys, check_name
from logagent.control.fleet.layers import LayerRefused, parse_collect_layer
from logagent.control.fleet.rollout import (
    DEFAULT_BAKE,
    Rollout,
    Tally,
    advance_problem,
    chosen,
    next_step,
    parse_percent,
    parse_rollout,
    tally,
)
from logagent.control.fleet.status import iso
from logagent.errors import CollectConfigError, ConfigError, LogagentError


def add_rollout_parser(fleet_sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    rollout = fleet_sub.add_parser("rollout", help="stage a candidate collect list over a group's hosts")
    sub = rollout.add_subparsers(dest="rollout_command", required=True)

    start = sub.add_parser("start", help="start a rollout of a candidate collect list for a group")
    common(start)
    start.add_argument("--group", required=True)
    start.add_argument("--canary", default="5%", help="share of the group's hosts that run it first (default 5%%)")
    start.add_argument("--bake", default=f"{DEFAULT_BAKE:g}s", help="how long a canary checks itself (60s, 5m)")
    start.add_argument("--max-failed", type=int, default=0, help="canaries that may fail and still advance (0)")
    start.add_argument("--id", default=None, help="the rollout id (default: r-<time>-<random>)")
    start.add_argument("--dry-run", action="store_true", help="validate and show; write nothing")
    start.add_argument("file", help="JSON file with the candidate entries, or - for stdin")
    start.set_defaults(func=cmd_start)

    for name, func, what in (("status", cmd_status, "the rollout's canaries and what they report; exit 1 when "
                                                    "halted"),
                             ("advance", cmd_advance, "go to the next step when the canaries passed; at 100%% "
                                                      "promote the candidate into the group key"),
                             ("abort", cmd_abort, "stop the rollout: every host back to the group key")):
        p = sub.add_parser(name, help=what)
        common(p)
        p.add_argument("--group", required=True)
        if name == "advance":
            p.add_argument("--to", default=None, help="the next share (default: 5 -> 25 -> 100%%)")
        if name == "status":
            p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)


def parse_duration(raw: str) -> float:
    """'60', '60s', '5m', '1h' as seconds; ConfigError when not."""
    text = raw.strip().lower()
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(text[-1:])
    try:
        value = float(text[:-1] if scale else text) * (scale or 1.0)
    except ValueError:
        raise ConfigError(f"--bake {raw!r}: expected seconds like 60s, 5m or 1h") from None
    if not 0 <= value <= 24 * 3600:
        raise ConfigError(f"--bake {raw!r}: expected 0 to 24h")
    return value


def _settings(args: argparse.Namespace) -> tuple[Any, FleetKeys, float, str]:
    from logagent.cli.fleet_cmd import settings_of

    settings, keys, timeout = settings_of(args)
    return settings, keys, timeout, check_name(args.group, "group")


def _read_rollout(client: EtcdClient, keys: FleetKeys, group: str) -> tuple[Rollout | None, int]:
    """(the rollout of the group, its key's mod revision: 0 when not set)."""
    key = keys.rollout(group)
    snap = client.read([key])
    raw = snap.values[key]
    return parse_rollout(raw, key, ("/**",)) if raw is not None else None, snap.mod_revisions.get(key, 0)


def _group_hosts(client: EtcdClient, keys: FleetKeys, group: str) -> list[tuple[str, dict[str, Any] | None, bool]]:
    """(host id, its report of this group's rollout, live) of every host known to be in the group."""
    from logagent.cli.fleet_cmd import read_hosts

    statuses, seen = read_hosts(client, keys)
    out: list[tuple[str, dict[str, Any] | None, bool]] = []
    for host_id in sorted(set(statuses) | set(seen)):
        doc = statuses.get(host_id) or seen.get(host_id) or {}
        if group not in (doc.get("groups") or []):
            continue
        live = host_id in statuses
        report = (doc.get("rollouts") or {}).get(group) if live else None
        out.append((host_id, report if isinstance(report, dict) else None, live))
    return out


def _tally(client: EtcdClient, keys: FleetKeys, group: str, rollout: Rollout) -> tuple[Tally, list[Any]]:
    hosts = _group_hosts(client, keys, group)
    return tally(rollout, [(h, r) for h, r, _ in hosts]), hosts


def cmd_start(args: argparse.Namespace) -> int:
    settings, keys, timeout, group = _settings(args)
    percent = _percent(args.canary, "--canary")
    bake = parse_duration(args.bake)
    if args.max_failed < 0:
        raise ConfigError("--max-failed: expected 0 or more")
    raw = _read_input(args.file).strip()
    try:
        layer = parse_collect_layer(raw, f"{keys.rollout(group)} candidate", settings.agent.allowed_paths)
        errors = list(layer.errors)
    except LayerRefused as exc:
        errors = exc.errors
    except CollectConfigError as exc:
        errors = [str(exc)]
    if errors:
        for line in errors:
            print(f"logagent: {line}", file=sys.stderr)
        print("logagent: candidate refused; nothing written", file=sys.stderr)
        return EXIT_BAD_VALUE
    rollout_id = check_name(args.id, "rollout id") if args.id else f"r-{int(time.time())}-{uuid.uuid4().hex[:6]}"
    with connect(settings.etcd, timeout) as client:
        current, mod = _read_rollout(client, keys, group)
        if current is not None and current.active:
            print(f"logagent: rollout {current.id} of group {group} is running ({current.percent:g}%); "
                  f"advance or abort it first", file=sys.stderr)
            return 1
        base = client.read([keys.group_collect(group)]).mod_revisions.get(keys.group_collect(group), 0)
        doc = {"id": rollout_id, "group": group, "state": "running", "percent": percent,
               "max_failed": args.max_failed, "bake": bake, "candidate": json.loads(raw),
               "base_revision": base, "started": iso(time.time())}
        canaries = [h for h, _, _ in _group_hosts(client, keys, group) if chosen(h, rollout_id, percent)]
        if args.dry_run:
            print(f"dry run: rollout {rollout_id} of group {group} at {percent:g}% not written; it would run on "
                  f"{', '.join(canaries) or 'no known host'}")
            return 0
        revision = client.put_if(keys.rollout(group), json.dumps(doc), mod)
    return _written(revision, keys.rollout(group), f"started rollout {rollout_id} of group {group} at {percent:g}%",
                    f"; canaries: {', '.join(canaries) or 'none of the known hosts yet'}; bake {bake:g}s")


def _written(revision: int | None, key: str, done: str, more: str = "") -> int:
    """The exit status of a write on the rollout key `key` (a transaction on the revision read):
    1, said on stderr, when another operator changed the key meanwhile (revision None: nothing was
    written); else 0, with `done (revision N)more` said."""
    if revision is None:
        print(f"logagent: {key} changed meanwhile; nothing written", file=sys.stderr)
        return 1
    print(f"{done} (revision {revision}){more}")
    return 0


def _percent(raw: str, flag: str) -> float:
    try:
        return parse_percent(raw)
    except ValueError as exc:
        raise ConfigError(f"{flag}: expected {exc}") from None


def _need(rollout: Rollout | None, group: str) -> Rollout:
    if rollout is None:
        raise LogagentError(f"no rollout for group {group}")
    return rollout


def cmd_status(args: argparse.Namespace) -> int:
    settings, keys, timeout, group = _settings(args)
    with connect(settings.etcd, timeout) as client:
        rollout = _need(_read_rollout(client, keys, group)[0], group)
        t, hosts = _tally(client, keys, group, rollout)
    problem = advance_problem(rollout, t) if rollout.active else None
    halted = problem is not None and problem.startswith("halted")
    if args.json:
        print(json.dumps({"rollout": rollout.document(), "tally": {
            "chosen": t.chosen, "passed": t.passed, "failed": t.failed, "baking": t.baking, "silent": t.silent},
            "failed_hosts": [list(x) for x in t.failed_hosts], "halted": halted,
            "hosts": [{"id": h, "chosen": chosen(h, rollout.id, rollout.percent), "live": live, "report": r}
                      for h, r, live in hosts]}, indent=2))
        return 1 if halted else 0
    print(f"rollout {rollout.id} of group {group}: {rollout.state} at {rollout.percent:g}%, bake {rollout.bake:g}s, "
          f"max_failed {rollout.max_failed}, started {rollout.started}")
    print(f"canaries: {t.chosen} of {len(hosts)} known hosts: {t.passed} passed, {t.failed} failed, "
          f"{t.baking} baking, {t.silent} not reporting")
    for host_id, report, live in hosts:
        if chosen(host_id, rollout.id, rollout.percent):
            state = report.get("state") if report and report.get("id") == rollout.id else "-"
            why = f": {report.get('why')}" if report and report.get("why") else ""
            print(f"  {host_id}: {state if live else 'offline'}{why}")
    if rollout.active:
        print(problem or f"ready to advance to {next_step(rollout.percent):g}%"
              if rollout.percent < 100 else problem or "ready to promote (advance)")
    return 1 if halted else 0


def cmd_advance(args: argparse.Namespace) -> int:
    settings, keys, timeout, group = _settings(args)
    with connect(settings.etcd, timeout) as client:
        rollout, mod = _read_rollout(client, keys, group)
        rollout = _need(rollout, group)
        t, _ = _tally(client, keys, group, rollout)
        problem = advance_problem(rollout, t)
        if problem is not None:
            print(f"logagent: rollout {rollout.id} not advanced: {problem}", file=sys.stderr)
            return 1
        doc = rollout.document()
        if rollout.percent >= 100:
            doc["state"] = "done"
            # One transaction: the group key takes the candidate as the rollout ends (no host flips back).
            revision = client.put_if(keys.rollout(group), json.dumps(doc), mod,
                                     also=[(keys.group_collect(group), json.dumps(rollout.candidate_value))])
            what = f"promoted rollout {rollout.id} into {keys.group_collect(group)}"
        else:
            target = _percent(args.to, "--to") if args.to else next_step(rollout.percent)
            if target <= rollout.percent:
                raise ConfigError(f"--to {args.to}: the share only grows (now {rollout.percent:g}%)")
            doc["percent"] = target
            revision = client.put_if(keys.rollout(group), json.dumps(doc), mod)
            what = f"rollout {rollout.id} of group {group} now at {target:g}%"
    return _written(revision, keys.rollout(group), what)


def cmd_abort(args: argparse.Namespace) -> int:
    settings, keys, timeout, group = _settings(args)
    with connect(settings.etcd, timeout) as client:
        rollout, mod = _read_rollout(client, keys, group)
        rollout = _need(rollout, group)
        if not rollout.active:
            print(f"rollout {rollout.id} of group {group} is {rollout.state} already")
            return 0
        doc = dict(rollout.document(), state="aborted")
        revision = client.put_if(keys.rollout(group), json.dumps(doc), mod)
    return _written(revision, keys.rollout(group), f"aborted rollout {rollout.id} of group {group}",
                    f": every host back to {keys.group_collect(group)}")
