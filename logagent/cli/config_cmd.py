"""`logagent config show|set-collect|set-sysinfo|set-groups`: read and write a host's (or a group's)
etcd keys, validated.

A value is validated before anything is written (bad value: exit 2, the error lines on
stderr, nothing written), the unified diff against the stored value is printed, and
`--dry-run` stops there. etcd unreachable: exit 1 (EtcdError, mapped by cli.main).
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import sys
from typing import Any

from logagent.config.settings import Settings, load
from logagent.config.sysinfo import FIELDS, parse_sysinfo_value
from logagent.config.values import decode_json, parse_bool
from logagent.control.etcd_client import connect
from logagent.control.fleet.keys import FleetKeys, check_name
from logagent.control.fleet.layers import LayerRefused, parse_collect_layer
from logagent.errors import CollectConfigError, ConfigError

EXIT_BAD_VALUE = 2


def add_config_parser(subparsers: Any) -> None:
    """Register `config` and its subcommands on the top-level subparsers."""
    config = subparsers.add_parser("config", help="read and write this host's etcd keys, validated")
    sub = config.add_subparsers(dest="config_command", required=True)

    def common(p: argparse.ArgumentParser, group: bool = False) -> None:
        p.add_argument("-c", "--config", default=None, help="config.ini (for [etcd] and [agent])")
        p.add_argument("--id", "--ip", dest="host_id", default=None,
                       help="the host whose keys to use (default: [agent] id, which defaults to its ip)")
        if group:
            p.add_argument("--group", default=None, help="write the fleet group's key instead of a host's "
                                                         "(<prefix>/config/groups/<group>/...)")
        p.add_argument("--timeout", type=float, default=None, help="seconds per etcd request "
                                                                   "(default: [etcd] timeout)")

    show = sub.add_parser("show", help="print both keys' values; --effective: the merged configuration")
    common(show, group=True)
    show.add_argument("--effective", action="store_true",
                      help="the host's effective configuration: its groups' entries merged with its own keys, "
                           "with the origin (key and revision) of each entry")
    show.add_argument("--groups", default=None, help="with --effective: the host's groups, when neither a "
                                                     "central assignment nor its status says them")
    show.add_argument("--json", action="store_true", help="with --effective: as JSON")
    show.set_defaults(func=cmd_show)

    collect = sub.add_parser("set-collect", help="validate and write the collect_log key")
    common(collect, group=True)
    collect.add_argument("--dry-run", action="store_true", help="validate and show the diff; write nothing")
    collect.add_argument("file", help="JSON file with the entries, or - for stdin")
    collect.set_defaults(func=cmd_set_collect)

    sysinfo = sub.add_parser("set-sysinfo", help="validate and write the collect_sysinfo key",
                             description="Give a JSON file (or - for stdin), or fields to change in "
                                         "the stored value.")
    common(sysinfo, group=True)
    sysinfo.add_argument("--dry-run", action="store_true", help="validate and show the diff; write nothing")
    sysinfo.add_argument("file", nargs="?", help="JSON file with the value, or - for stdin")
    sysinfo.add_argument("--interval", help="seconds between samples")
    sysinfo.add_argument("--topic", help="Kafka topic")
    sysinfo.add_argument("--enabled", help="true or false")
    sysinfo.add_argument("--format", help="json or influx")
    sysinfo.set_defaults(func=cmd_set_sysinfo, _parser=sysinfo)

    groups = sub.add_parser("set-groups", help="assign a host to fleet groups centrally (overrides [agent] groups)",
                            description="Write <prefix>/config/hosts/<id>/groups: the host takes these groups "
                                        "instead of its [agent] groups. --clear deletes the key: config.ini's "
                                        "groups apply again.")
    common(groups)
    groups.add_argument("--dry-run", action="store_true", help="validate and show the diff; write nothing")
    groups.add_argument("groups", nargs="?", help="comma-separated group names ('' for none)")
    groups.add_argument("--clear", action="store_true", help="delete the assignment")
    groups.set_defaults(func=cmd_set_groups, _parser=groups)


# ---------------------------------------------------------------------------- helpers

def _settings(args: argparse.Namespace) -> tuple[Settings, str, str]:
    settings = load(args.config)
    if not settings.etcd.address:
        raise ConfigError(f"{settings.source}: [etcd] address is empty: there is no etcd to use")
    host_id = check_name(args.host_id, "host id") if args.host_id else settings.id
    group = getattr(args, "group", None)
    if group is not None:
        if args.host_id:
            raise ConfigError("give --id or --group, not both")
        keys = FleetKeys(settings.fleet.prefix)
        return settings, keys.group_collect(group), keys.group_sysinfo(group)
    collect_key, sysinfo_key = settings.etcd.keys_for(host_id)
    return settings, collect_key, sysinfo_key


def _timeout(args: argparse.Namespace, settings: Settings) -> float:
    return float(args.timeout) if args.timeout else settings.etcd.timeout


def _read_input(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        with open(name, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {name}: {exc.strerror or exc}") from None


def _pretty(value: bytes | None) -> list[str]:
    """Lines to show or diff: indented JSON when the value passes the guard every value passes
    (decode_json: so any value, however odd, prints), else the text as it is."""
    if value is None:
        return []
    try:
        data = decode_json(value)
    except ValueError:
        text = value.decode("utf-8", errors="replace")
    else:
        text = json.dumps(data, indent=2, ensure_ascii=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate ("\udcff"): show it escaped
            text = json.dumps(data, indent=2)
    return [line + "\n" for line in text.splitlines()]


def _diff(key: str, old: bytes | None, new: bytes) -> str:
    return "".join(difflib.unified_diff(_pretty(old), _pretty(new),
                                        fromfile=f"{key} (stored)" if old is not None else f"{key} (not set)",
                                        tofile=f"{key} (new)"))


def _refuse(errors: list[str]) -> int:
    for line in errors:
        print(f"logagent: {line}", file=sys.stderr)
    print("logagent: value refused; nothing written", file=sys.stderr)
    return EXIT_BAD_VALUE


def _write(args: argparse.Namespace, key: str, value: bytes, stored: bytes | None, client: Any) -> int:
    """Print the diff, then write unless --dry-run."""
    if stored is not None and stored.strip() == value.strip():
        print(f"{key}: no change")
        return 0
    sys.stdout.write(_diff(key, stored, value) or f"{key}: same content, new formatting\n")
    if args.dry_run:
        print(f"dry run: {key} not written")
        return 0
    revision = client.put(key, value)
    print(f"wrote {key} (revision {revision})")
    return 0


# ---------------------------------------------------------------------------- commands

def cmd_show(args: argparse.Namespace) -> int:
    if args.effective:
        from logagent.cli.effective import show_effective

        return show_effective(args)
    settings, collect_key, sysinfo_key = _settings(args)
    with connect(settings.etcd, _timeout(args, settings)) as client:
        snap = client.read([collect_key, sysinfo_key])
    print(f"# etcd {','.join(settings.etcd.address)} at revision {snap.revision}")
    for key in (collect_key, sysinfo_key):
        value = snap.values[key]
        print(f"{key}:")
        if value is None:
            print("  (not set)" + ("  [sysinfo] defaults apply" if key == sysinfo_key else ""))
            continue
        print("".join("  " + line for line in _pretty(value)), end="")
        for problem in _problems(settings, key == collect_key, key, value):
            print(f"  # refused: {problem}")
    return 0


def _problems(settings: Settings, collect: bool, key: str, value: bytes) -> list[str]:
    """What the agent would refuse in this value (validated against this config's allow-list)."""
    try:
        if collect:
            return list(parse_collect_layer(value, key, settings.agent.allowed_paths).errors)
        parse_sysinfo_value(value, key, settings.sysinfo)
    except LayerRefused as exc:
        return exc.errors
    except ConfigError as exc:
        return [str(exc)]
    return []


def cmd_set_collect(args: argparse.Namespace) -> int:
    settings, key, _ = _settings(args)
    value = _read_input(args.file).strip()
    try:
        errors = list(parse_collect_layer(value, key, settings.agent.allowed_paths).errors)
    except LayerRefused as exc:
        return _refuse(exc.errors)
    except CollectConfigError as exc:
        return _refuse([str(exc)])
    if errors:
        # The agent would run the good entries, but a CLI write is the place to be strict.
        return _refuse(errors)
    with connect(settings.etcd, _timeout(args, settings)) as client:
        stored, _ = client.get(key)
        return _write(args, key, value, stored, client)


def _field_value(name: str, raw: str) -> Any:
    """Flags as JSON types: interval a number, enabled a bool (when they parse as such)."""
    if name == "interval":
        try:
            number = float(raw)
        except ValueError:
            return raw
        if not math.isfinite(number):
            return raw  # nan, inf: refused by the sysinfo parser with the flag's own text
        return int(number) if number.is_integer() else number
    if name == "enabled":
        flag = parse_bool(raw)
        return raw if flag is None else flag
    return raw


def cmd_set_sysinfo(args: argparse.Namespace) -> int:
    fields = {name: getattr(args, name) for name in FIELDS if getattr(args, name) is not None}
    flags = ", ".join(f"--{name}" for name in FIELDS)
    if args.file is None and not fields:
        args._parser.error(f"give a FILE (or - for stdin) or at least one field flag ({flags})")
    if args.file is not None and fields:
        args._parser.error(f"give a FILE or field flags ({flags}), not both")
    settings, _, key = _settings(args)
    value: bytes | None = None
    if args.file is not None:
        value = _read_input(args.file).strip()
        try:
            parse_sysinfo_value(value, key, settings.sysinfo)
        except ConfigError as exc:
            return _refuse([str(exc)])
    else:
        # Check the flags alone first, so a bad one exits 2 even before etcd is asked.
        try:
            parse_sysinfo_value(json.dumps({k: _field_value(k, v) for k, v in fields.items()}).encode(),
                                key, settings.sysinfo)
        except ConfigError as exc:
            return _refuse([str(exc)])
    with connect(settings.etcd, _timeout(args, settings)) as client:
        stored, _ = client.get(key)
        if value is None:
            # Flags change fields of the stored value; the others stay as they are.
            base: dict[str, Any] = {}
            if stored is not None:
                try:
                    loaded = decode_json(stored)
                    base = dict(loaded) if isinstance(loaded, dict) else {}
                except ValueError:
                    base = {}  # the stored value is unusable anyway: replace it
            base.update({k: _field_value(k, v) for k, v in fields.items()})
            value = json.dumps(base).encode()
            try:
                parse_sysinfo_value(value, key, settings.sysinfo)
            except ConfigError as exc:
                return _refuse([str(exc)])
        return _write(args, key, value, stored, client)


def cmd_set_groups(args: argparse.Namespace) -> int:
    if args.clear == (args.groups is not None):
        args._parser.error("give GROUPS (comma-separated) or --clear")
    settings, _, _ = _settings(args)
    host_id = args.host_id or settings.id
    key = FleetKeys(settings.fleet.prefix).host_groups(host_id)
    with connect(settings.etcd, _timeout(args, settings)) as client:
        stored, _ = client.get(key)
        if args.clear:
            if stored is None:
                print(f"{key}: not set")
            elif args.dry_run:
                print(f"dry run: {key} not deleted")
            else:
                client.delete(key)
                print(f"deleted {key}: the host's [agent] groups apply again")
            return 0
        names = [g.strip() for g in args.groups.split(",") if g.strip()]
        try:
            value = json.dumps([check_name(g, "group") for g in dict.fromkeys(names)]).encode()
        except ConfigError as exc:
            return _refuse([str(exc)])
        return _write(args, key, value, stored, client)
