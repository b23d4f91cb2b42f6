"""Command line: `logagent run|check|config`, `logagent --version`.

Exit status: 0 success, 1 a check or the agent failed, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Sequence

from . import __version__
from .config import Settings, load
from .errors import ConfigError, LogagentError
from .opener import escape_controls

DEFAULT_CONFIG = "/etc/logagent/config.ini"


# JSON leaves DEL, C1 controls and U+2028/U+2029 in strings as they are; some readers split
# lines on them (U+0085 and U+2028 among them). `\uXXXX` is the same string to a JSON reader.
_JSON_UNSAFE = {c: f"\\u{c:04x}" for c in [*range(0x7F, 0xA0), 0x2028, 0x2029]}


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, one line per record whatever the message holds.

    Control characters in the message text are escaped (opener.escape_controls): names are
    escaped where they are logged (opener.display_name), and this is the second wall, so no
    text that reaches a message (a file name, a server's error) can start a line that looks
    like a record of its own. The lines of a traceback after it are the traceback's."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)  # set by format() for this call
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the message escaped as TextFormatter escapes it, and no
    character a line splitter could break on left in any field (see _JSON_UNSAFE)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) +
               f".{int(record.msecs):03d}Z", "level": record.levelname, "logger": record.name,
               "message": escape_controls(record.getMessage())}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False).translate(_JSON_UNSAFE)


def setup_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _load(path: str | None) -> Settings:
    return load(path)


def cmd_run(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    setup_logging(settings.agent.log_level, settings.agent.log_format)
    from .agent import Agent

    async def main() -> int:
        return await Agent(settings, args.config).run()

    return asyncio.run(main())


def cmd_check(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    setup_logging("WARNING")
    from .checks import check_collect_files, check_etcd, check_kafka

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

    from .config_cli import add_config_parser

    add_config_parser(sub)
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
