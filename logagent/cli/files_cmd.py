"""`logagent files`: where each file a running agent reads is, from its GET /files (docs/monitoring.md).

By default the files that are not simply caught up (something read and not acknowledged, a state
other than following); `--all` lists every one. Exit status 1 when the agent does not answer.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from typing import Any

from logagent.config.values import split_host_port
from logagent.errors import LogagentError
from logagent.runtime.names import escape_controls

CAUGHT_UP = "following (all read is acknowledged)"


def _url(listen: str) -> str:
    host, port = split_host_port(listen)
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):  # listening everywhere: ask on loopback
        host = "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/files"


def fetch(listen: str, timeout: float) -> list[dict[str, Any]]:
    """The rows of the agent listening on `listen` ([agent] http_listen); LogagentError if it does not answer."""
    url = _url(listen)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            rows = json.loads(answer.read())["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise LogagentError(f"no answer from the agent at {url}: {reason} (is it running, with this config?)") from None
    return list(rows)


def table(rows: list[dict[str, Any]], show_all: bool) -> list[str]:
    """One line per file: its unacknowledged bytes, offsets, state and path (the most behind first)."""
    shown = rows if show_all else [r for r in rows if r["state"] != CAUGHT_UP or r["read"] != r["acked"]]
    shown = sorted(shown, key=lambda r: (-(r["read"] - r["acked"]), r["path"]))
    out = [f"{'behind':>10} {'acked':>12} {'read':>12}  state / path (source)"]
    for r in shown:
        source = "" if r["source"] == "current file" else f" ({r['source']})"
        out.append(f"{r['read'] - r['acked']:>10} {r['acked']:>12} {r['read']:>12}  {r['state']}")
        out.append(f"{'':>37}{r['path']}{source} -> {r['topic']}")
    hidden = len(rows) - len(shown)
    out.append(f"{len(rows)} file{'' if len(rows) == 1 else 's'}"
               + (f", {hidden} caught up not shown (--all shows them)" if hidden else ""))
    return [escape_controls(line) for line in out]


def cmd_files(args: argparse.Namespace) -> int:
    from logagent.config.settings import load

    listen = args.listen or load(args.config).agent.http_listen
    if not listen:
        raise LogagentError("[agent] http_listen is empty: the agent serves no /files (give --listen)")
    for line in table(fetch(listen, args.timeout), args.all):
        print(line)
    return 0


def add_files_parser(sub: Any) -> None:
    files = sub.add_parser("files", help="where each file a running agent reads is, and what it waits for")
    files.add_argument("-c", "--config", default=None, help="the agent's config.ini (for [agent] http_listen)")
    files.add_argument("--listen", default=None, help="the agent's host:port instead of the config's http_listen")
    files.add_argument("--all", action="store_true", help="every file, also those caught up")
    files.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the agent")
    files.set_defaults(func=cmd_files)
