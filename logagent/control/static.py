"""The control plane without etcd: `[collect] files` and `[sysinfo]` of config.ini.

`Control` is what the agent asks of a control plane; `EtcdControl` (control/etcd.py) is
one, `StaticControl` here is the other. The agent picks one at start-up ([etcd] address
set or not) and then only starts it, hands it a re-read config.ini on SIGHUP, and stops it.

The refusal rules of `[collect] files`:
- a value refused as a whole (not a JSON array, too large, too deep) keeps the entries in
  force; refused before anything was applied, nothing is collected (and the agent is
  ready: the configuration was judged);
- an entry that is bad (path outside allowed_paths, unknown codec, a duplicate) is refused
  on its own, with one error line and a config_errors count each; the others run, even
  when that leaves none.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from logagent import metrics
from logagent.config.settings import Settings
from logagent.errors import CollectConfigError
from logagent.sources.files.entry import CollectEntry, parse_collect_value

if TYPE_CHECKING:  # only a type: the static control plane needs nothing of the etcd one at run time
    from logagent.control.etcd import Target

log = logging.getLogger("logagent.control")

LABEL = "[collect] files"  # the config_errors label of refused values and entries


class Control(Protocol):
    """A control plane as the agent drives it."""

    async def start(self) -> None:
        """Apply the first configuration (the agent is not ready before it is judged)."""

    async def reload(self, settings: Settings) -> None:
        """config.ini was re-read (SIGHUP): apply what the new settings change."""

    async def stop(self) -> None:
        """Stop watching; idempotent."""


class StaticControl:
    """Applies `[collect] files` and `[sysinfo]` of config.ini, at start and on each reload."""

    def __init__(self, settings: Settings, agent: Target) -> None:
        self.settings = settings
        self.agent = agent
        self.entries: list[CollectEntry] | None = None  # None: nothing applied yet

    async def start(self) -> None:
        """Apply `[collect] files`. ([sysinfo] is already the reporter's: it was built with it.)"""
        await self._apply_files()

    async def reload(self, settings: Settings) -> None:
        self.settings = settings
        self.agent.apply_sysinfo(settings.sysinfo)
        await self._apply_files()

    async def stop(self) -> None:
        """Nothing runs between reloads: nothing to stop."""

    async def _apply_files(self) -> None:
        s = self.settings
        key = f"{s.source}: {LABEL}"
        try:
            entries, errors = parse_collect_value(s.collect_files, key, s.agent.allowed_paths)
        except CollectConfigError as exc:
            metrics.CONFIG_ERRORS.labels(LABEL).inc()
            log.error("%s", exc)
            if self.entries is not None:
                return  # keep what runs
            await self._apply([], f"{key}: refused")
            return
        for err in errors:
            metrics.CONFIG_ERRORS.labels(LABEL).inc()
            log.error("%s", err)
        await self._apply(entries, f"{key}: {'no good entry' if errors else 'an empty list'}")

    async def _apply(self, entries: list[CollectEntry], why_empty: str) -> None:
        if entries:
            log.info("no [etcd] address: collecting %d entr%s from %s",
                     len(entries), "y" if len(entries) == 1 else "ies", LABEL)
        else:
            log.warning("%s: collecting nothing (no [etcd] address)", why_empty)
        await self.agent.apply_collect(entries)
        self.entries = entries
