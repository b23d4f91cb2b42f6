"""This host's side of the fleet: its status written back and its canary bakes.

EtcdControl owns one `FleetHost` and tells it when a configuration was applied; FleetHost keeps the
status up to date (status.py) and, when the host runs a rollout's candidate, bakes it (bake.py): on a
failed check it marks the rollout failed here and asks the control plane to merge and apply again,
which puts the group's own list back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from logagent import __version__
from logagent.config.settings import Settings
from logagent.control.base import EntryHealth, Observed
from logagent.control.fleet.bake import Bake
from logagent.control.fleet.keys import FleetKeys
from logagent.control.fleet.rollout import Rollout
from logagent.control.fleet.status import StatusClient, StatusInputs, StatusPublisher
from logagent.control.tracker import ConfigTracker
from logagent.sources.files.pods import is_template

log = logging.getLogger("logagent.fleet")


class FleetHost:
    """Status and bakes of this host (see the module docstring)."""

    def __init__(self, settings: Settings, tracker: ConfigTracker, observer: Observed | None,
                 client: Callable[[], StatusClient | None], reconnect: Callable[[str], None],
                 reapply: Callable[[str], Awaitable[None]]) -> None:
        self.settings = settings
        self.tracker = tracker
        self.observer = observer
        self.keys = FleetKeys(settings.fleet.prefix)
        self.started = time.time()
        self.rollout_states: dict[str, dict[str, Any]] = {}  # group -> {"id", "state", "why", "since"}
        self.bakes: dict[str, Bake] = {}  # group -> the bake under way
        self.generation = 0  # moves whenever what inputs() says may have changed
        self._assignment_key = self.keys.host_groups(settings.id)
        self._reapply = reapply
        self.status: StatusPublisher | None = None
        if settings.fleet.status:
            self.status = StatusPublisher(self.keys.status(settings.id), self.keys.seen(settings.id),
                                          settings.fleet.status_ttl, settings.fleet.status_interval,
                                          self.inputs, observer, client, reconnect,
                                          generation=lambda: self.generation)

    def start(self) -> None:
        if self.status is not None:
            self.status.start()

    async def stop(self) -> None:
        for bake in list(self.bakes.values()):
            await bake.cancel()
        self.bakes.clear()
        if self.status is not None:
            await self.status.stop(clean=True)

    # ---- canaries

    def starting(self) -> tuple[dict[str, Rollout], dict[str, EntryHealth]]:
        """Before a merge is applied: the rollouts this host starts running now (by group), and how
        the configuration that still runs finds its files (what the bake compares with)."""
        out: dict[str, Rollout] = {}
        for group in self.tracker.groups():
            rollout = self.tracker.canary_of(group)
            state = self.rollout_states.get(group)
            if rollout is not None and (state is None or state.get("id") != rollout.id):
                out[group] = rollout
        before = self.observer.entry_health() if out and self.observer is not None else {}
        return out, before

    async def applied(self, starting: dict[str, Rollout] | None = None,
                      before: dict[str, EntryHealth] | None = None) -> None:
        """A merge was applied (or refused): bakes end or begin, and the status says so at once."""
        for group, bake in list(self.bakes.items()):
            rollout = self.tracker.canary_of(group)
            if rollout is None or rollout.id != bake.rollout_id:
                await bake.cancel()  # aborted, done or replaced: the group's list is back already
                del self.bakes[group]
        for group, rollout in (starting or {}).items():
            self._begin(group, rollout, before or {})
        self._note_failed_rollouts()
        self._changed()

    def _changed(self) -> None:
        """What the status says may have changed: it looks at once."""
        self.generation += 1
        if self.status is not None:
            self.status.poke()

    def _begin(self, group: str, rollout: Rollout, before: dict[str, EntryHealth]) -> None:
        key = self.keys.rollout(group)
        paths = [p.entry.path for p in self.tracker.merged.placed if p.origin.key == key]
        # A topic template (k8s.{namespace}) is a topic per pod, checked per file when it is opened.
        topics = [p.entry.topic for p in self.tracker.merged.placed if p.origin.key == key
                  and not is_template(p.entry.topic)]
        self.rollout_states[group] = {"id": rollout.id, "state": "BAKING", "why": "", "since": time.time()}
        log.info("rollout %s of group %s: running its candidate (%d entr%s here); baking for %gs", rollout.id, group,
                 len(paths), "y" if len(paths) == 1 else "ies", rollout.bake)
        if self.observer is None:  # nothing to check with (a simulated host): it passes
            self.rollout_states[group]["state"] = "PASSED"
            return

        async def done(why: str | None) -> None:
            await self._baked(group, rollout, why)

        bake = Bake(rollout.id, group, rollout.bake, paths, topics, before, self.observer, done)
        self.bakes[group] = bake
        bake.start()

    async def _baked(self, group: str, rollout: Rollout, why: str | None) -> None:
        self.bakes.pop(group, None)
        if why is None:
            self.rollout_states[group] = {"id": rollout.id, "state": "PASSED", "why": "", "since": time.time()}
            log.info("rollout %s of group %s PASSED its bake here", rollout.id, group)
            self._changed()
            return
        self.tracker.failed_rollouts[rollout.id] = why
        self.rollout_states[group] = {"id": rollout.id, "state": "FAILED", "why": why, "since": time.time()}
        log.error("rollout %s of group %s FAILED here: %s; going back to the group's own list", rollout.id, group, why)
        await self._reapply(f"rollout {rollout.id} reverted")

    def _note_failed_rollouts(self) -> None:
        """Rollouts this host failed without running them (a candidate entry refused here)."""
        for group, rollout in self.tracker.rollouts().items():
            why = self.tracker.failed_rollouts.get(rollout.id)
            state = self.rollout_states.get(group)
            if why is not None and (state is None or state.get("id") != rollout.id or state["state"] == "BAKING"):
                self.rollout_states[group] = {"id": rollout.id, "state": "FAILED", "why": why, "since": time.time()}
                log.error("rollout %s of group %s FAILED here: %s; the group's own list stays in force",
                          rollout.id, group, why)
        active = {group: r.id for group, r in self.tracker.rollouts().items()}
        for group in [g for g, s in self.rollout_states.items() if active.get(g) != s.get("id")]:
            del self.rollout_states[group]  # aborted, done or replaced: nothing to report
        if self.tracker.rollouts_known():
            for rollout_id in [r for r in self.tracker.failed_rollouts if r not in active.values()]:
                del self.tracker.failed_rollouts[rollout_id]  # over: no need to remember it

    def inputs(self) -> StatusInputs:
        t = self.tracker
        problems = t.problems()
        errors = [line for lines in problems.values() for line in lines]
        failed = [s for s in self.rollout_states.values() if s["state"] == "FAILED"]
        errors += [f"rollout {s['id']}: {s['why']}" for s in failed]
        sources = t.sources()
        return StatusInputs(
            id=self.settings.id, hostname=self.settings.hostname, ip=self.settings.ip, version=__version__,
            started=self.started, state="FAILED" if errors else "APPLIED", groups=list(t.groups()),
            groups_from="central" if sources.get(self._assignment_key) else "config.ini",
            config_hash=t.config_hash(), sources=sources, errors=errors, rollouts=dict(self.rollout_states))
