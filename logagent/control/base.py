"""What a control plane is, as the agent sees it.

A control plane decides what is collected. The agent (the `Target`) is driven by exactly one:
`EtcdControl` (control/etcd.py: this host's keys in etcd, watched live) when `[etcd] address` is
set, else `StaticControl` (control/static.py: `[collect] files` of config.ini). Either one is
started once, handed the re-read config.ini on SIGHUP, and stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from logagent.config.settings import Settings
from logagent.config.sysinfo import SysinfoSettings
from logagent.sources.files.entry import CollectEntry


class Control(Protocol):
    """A control plane as the agent drives it."""

    async def start(self) -> None:
        """Apply the first configuration (the agent is not ready before it is judged)."""

    async def reload(self, settings: Settings) -> None:
        """config.ini was re-read (SIGHUP): apply what the new settings change."""

    async def stop(self) -> None:
        """Stop watching; idempotent."""


class Target(Protocol):
    """What the control plane drives (the Agent)."""

    async def apply_collect(self, entries: list[CollectEntry]) -> None: ...

    def apply_sysinfo(self, settings: SysinfoSettings) -> None: ...


@dataclass(frozen=True)
class EntryHealth:
    """One collect entry as it runs: files collected, bytes in them not yet in Kafka (measured only
    when asked: it takes a stat per file), problems with its files (the first one's text)."""

    files: int = 0
    errors: int = 0
    error: str = ""
    behind: int = 0


@dataclass(frozen=True)
class Health:
    """The agent's pipeline as the fleet status reports it."""

    kafka_reachable: bool = False
    spool_bytes: int = 0
    delivered: int = 0  # messages Kafka acknowledged since the start
    task_crashes: int = 0


class Observed(Protocol):
    """What the fleet status and a canary's self-checks look at (the Agent; tests give a fake)."""

    def entry_health(self, behind: bool = False) -> dict[str, EntryHealth]:
        """Per entry path; `behind` measured only when True."""

    def health(self) -> Health: ...

    async def topic_problem(self, topic: str) -> str | None:
        """Why `topic` cannot take a message (the broker's metadata error), or None."""
