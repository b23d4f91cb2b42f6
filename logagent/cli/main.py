"""Command line: `logagent run|check|config|fleet|files`, `logagent --version`.

Exit status: 0 success, 1 a check or the agent failed, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from logagent import __version__
from logagent.config.settings import Settings, load
from logagent.errors import ConfigError, LogagentError
from logagent.runtime import collector
from logagent.runtime.logs import setup_logging
from logagent.runtime.names import escape_controls

DEFAULT_CONFIG = "/etc/logagent/config.ini"


def _load(path: str | None) -> Settings:
    return load(path)


def cmd_run(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    setup_logging(settings.agent.log_level, settings.agent.log_format)
    from logagent.agent import Agent

    collector.tune()

    async def main() -> int:
        return await Agent(settings, args.config).run()

    return asyncio.run(main())


def cmd_check(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    setup_logging("WARNING")
    from logagent.cli.checks import check_collect_files, check_etcd, check_kafka

    results: list[tuple[bool, str, str]] = [(True, "config", f"{settings.source} is valid")]
    for warning in settings.warnings:
        # --strict: a typo'd key (the default is used instead) fails the check.
        results.append((not args.strict, "config", f"warning: {warning}"))
    ok, detail = check_kafka(settings.kafka, timeout=args.timeout)
    results.append((ok, "kafka", f"{settings.kafka.address}: {detail}"))
    if settings.etcd.address:
        ok, detail = check_etcd(settings, timeout=args.timeout)
        results.append((ok, "etcd", f"{','.join(settings.etcd.address)}: {detail}"))
    else:
        results.append((True, "etcd", "no [etcd] address: [collect] files is used"))
        ok, detail = check_collect_files(settings)
        results.append((ok, "collect", detail))
    for ok, name, detail in results:
        # One line per part: names in it are display names already; a server's text may not be.
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {escape_controls(detail)}")
    return 0 if all(ok for ok, _, _ in results) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="logagent", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"logagent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run in the foreground until SIGTERM/SIGINT")
    run.add_argument("-c", "--config", default=None, help=f"config.ini (default {DEFAULT_CONFIG} if it exists)")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate config, reach Kafka and etcd")
    check.add_argument("-c", "--config", default=None)
    check.add_argument("--timeout", type=float, default=5.0, help="seconds per check")
    check.add_argument("--strict", action="store_true",
                       help="warnings (unknown keys and sections) fail the check too")
    check.set_defaults(func=cmd_check)

    from logagent.cli.config_cmd import add_config_parser
    from logagent.cli.files_cmd import add_files_parser
    from logagent.cli.fleet_cmd import add_fleet_parser

    add_config_parser(sub)
    add_fleet_parser(sub)
    add_files_parser(sub)
    return parser


def _default_config(args: argparse.Namespace) -> None:
    if getattr(args, "config", "unset") is None:
        from pathlib import Path

        if Path(DEFAULT_CONFIG).exists():
            args.config = DEFAULT_CONFIG


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _default_config(args)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"logagent: config error: {escape_controls(str(exc))}", file=sys.stderr)
        return 2
    except LogagentError as exc:
        print(f"logagent: {escape_controls(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
