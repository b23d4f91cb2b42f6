"""What a control plane is, as the agent sees it.

A control plane decides what is collected. The agent (the `Target`) is driven by exactly one:
`EtcdControl` (control/etcd.py: this host's keys in etcd, watched live) when `[etcd] address` is
set, else `StaticControl` (control/static.py: `[collect] files` of config.ini). Either one is
started once, handed the re-read config.ini on SIGHUP, and stopped.
"""

from __future__ import annotations

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
