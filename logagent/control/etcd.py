"""The etcd control plane: read this host's keys and its fleet keys, apply them, watch them,
survive etcd.

Pieces, top to bottom:

- ``SavedConfig``: the last-good-config file. What the keys mean and how they merge is
  control/tracker.py's ``ConfigTracker`` (pure; unit tests drive it without etcd).
- ``EtcdControl``: the asyncio side. ``start()`` reads the host's two keys and everything under
  the fleet's config prefix at one revision and applies the merge, then watches the two keys and
  the prefix (one prefix watch, not one per group) from the revision read + 1 (nothing between
  read and watch is missed). When
  etcd does not answer within ``[etcd] timeout`` it starts from the configuration saved
  under data_dir and keeps trying in the background. A lost watch reconnects with
  backoff, re-reads and resumes; a compacted revision is handled by re-reading.

All gRPC calls run in worker threads; watch callbacks arrive on pyetcd's thread and are
handed to the event loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from logagent.config.settings import EtcdSettings, Settings
from logagent.config.sysinfo import SysinfoSettings, parse_sysinfo_value
from logagent.control.base import Observed, Target
from logagent.control.etcd_client import Snapshot, WatchBatch, WatchCallback, WatchItem, WatchLost, connect
from logagent.control.fleet.host import FleetHost
from logagent.control.fleet.keys import FleetKeys
from logagent.control.tracker import SAVED_VERSION, Change, ConfigTracker, FleetScope, saved_layers
from logagent.errors import ConfigError, EtcdError
from logagent.runtime import metrics
from logagent.runtime.atomic import write_atomic
from logagent.runtime.backoff import Backoff
from logagent.runtime.supervise import spawn
from logagent.sources.files.entry import CollectEntry, entry_items, parse_collect_value

log = logging.getLogger("logagent.etcd")

SAVED_NAME = "etcd-config.json"
__all__ = ["SAVED_NAME", "SAVED_VERSION", "Change", "ConfigTracker", "EtcdControl", "SavedConfig"]


# ---------------------------------------------------------------------------- the saved file

@dataclass(frozen=True)
class Restored:
    collect: list[CollectEntry]
    sysinfo: SysinfoSettings
    override: dict[str, Any] | None
    revision: int
    errors: list[str]
    layers: dict[str, tuple[bytes | None, int]] = field(default_factory=dict)  # key -> (good value, revision)
    failed_rollouts: dict[str, str] = field(default_factory=dict)


class SavedConfig:
    """`<data_dir>/etcd-config.json`: the last good configuration, for a start without etcd."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / SAVED_NAME

    def save(self, document: dict[str, Any]) -> None:
        """Write atomically (see atomic.write_atomic); raises OSError."""
        write_atomic(self.path, json.dumps(document, indent=2, ensure_ascii=False).encode())

    def failed_rollouts(self) -> dict[str, str]:
        """The rollouts this host failed (id -> why), from the saved file; {} when none can be read."""
        try:
            doc = json.loads(self.path.read_bytes())
        except (OSError, ValueError, RecursionError):
            return {}
        failed = doc.get("failed_rollouts") if isinstance(doc, dict) else None
        return {str(k): str(v) for k, v in failed.items()} if isinstance(failed, dict) else {}

    def load(self, tracker: ConfigTracker) -> Restored | None:
        """The saved configuration, validated again; None when there is none usable.

        Raises ConfigError when the file exists but cannot be used.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"{self.path}: unreadable: {exc.strerror or exc}") from None
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("version") != SAVED_VERSION:
                raise ValueError("not a saved etcd configuration of this version")
            revision = int(doc.get("revision") or 0)
        except (ValueError, TypeError, RecursionError) as exc:
            raise ConfigError(f"{self.path}: corrupt: {' '.join(str(exc).split())[:200]}") from None
        if (doc.get("collect_log_key"), doc.get("collect_sysinfo_key")) != tracker.keys:
            raise ConfigError(f"{self.path}: saved for keys {doc.get('collect_log_key')}, "
                              f"{doc.get('collect_sysinfo_key')}, not this host's {tracker.keys[0]}, "
                              f"{tracker.keys[1]}")
        where = f"{self.path} (saved {tracker.collect_key})"
        try:
            # Checked again: allowed_paths may have been narrowed since it was saved.
            entries, errors = parse_collect_value(json.dumps(doc.get("collect") or []), where, tracker.allowed)
            sysinfo, override = parse_sysinfo_value(
                None if doc.get("sysinfo") is None else json.dumps(doc["sysinfo"]),
                f"{self.path} (saved {tracker.sysinfo_key})", tracker.base_sysinfo)
        except ConfigError as exc:
            raise ConfigError(f"{self.path}: {exc}") from None
        except (ValueError, RecursionError) as exc:  # json.dumps of a damaged document
            raise ConfigError(f"{self.path}: corrupt: {exc}") from None
        failed = doc.get("failed_rollouts")
        failed = {str(k): str(v) for k, v in failed.items()} if isinstance(failed, dict) else {}
        return Restored(entries, sysinfo, override, revision, errors, saved_layers(doc), failed)


# ---------------------------------------------------------------------------- the control loop

class Connection(Protocol):
    """The part of EtcdClient the control loop uses (tests give a fake)."""

    address: str

    def read(self, keys: Sequence[str], prefixes: Sequence[str] = ()) -> Snapshot: ...

    def put(self, key: str, value: bytes | str, lease: int = 0) -> int: ...

    def grant(self, ttl: int) -> int: ...

    def keepalive(self, lease: int) -> int: ...

    def watch(self, keys: Sequence[str], start_revision: int, callback: WatchCallback,
              prefixes: Sequence[str] = ()) -> None: ...

    def close(self) -> None: ...


Connector = Callable[[EtcdSettings, float], Connection]


class EtcdControl:
    """Keeps the agent's collect set and sysinfo settings equal to this host's etcd keys."""

    def __init__(self, settings: Settings, agent: Target, connector: Connector = connect,
                 backoff: Backoff | None = None, observer: Observed | None = None) -> None:
        self.settings = settings
        self.agent = agent
        self._connector = connector
        self.timeout = settings.etcd.timeout
        collect_key, sysinfo_key = settings.etcd.keys_for(settings.id)
        self.fleet_keys = FleetKeys(settings.fleet.prefix)
        self.tracker = ConfigTracker(collect_key, sysinfo_key, settings.agent.allowed_paths, settings.sysinfo,
                                     FleetScope(self.fleet_keys, settings.id, settings.agent.groups))
        self.saved = SavedConfig(settings.agent.data_dir)
        self.backoff = backoff or Backoff(first=0.5, cap=5.0)
        self.connected = False
        self._client: Connection | None = None
        self._gen = 0  # bumped per connection: watch items of an older one are stale
        self._inbox: asyncio.Queue[tuple[int, WatchItem]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._opening: asyncio.Future[tuple[Connection, Snapshot]] | None = None
        self._lock = threading.Lock()  # guards _stopped against an open finishing in its thread
        self._stopped = False
        self._down_logged = False
        self.fleet = FleetHost(settings, self.tracker, observer, self._status_client, self._reconnect, self._reapply)

    # ---- lifecycle

    async def start(self) -> None:
        """Apply etcd's configuration (or the saved one when etcd is slow or down), then watch."""
        self._loop = asyncio.get_running_loop()
        self._inbox = asyncio.Queue()
        metrics.ETCD_UP.set(0)
        # A canary that failed a rollout never runs it again, across restarts too.
        self.tracker.failed_rollouts.update(await asyncio.to_thread(self.saved.failed_rollouts))
        first = self._open()
        opening: asyncio.Future[tuple[Connection, Snapshot]] | None = None
        # Bounded: a dead etcd must not hold up the agent; the attempt goes on in the background.
        done, _ = await asyncio.wait({first}, timeout=self.timeout)
        if done:
            try:
                client, snap = self._result(first)
            except EtcdError as exc:
                self._lost(str(exc), quiet=True)
                await self._apply_saved(str(exc))
            else:
                await self._connected(client, snap)
        else:
            opening = first  # the background loop waits for it
            reason = f"etcd {','.join(self.settings.etcd.address)} did not answer within {self.timeout:g}s"
            self._lost(reason, quiet=True)
            await self._apply_saved(reason)
        pending = [opening]  # the first run waits for the open under way; a restart opens anew

        def run() -> Awaitable[None]:
            first, pending[0] = pending[0], None
            return self._run(first)

        self._task = spawn("etcd control", "etcd", run)
        self.fleet.start()

    async def reload(self, settings: Settings) -> None:
        """config.ini was re-read (SIGHUP): judge the etcd values again against the new
        allow-list and [sysinfo] defaults. The etcd connection settings need a restart."""
        self.settings = settings
        change = self.tracker.rebase(settings.agent.allowed_paths, settings.sysinfo, settings.agent.groups)
        await self._apply(change, self.tracker.revision, "config.ini reloaded")

    async def stop(self) -> None:
        """Cancel the watch task, close the client; idempotent, leaves no thread behind."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        await self.fleet.stop()  # first: it writes STOPPED through the connection still open
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        opening, self._opening = self._opening, None
        if opening is not None:
            # An open still running in its thread closes its own client once it sees _stopped;
            # one that finished before that hands us a client to close.
            await asyncio.wait({opening}, timeout=3 * self.timeout + 5)
            if opening.done() and not opening.cancelled() and opening.exception() is None:
                client, _ = opening.result()
                if client is not self._client:
                    await asyncio.to_thread(client.close)
        await self._drop_client()
        metrics.ETCD_UP.set(0)

    # ---- what the fleet part uses

    def _status_client(self) -> Connection | None:
        return self._client if self.connected else None

    def _reconnect(self, reason: str) -> None:
        """Drop the connection and open a new one (the watch loop does it, as after a lost watch)."""
        if self._inbox is not None and self._client is not None:
            self._inbox.put_nowait((self._gen, WatchLost("status", reason)))

    async def _reapply(self, why: str) -> None:
        """Merge again and apply what changed (a canary's bake failed: the group's list comes back)."""
        await self._apply(self.tracker.refresh(), self.tracker.revision, why)

    # ---- connecting

    def _open(self) -> asyncio.Future[tuple[Connection, Snapshot]]:
        """Connect, read both keys, watch from the revision read + 1, in a worker thread."""
        assert self._loop is not None
        self._gen += 1
        gen = self._gen
        fut = self._loop.run_in_executor(None, self._open_blocking, gen)
        self._opening = fut
        return fut

    def _open_blocking(self, gen: int) -> tuple[Connection, Snapshot]:
        client = self._connector(self.settings.etcd, self.timeout)
        try:
            self._check_stopped()  # between the steps: a stop() is not held up by a slow etcd
            snap = client.read(self.tracker.keys, self.tracker.prefixes)
            self._check_stopped()
            client.watch(self.tracker.keys, snap.revision + 1, lambda item: self._from_thread(gen, item),
                         self.tracker.prefixes)
            self._check_stopped()
        except BaseException:
            client.close()
            raise
        return client, snap

    def _check_stopped(self) -> None:
        with self._lock:
            if self._stopped:
                raise EtcdError("etcd control stopped while connecting")

    @staticmethod
    def _result(opening: asyncio.Future[tuple[Connection, Snapshot]]) -> tuple[Connection, Snapshot]:
        """The outcome of an open; a failure other than a bad config counts as etcd trouble."""
        try:
            return opening.result()
        except (EtcdError, ConfigError):
            raise
        except Exception as exc:  # a surprise from the client library: retry like any etcd failure
            log.exception("connecting to etcd failed unexpectedly")
            raise EtcdError(f"connecting to etcd failed: {exc!r}") from exc

    def _from_thread(self, gen: int, item: WatchItem) -> None:
        """pyetcd's watch thread: hand the item to the event loop."""
        loop, inbox = self._loop, self._inbox
        if loop is None or inbox is None:
            return
        try:
            loop.call_soon_threadsafe(inbox.put_nowait, (gen, item))
        except RuntimeError:  # the loop is closed: we are shutting down
            pass

    async def _connected(self, client: Connection, snap: Snapshot) -> None:
        self._client = client
        self._opening = None
        self.connected = True
        metrics.ETCD_UP.set(1)
        if self._down_logged:
            log.info("etcd %s is back (revision %d); watching again", client.address, snap.revision)
        else:
            log.info("etcd %s: read %s, %s and %s at revision %d; watching", client.address,
                     *self.tracker.keys, ", ".join(f"{p}*" for p in self.tracker.prefixes) or "no prefix",
                     snap.revision)
        self._down_logged = False
        change = self.tracker.update_many(snap.values, snap.revision, snap.mod_revisions, complete=True)
        refused = self.tracker.refused_unapplied()
        if refused:
            # A value was refused and nothing good of that key is known yet (the start): its
            # last good value is the saved one, else (collect) nothing.
            change = change.then(self._adopt_saved(refused))
        await self._apply(change, snap.revision, "etcd read")

    def _lost(self, reason: str, quiet: bool = False) -> None:
        """etcd is unreachable or the watch broke: count it, log it once per outage.

        quiet: the caller logs the outage itself (at start, with what is collected meanwhile).
        """
        metrics.ETCD_ERRORS.inc()
        metrics.ETCD_UP.set(0)
        self.connected = False
        if not self._down_logged and not quiet:
            log.warning("%s; collecting goes on with the configuration in force, retrying in the background",
                        reason)
        elif self._down_logged:
            log.debug("%s", reason)
        self._down_logged = True

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        self._gen += 1
        self.connected = False
        if client is not None:
            await asyncio.to_thread(client.close)

    # ---- the loop

    async def _run(self, opening: asyncio.Future[tuple[Connection, Snapshot]] | None) -> None:
        assert self._inbox is not None
        while True:
            if self._client is None:
                current = opening if opening is not None else self._open()
                try:
                    await asyncio.wait({current})
                    client, snap = self._result(current)
                except (EtcdError, ConfigError) as exc:
                    self._opening = opening = None
                    self._lost(str(exc))
                    await asyncio.sleep(self.backoff.next())
                    continue
                opening = None
                self.backoff.reset()
                await self._connected(client, snap)
            gen, item = await self._inbox.get()
            if gen != self._gen:
                continue  # from a connection already dropped
            try:
                await self._handle(item)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug applying one change must not end the watch
                metrics.TASK_CRASHES.labels("etcd").inc()
                log.exception("applying the change of %s failed", getattr(item, "key", "?"))

    async def _handle(self, item: WatchItem) -> None:
        if isinstance(item, WatchBatch):
            if item.events:
                last = {ev.key: ev for ev in item.events}  # several changes at once: the newest wins
                revision = max(ev.revision for ev in last.values())
                change = self.tracker.update_many({k: ev.value for k, ev in last.items()}, revision,
                                                  {k: ev.revision for k, ev in last.items()})
                if len(last) == 1:
                    change.key = next(iter(last))
                await self._apply(change, revision, change.key or "etcd watch")
            return
        assert isinstance(item, WatchLost)
        await self._drop_client()
        if item.compacted:
            # Changes were compacted away: re-read the whole state, at once.
            log.warning("etcd watch of %s: %s; re-reading", item.key, item.reason)
            return
        self._lost(f"etcd watch of {item.key} lost: {item.reason}")
        await asyncio.sleep(self.backoff.next())

    # ---- applying

    async def _apply(self, change: Change, revision: int, what: str) -> None:
        """Log what was refused, apply what changed, save the result as the last good config.

        what: the key that changed (one), or what happened ("etcd read"), for the log lines.
        """
        for key, error in change.problems:
            metrics.CONFIG_ERRORS.labels(key).inc()
            log.error("%s", error)
        for key in change.refused_keys:
            log.error("%s: value at revision %d refused; the last good configuration stays in force", key, revision)
        applied = False
        starting, before = self.fleet.starting()
        if change.collect is not None:
            await self.agent.apply_collect(change.collect)
            n = len(change.collect)
            if n:
                log.info("%s: applied %d entr%s (revision %d)%s", what, n, "y" if n == 1 else "ies", revision,
                         self._origins())
            else:
                log.warning("%s: %s (revision %d): collecting nothing", what, self._why_empty(change), revision)
            applied = True
        if change.sysinfo is not None:
            self.agent.apply_sysinfo(change.sysinfo)
            log.info("%s: applied sysinfo settings %s (revision %d)", what,
                     "([sysinfo] defaults)" if self.tracker.sysinfo_override is None
                     else json.dumps(self.tracker.sysinfo_override), revision)
            applied = True
        metrics.CONFIG_REVISION.set(self.tracker.revision)
        await self.fleet.applied(starting, before)
        if applied:
            await self._save()

    def _origins(self) -> str:
        """' from group web (rev 12), host (rev 14)' when any entry comes from a fleet key."""
        counts: dict[str, int] = {}
        for placed in self.tracker.merged.placed:
            label = f"{placed.origin.label} (rev {placed.origin.revision})"
            counts[label] = counts.get(label, 0) + 1
        if list(counts) in ([], [label for label in counts if label.startswith("host ")]):
            return ""
        return " from " + ", ".join(f"{label}: {n}" for label, n in counts.items())

    def _why_empty(self, change: Change) -> str:
        if change.key == self.tracker.collect_key:
            raw = self.tracker.raw_value(change.key)
            return "not set" if raw is None else "an empty list"
        return "no entry in the merged configuration"

    async def _save(self) -> None:
        if self.tracker.collect is None:
            return  # nothing good yet: keep what the file holds
        try:
            await asyncio.to_thread(self.saved.save, self.tracker.saved_form())
        except OSError as exc:
            log.error("cannot save the etcd configuration to %s: %s", self.saved.path, exc)

    def _load_saved(self) -> Restored | None:
        """The saved configuration with its refused entries logged; None when there is none usable."""
        try:
            restored = self.saved.load(self.tracker)
        except ConfigError as exc:
            log.error("%s; not used", exc)
            return None
        if restored is not None and not restored.layers:  # a file from before the fleet keys
            for error in restored.errors:
                metrics.CONFIG_ERRORS.labels(self.tracker.collect_key).inc()
                log.error("%s", error)
        return restored

    async def _apply_saved(self, reason: str) -> None:
        """etcd is down at start: apply the configuration saved in data_dir, and say in one
        message why and what is collected meanwhile."""
        restored = self._load_saved()
        if restored is None:
            log.warning("%s; no saved etcd configuration in %s: nothing is collected until etcd answers "
                        "(retrying in the background)", reason, self.saved.path)
            return
        self.tracker.failed_rollouts.update(restored.failed_rollouts)
        if restored.layers:
            change = self.tracker.restore_layers(restored.layers, restored.revision)
            for key, error in change.problems:
                metrics.CONFIG_ERRORS.labels(key).inc()
                log.error("%s (saved in %s)", error, self.saved.path)
            collect, sysinfo = self.tracker.collect or [], self.tracker.sysinfo
        else:
            self.tracker.restore(restored.collect, restored.sysinfo, restored.override, restored.revision)
            collect, sysinfo = restored.collect, restored.sysinfo
        log.warning("%s; using the last good configuration saved in %s (revision %d, %d entr%s) until etcd "
                    "answers (retrying in the background)", reason, self.saved.path, restored.revision,
                    len(collect), "y" if len(collect) == 1 else "ies")
        self.agent.apply_sysinfo(sysinfo)
        metrics.CONFIG_REVISION.set(restored.revision)
        await self.agent.apply_collect(collect)

    def _adopt_saved(self, keys: list[str]) -> Change:
        """etcd values refused at start: those keys take their saved last good value (collect: else
        none; sysinfo: else [sysinfo]). Returns the merge that follows."""
        restored = self._load_saved()
        if restored is not None:
            self.tracker.failed_rollouts.update(restored.failed_rollouts)
        layers = dict(restored.layers) if restored is not None else {}
        if restored is not None and not layers:  # a file from before the fleet keys: the host's keys
            layers[self.tracker.collect_key] = (dump_saved(restored.collect).encode(), restored.revision)
            if restored.override is not None:
                layers[self.tracker.sysinfo_key] = (json.dumps(restored.override).encode(), restored.revision)
        for key in keys:
            saved = layers.get(key)
            if saved is None:
                if key == self.tracker.collect_key:
                    log.warning("%s: no saved etcd configuration in %s: nothing is collected until a good "
                                "value is put", key, self.saved.path)
                continue
            try:
                errors = self.tracker.adopt(key, saved[0], saved[1])
            except ConfigError as exc:
                log.error("%s (saved in %s); not used", exc, self.saved.path)
                continue
            for error in errors:
                metrics.CONFIG_ERRORS.labels(key).inc()
                log.error("%s (saved in %s)", error, self.saved.path)
            log.warning("%s: using the last good %s saved in %s (revision %d)", key,
                        "sysinfo settings" if key == self.tracker.sysinfo_key or key.endswith("/collect_sysinfo")
                        else "entries", self.saved.path, saved[1])
        return self.tracker.refresh()


def dump_saved(entries: list[CollectEntry]) -> str:
    """A saved collect list as the JSON value it came from."""
    return json.dumps(entry_items(entries))
