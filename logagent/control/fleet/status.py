"""Each host's status, written back to etcd: `<prefix>/status/<id>` under a lease, `<prefix>/seen/<id>`.

The status key (JSON, at most MAX_BYTES, nothing secret: no credential, no producer setting):
who the host is (id, hostname, ip, version, start time), the hash of its effective configuration
and the revision of every key it came from, APPLIED or FAILED with the refusal errors, its
rollouts (BAKING, PASSED, FAILED and why), per entry the files collected, bytes behind and file
problems, whether Kafka is reachable, spool bytes, messages delivered.

It lives under a lease of `[fleet] status_ttl` seconds, kept alive every third of it: a host that
dies (kill -9, power) has its status vanish when the lease expires. A clean stop writes
state STOPPED (and lets the lease run out). The seen key is small and lasting, written at start,
when the state or the groups change, and at stop: `fleet status` shows a host
whose status is gone as offline (or stopped), with what it last ran.

Writes: at once (at most one a second) when something material changes (state, configuration,
errors, rollouts, Kafka reachable, an entry's files or problems); when only counters moved (bytes
behind, delivered, spool), at most one every `[fleet] status_interval` seconds; nothing when
nothing changed (the lease keep-alive is not a write).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from logagent.control.base import EntryHealth, Health, Observed
from logagent.errors import EtcdError
from logagent.runtime.backoff import Backoff
from logagent.runtime.names import escape_controls
from logagent.runtime.supervise import spawn
from logagent.runtime.wait import wait_event

log = logging.getLogger("logagent.fleet")

STATUS_VERSION = 1
MAX_ERRORS = 20
MAX_ERROR_CHARS = 300
MAX_ENTRIES = 200
MAX_BYTES = 64 * 1024
MIN_SPACING = 1.0  # seconds between two writes, however much changes
CHECK_EVERY = 3.0  # seconds between two looks at the agent for a change it made (files found, Kafka lost)
STOP_TIMEOUT = 3.0  # seconds a clean stop waits to write STOPPED


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class StatusInputs:
    """What the control plane knows of this host (the agent's own numbers come from Observed)."""

    id: str
    hostname: str
    ip: str
    version: str
    started: float
    state: str = "APPLIED"
    groups: list[str] = field(default_factory=list)
    groups_from: str = "config.ini"
    config_hash: str = ""
    sources: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    rollouts: dict[str, dict[str, Any]] = field(default_factory=dict)


def _short(text: str) -> str:
    text = escape_controls(text)
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 3] + "..."


def build_status(inputs: StatusInputs, entries: dict[str, EntryHealth], health: Health,
                 changed: float, now: float) -> dict[str, Any]:
    """The status document (see the module docstring); sizes bounded here, in bytes by encode()."""
    shown = dict(list(entries.items())[:MAX_ENTRIES])
    return {
        "v": STATUS_VERSION, "id": inputs.id, "hostname": inputs.hostname, "ip": inputs.ip,
        "version": inputs.version, "started": iso(inputs.started), "state": inputs.state,
        "groups": inputs.groups, "groups_from": inputs.groups_from,
        "config": {"hash": inputs.config_hash, "sources": inputs.sources},
        "errors": [_short(e) for e in inputs.errors[:MAX_ERRORS]],
        "errors_more": max(0, len(inputs.errors) - MAX_ERRORS),
        "rollouts": {g: {k: _short(v) if isinstance(v, str) else v for k, v in r.items()}
                     for g, r in inputs.rollouts.items()},
        "entries": {escape_controls(p): {"files": e.files, "behind": e.behind, "errors": e.errors,
                                         "error": _short(e.error)} for p, e in shown.items()},
        "entries_more": max(0, len(entries) - MAX_ENTRIES),
        "behind": sum(e.behind for e in entries.values()),
        "kafka": {"reachable": health.kafka_reachable}, "spool_bytes": health.spool_bytes,
        "delivered": health.delivered, "task_crashes": health.task_crashes,
        "changed": iso(changed), "updated": iso(now),
    }


COUNTERS = ("behind", "delivered", "spool_bytes", "updated", "changed")


def material(doc: dict[str, Any]) -> str:
    """The part of a status whose change is written at once (everything but the counters)."""
    core = {k: v for k, v in doc.items() if k not in COUNTERS}
    core["entries"] = {p: (e["files"], e["errors"], e["error"]) for p, e in doc["entries"].items()}
    return json.dumps(core, sort_keys=True)


def counters(doc: dict[str, Any]) -> str:
    return json.dumps([doc["behind"], doc["delivered"], doc["spool_bytes"],
                       [e["behind"] for e in doc["entries"].values()]])


def encode(doc: dict[str, Any]) -> bytes:
    """The document as JSON of at most MAX_BYTES: entry details go first, then errors, when too large."""
    raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    if len(raw) <= MAX_BYTES:
        return raw
    slim = dict(doc, entries={}, entries_more=doc["entries_more"] + len(doc["entries"]))
    raw = json.dumps(slim, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    if len(raw) <= MAX_BYTES:
        return raw
    slim = dict(slim, errors=slim["errors"][:3], errors_more=slim["errors_more"] + len(slim["errors"]) - 3,
                config=dict(slim["config"], sources={}))
    return json.dumps(slim, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")[:MAX_BYTES]


SEEN_FIELDS = ("id", "hostname", "ip", "version", "started", "state", "groups")


def seen_record(doc: dict[str, Any]) -> dict[str, Any]:
    """The lasting record of a status: who, its state and groups, the configuration it ran then, when.
    Rewritten only when one of SEEN_FIELDS changes (not at every configuration change: a thousand
    hosts, a thousand writes less per group change)."""
    return {k: doc[k] for k in SEEN_FIELDS} | {"hash": doc["config"]["hash"], "at": doc["updated"]}


class StatusClient(Protocol):
    """The part of the etcd client the status needs."""

    def put(self, key: str, value: bytes | str, lease: int = 0) -> int: ...

    def grant(self, ttl: int) -> int: ...

    def keepalive(self, lease: int) -> int: ...


class StatusPublisher:
    """Keeps `<prefix>/status/<id>` (leased) and `<prefix>/seen/<id>` up to date (module docstring).

    `client()` is the control plane's connection of the moment (None while it reconnects);
    `inputs()` what the control plane knows; `observer` the agent's numbers; `on_broken(reason)`
    asks the control plane for a new connection when writes keep failing on a live one (an expired
    auth token, say)."""

    def __init__(self, key: str, seen_key: str, ttl: float, interval: float,
                 inputs: Callable[[], StatusInputs], observer: Observed | None,
                 client: Callable[[], StatusClient | None], on_broken: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time, check_every: float = CHECK_EVERY,
                 min_spacing: float = MIN_SPACING, generation: Callable[[], int] | None = None) -> None:
        self.key, self.seen_key = key, seen_key
        self.check_every, self.min_spacing = check_every, min_spacing
        self.ttl, self.interval = int(max(3, round(ttl))), interval
        self._inputs, self._observer, self._client, self._on_broken = inputs, observer, client, on_broken
        self._generation = generation or (lambda: 0)  # moves whenever `inputs()` may have changed
        self._checked: Any = None  # what the last full look saw (cheap to compare)
        self._clock = clock
        self.lease = 0
        self.writes = 0  # status writes (for the tests and the bench)
        self._lease_client: StatusClient | None = None
        self._next_keepalive = 0.0
        self._last_write = -1e9
        self._last_counters_write = -1e9
        self._written_material: str | None = None
        self._written_counters: str | None = None
        self._written_seen: str | None = None
        self._changed = clock()
        self._poke = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(first=0.5, cap=10.0)
        self._failures = 0
        self._denied_logged = False

    # ---- lifecycle

    def start(self) -> None:
        if self._task is None:
            self._task = spawn("fleet status", "fleet_status", self._run)

    def poke(self) -> None:
        """Something material may have changed: look now."""
        self._poke.set()

    async def stop(self, clean: bool = True) -> None:
        """Stop writing; with `clean`, write state STOPPED first (bounded by STOP_TIMEOUT). Idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        client = self._client()
        if not clean or client is None or not self.lease:
            return
        doc = self._document(behind=True)
        doc["state"] = "STOPPED"
        try:
            await asyncio.wait_for(asyncio.to_thread(self._write_stopped, client, doc), STOP_TIMEOUT)
        except (EtcdError, TimeoutError) as exc:
            log.warning("could not write the stopped status to %s: %s", self.key, exc)

    def _write_stopped(self, client: StatusClient, doc: dict[str, Any]) -> None:
        client.put(self.key, encode(doc), self.lease)  # vanishes when the lease runs out
        client.put(self.seen_key, json.dumps(seen_record(doc)))

    # ---- the loop

    async def _run(self) -> None:
        while True:
            client = self._client()
            if client is None:
                await self._wait(0.5)
                continue
            try:
                await self._step(client)
            except EtcdError as exc:
                await self._failed(exc)
                continue
            if self._failures:
                log.info("status %s written again", self.key)
            self._failures = 0
            self._backoff.reset()
            await self._wait(self._next_due())

    def _next_due(self) -> float:
        now = time.monotonic()
        due = min(self._next_keepalive, now + self.check_every)
        return max(0.05, due - now)

    async def _wait(self, seconds: float) -> None:
        await wait_event(self._poke, seconds)

    async def _step(self, client: StatusClient) -> None:
        now = time.monotonic()
        if not self.lease or client is not self._lease_client:
            await self._ensure_lease(client)
        elif now >= self._next_keepalive:
            left = await asyncio.to_thread(client.keepalive, self.lease)
            if left <= 0:
                log.warning("status lease of %s expired (etcd unreachable for more than %ds?); taking a new one",
                            self.key, self.ttl)
                self.lease = 0
                await self._ensure_lease(client)
            else:
                self._next_keepalive = now + self.ttl / 3
        self._poke.clear()
        await self._maybe_write(client, now)

    async def _ensure_lease(self, client: StatusClient) -> None:
        """A lease that works on this connection: the one held if etcd still has it, else a new one."""
        if self.lease:
            left = await asyncio.to_thread(client.keepalive, self.lease)
            if left > 0:
                self._lease_client = client
                self._next_keepalive = time.monotonic() + self.ttl / 3
                return
        self.lease = await asyncio.to_thread(client.grant, self.ttl)
        self._lease_client = client
        self._next_keepalive = time.monotonic() + self.ttl / 3
        self._written_material = self._written_counters = None  # the key is gone with the old lease

    def _signature(self) -> Any:
        """What a look at the status would depend on, cheaply: when it is the same as at the last
        look and no counter is due, nothing is built (a thousand idle hosts per machine, the bench)."""
        entries = self._observer.entry_health(False) if self._observer is not None else {}
        health = self._observer.health() if self._observer is not None else Health()
        return (self._generation(), self.lease, [(p, e.files, e.errors, e.error) for p, e in entries.items()],
                health.kafka_reachable, health.task_crashes)

    async def _maybe_write(self, client: StatusClient, now: float) -> None:
        counters_due = now - self._last_counters_write >= self.interval
        signature = self._signature()
        if signature == self._checked and not counters_due:
            return
        self._checked = signature
        kept = material(self._document(behind=False))  # the same for the full document: only counters differ
        changed = kept != self._written_material
        if not changed and not counters_due:
            return
        if now - self._last_write < self.min_spacing:
            await asyncio.sleep(self.min_spacing - (now - self._last_write))  # bursts coalesce into one write
            now = time.monotonic()
        if changed:
            self._changed = self._clock()
        doc = self._document(behind=True)
        changed = kept != self._written_material
        if not changed and counters(doc) == self._written_counters:
            self._last_counters_write = now  # nothing moved: nothing written
            return
        await asyncio.to_thread(client.put, self.key, encode(doc), self.lease)
        self.writes += 1
        self._last_write = self._last_counters_write = now
        self._written_material, self._written_counters = kept, counters(doc)
        seen = json.dumps([doc[k] for k in SEEN_FIELDS])
        if seen != self._written_seen:
            await asyncio.to_thread(client.put, self.seen_key, json.dumps(seen_record(doc)))
            self._written_seen = seen

    def _document(self, behind: bool) -> dict[str, Any]:
        entries = self._observer.entry_health(behind) if self._observer is not None else {}
        health = self._observer.health() if self._observer is not None else Health()
        return build_status(self._inputs(), entries, health, self._changed, self._clock())

    async def _failed(self, exc: EtcdError) -> None:
        """Log once per outage; a lost lease is taken anew; a refusal is said plainly."""
        text = str(exc)
        self._failures += 1
        if "lease not found" in text:
            self.lease = 0
        if "PERMISSION_DENIED" in text or "permission denied" in text:
            if not self._denied_logged:
                log.error("cannot write the status %s: %s (the agent's etcd user needs write permission on "
                          "%s and %s; see docs/fleet.md)", self.key, text, self.key, self.seen_key)
                self._denied_logged = True
            await asyncio.sleep(30.0)
            return
        if self._failures == 1:
            log.warning("cannot write the status %s: %s; retrying", self.key, text)
        elif self._failures == 3 and self._on_broken is not None:
            self._on_broken(f"status writes failing: {text}")
        await asyncio.sleep(self._backoff.next())
