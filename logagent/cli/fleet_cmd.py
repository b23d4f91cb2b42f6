"""`logagent fleet status|rollout|forget`: the fleet as a whole, from etcd alone.

`fleet status` prints one line per host from the status keys the agents write back (and the seen
records of hosts that are gone); exit 1 when a host is FAILED, not on the desired configuration,
or offline (control/fleet/view.py says the rules). `fleet rollout` stages a candidate collect list
for a group (cli/rollout_cmd.py). `fleet forget ID` deletes the seen record of a host that is gone
for good.
"""

from __future__ import annotations

import argparse
from typing import Any

from logagent.config.settings import Settings, load
from logagent.control.etcd_client import EtcdClient, connect
from logagent.control.fleet.keys import FleetKeys, check_name
from logagent.control.fleet.view import as_json, decode, exit_status, rows, source_keys, table_lines
from logagent.errors import ConfigError


def add_fleet_parser(subparsers: Any) -> None:
    """Register `fleet` and its subcommands on the top-level subparsers."""
    fleet = subparsers.add_parser("fleet", help="the fleet from etcd: status of every host, staged rollouts")
    sub = fleet.add_subparsers(dest="fleet_command", required=True)

    status = sub.add_parser("status", help="one line per host; exit 1 when a host is FAILED, behind the "
                                           "desired configuration or offline")
    common(status)
    status.add_argument("--group", default=None, help="only the hosts of this group")
    status.add_argument("--json", action="store_true", help="as JSON")
    status.set_defaults(func=cmd_status)

    forget = sub.add_parser("forget", help="delete the seen record of a host that is gone for good")
    common(forget)
    forget.add_argument("host_id", metavar="ID")
    forget.set_defaults(func=cmd_forget)

    role = sub.add_parser("role", help="print the etcdctl commands that give an agent's etcd user least privilege",
                          description="Read the config keys (the fleet's config prefix and the host's own two "
                                      "keys), write nothing but its status and seen keys. --shared: one role for "
                                      "every agent (it may write any host's status, still no config key).")
    common(role)
    who = role.add_mutually_exclusive_group(required=True)
    who.add_argument("--id", dest="host_id", help="the host the role is for")
    who.add_argument("--shared", action="store_true", help="one role and user for every agent")
    role.add_argument("--user", default=None, help="the etcd user name (default: logagent-<id>, or logagent-agent)")
    role.set_defaults(func=cmd_role)

    from logagent.cli.rollout_cmd import add_rollout_parser

    add_rollout_parser(sub, common)


def common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", default=None, help="config.ini (for [etcd] and [fleet] prefix)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per etcd request (default: [etcd] timeout)")


def settings_of(args: argparse.Namespace) -> tuple[Settings, FleetKeys, float]:
    settings = load(args.config)
    if not settings.etcd.address:
        raise ConfigError(f"{settings.source}: [etcd] address is empty: there is no etcd to use")
    timeout = float(args.timeout) if args.timeout else settings.etcd.timeout
    return settings, FleetKeys(settings.fleet.prefix), timeout


def read_hosts(client: EtcdClient, keys: FleetKeys) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(status by host id, seen record by host id)."""
    out: list[dict[str, dict[str, Any]]] = []
    for prefix in (keys.status_prefix, keys.seen_prefix):
        docs: dict[str, dict[str, Any]] = {}
        for kv in client.read_prefix(prefix)[1]:
            host_id, doc = keys.id_of(kv.key, prefix), decode(kv.value)
            if host_id is not None and doc is not None:
                docs[host_id] = doc
        out.append(docs)
    return out[0], out[1]


def current_revisions(client: EtcdClient, keys: FleetKeys, wanted: set[str]) -> dict[str, int]:
    """The mod revision now of each wanted key (absent: 0): the config prefix in one read, the
    hosts' own keys one by one."""
    current: dict[str, int] = {}
    if any(k.startswith(keys.config_prefix) for k in wanted):
        current.update({kv.key: kv.mod_revision for kv in client.read_prefix(keys.config_prefix)[1]})
    others = sorted(k for k in wanted if not k.startswith(keys.config_prefix))
    for start in range(0, len(others), 200):
        current.update(client.read(others[start:start + 200]).mod_revisions)
    return current


def cmd_status(args: argparse.Namespace) -> int:
    settings, keys, timeout = settings_of(args)
    with connect(settings.etcd, timeout) as client:
        statuses, seen = read_hosts(client, keys)
        current = current_revisions(client, keys, source_keys(list(statuses.values()) + list(seen.values())))
    table = rows(statuses, seen, current)
    if args.group is not None:
        group = check_name(args.group, "group")
        table = [r for r in table if group in r.groups]
    if args.json:
        print(as_json(table))
    else:
        for line in table_lines(table):
            print(line)
        failing = [r.id for r in table if not r.ok]
        print(f"# {len(table)} host{'' if len(table) == 1 else 's'}, {len(table) - len(failing)} ok"
              + (f", not ok: {', '.join(failing[:10])}{' ...' if len(failing) > 10 else ''}" if failing else ""))
    return exit_status(table)


def cmd_forget(args: argparse.Namespace) -> int:
    settings, keys, timeout = settings_of(args)
    key = keys.seen(check_name(args.host_id, "host id"))
    with connect(settings.etcd, timeout) as client:
        if client.get(keys.status(args.host_id))[0] is not None:
            print(f"{args.host_id} is live (its status key exists): not forgotten")
            return 1
        print(f"deleted {key}" if client.delete(key) else f"{key}: not set")
    return 0


def role_commands(settings: Settings, keys: FleetKeys, host_id: str | None, user: str | None) -> list[str]:
    """The etcdctl commands for an agent's least-privilege role and user (see cmd_role)."""
    if host_id is not None:
        host_id = check_name(host_id, "host id")
        name = user or f"logagent-{host_id}"
        own = list(settings.etcd.keys_for(host_id))
        grants = [f"read --prefix {keys.config_prefix}"] + [f"read {key}" for key in own] + \
                 [f"readwrite {keys.status(host_id)}", f"readwrite {keys.seen(host_id)}"]
    else:
        name = user or "logagent-agent"
        template = settings.etcd.collect_log_key
        own_prefix = template.split("%s", 1)[0] if "%s" in template else template
        grants = [f"read --prefix {keys.config_prefix}", f"read --prefix {own_prefix}",
                  f"readwrite --prefix {keys.status_prefix}", f"readwrite --prefix {keys.seen_prefix}"]
    check_name(name, "user")
    out = [f"etcdctl role add {name}"]
    out += [f"etcdctl role grant-permission {name} {grant}" for grant in grants]
    out += [f'etcdctl user add {name} --new-user-password="$ETCD_AGENT_PASSWORD"',
            f"etcdctl user grant-role {name} {name}"]
    return out


def cmd_role(args: argparse.Namespace) -> int:
    """Print (never run) the commands: an operator with the root user runs them, with the agent's
    password (its [etcd] password) in ETCD_AGENT_PASSWORD."""
    settings = load(args.config)
    for line in role_commands(settings, FleetKeys(settings.fleet.prefix), None if args.shared else args.host_id,
                              args.user):
        print(line)
    return 0
