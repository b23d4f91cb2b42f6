"""The fleet tests' shared parts: a prefix of their own, the CLI as a process, and per-host
delivery checks (several agents on one machine read a shared file; each message says its host)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from devstack.agentproc import ROOT
from devstack.delivery import Tally, tally


def unique(prefix: str) -> str:
    """A name no other test uses (etcd is shared by the session)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def fleet_prefix() -> str:
    """A fleet prefix for one test: its agents see no other test's groups."""
    return f"/{unique('t')}/fleet"


def cli_config(path: Path, etcd: str, prefix: str, allowed: str, extra: str = "") -> Path:
    """A config.ini for the CLI (the operator's machine): etcd, the prefix, an allow-list."""
    path.write_text(f"[etcd]\naddress = {etcd}\ntimeout = 5\n{extra}[fleet]\nprefix = {prefix}\n"
                    f"[agent]\nallowed_paths = {allowed}\ndata_dir = {path.parent}\n")
    return path


def logagent(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m logagent ARGS` (the CLI as an operator runs it)."""
    return subprocess.run([sys.executable, "-m", "logagent", *args], cwd=ROOT, capture_output=True,
                          input=stdin, text=True, timeout=timeout)


def entries(*items: tuple[Path | str, str], start: str = "beginning", **extra: Any) -> str:
    """A collect value: (path, topic) pairs, each with `start` and the `extra` fields."""
    return json.dumps([{"path": str(p), "topic": t, "start": start, **extra} for p, t in items])


def append(path: Path, lines: Iterable[str]) -> None:
    with open(path, "a") as f:
        f.writelines(line + "\n" for line in lines)


def lines_of(values: list[dict[str, Any]], ip: str, path: Path | str) -> list[str]:
    """The lines one host (by its message ip) shipped from one file."""
    return [v["data"] for v in values if v.get("ip") == ip and v.get("path") == str(path)]


def host_tally(values: list[dict[str, Any]], ip: str, path: Path | str, expected: list[str]) -> Tally:
    """What one host shipped from one file against what was written to it."""
    return tally(expected, lines_of(values, ip, path))
