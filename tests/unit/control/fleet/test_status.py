"""The status a host writes back: bounded, nothing secret, written on change and seldom otherwise,
under a lease that is kept alive and taken anew when lost; STOPPED on a clean stop."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from logagent.config.settings import AgentSettings, EtcdSettings, FleetSettings, KafkaSettings, Settings
from logagent.config.sysinfo import SysinfoSettings
from logagent.control.base import EntryHealth, Health
from logagent.control.fleet.host import FleetHost
from logagent.control.fleet.keys import FleetKeys
from logagent.control.fleet.status import MAX_BYTES, StatusInputs, StatusPublisher, build_status, encode
from logagent.control.tracker import ConfigTracker, FleetScope
from logagent.errors import EtcdError
from tests.kit import eventually

KEY, SEEN = "/f/status/h1", "/f/seen/h1"


class FakeStatusEtcd:
    """put/grant/keepalive as the status uses them; leases can be lost, puts refused."""

    def __init__(self) -> None:
        self.puts: list[tuple[str, dict, int]] = []
        self.leases: set[int] = set()
        self.next_lease = 100
        self.keepalives = 0
        self.refuse: str = ""
        self.lock = threading.Lock()

    def put(self, key: str, value: bytes | str, lease: int = 0) -> int:
        if self.refuse:
            raise EtcdError(self.refuse)
        if lease and lease not in self.leases:
            raise EtcdError("etcd fake: put: NOT_FOUND: etcdserver: requested lease not found")
        with self.lock:
            self.puts.append((key, json.loads(value), lease))
        return len(self.puts)

    def grant(self, ttl: int) -> int:
        self.next_lease += 1
        self.leases.add(self.next_lease)
        return self.next_lease

    def keepalive(self, lease: int) -> int:
        self.keepalives += 1
        return 15 if lease in self.leases else 0

    def status_puts(self) -> list[dict]:
        return [doc for key, doc, _ in self.puts if key == KEY]


class FakeObserver:
    def __init__(self) -> None:
        self.delivered = 0
        self.files = 1

    def entry_health(self, behind: bool = False) -> dict[str, EntryHealth]:
        return {"/var/log/a.log": EntryHealth(files=self.files, behind=7 if behind else 0)}

    def health(self) -> Health:
        return Health(kafka_reachable=True, spool_bytes=0, delivered=self.delivered)

    async def topic_problem(self, topic: str) -> str | None:
        return None


def inputs(**kw: object) -> StatusInputs:
    return replace(StatusInputs(id="h1", hostname="host", ip="10.0.0.1", version="1.0", started=0.0,
                                config_hash="abc", sources={"/k": 3}), **kw)


def publisher(etcd: FakeStatusEtcd, state: dict, observer: FakeObserver, interval: float = 0.6,
              ttl: float = 3) -> StatusPublisher:
    """As FleetHost makes it: `state` changes are told by `state["generation"]` moving, then a poke."""
    return StatusPublisher(KEY, SEEN, ttl, interval, lambda: inputs(**{k: v for k, v in state.items()
                                                                       if k != "generation"}),
                           observer, lambda: etcd, check_every=0.05, min_spacing=0.1,
                           generation=lambda: state.get("generation", 0))


async def test_written_under_a_lease_at_start_then_only_on_change_and_seldom_for_counters() -> None:
    etcd, obs, state = FakeStatusEtcd(), FakeObserver(), {}
    pub = publisher(etcd, state, obs, interval=0.6)
    pub.start()
    # The status, then the seen key (a second put: under load the test looked between the two).
    await eventually(lambda: len(etcd.status_puts()) == 1 and SEEN in [k for k, _, _ in etcd.puts])
    key, first, lease = etcd.puts[0]
    assert key == KEY and lease in etcd.leases and first["state"] == "APPLIED"
    assert first["config"] == {"hash": "abc", "sources": {"/k": 3}}
    assert first["entries"] == {"/var/log/a.log": {"files": 1, "behind": 7, "errors": 0, "error": ""}}
    assert [k for k, _, _ in etcd.puts].count(SEEN) == 1
    await asyncio.sleep(1.0)  # nothing changes: nothing written (the lease is kept alive, not rewritten)
    assert len(etcd.status_puts()) == 1
    obs.delivered = 1  # a counter moves all the time: at most one write per interval
    began = time.monotonic()
    for _ in range(20):
        obs.delivered += 1
        await asyncio.sleep(0.1)
    writes = len(etcd.status_puts()) - 1
    took = time.monotonic() - began  # 2 s, longer on a loaded machine
    assert 1 <= writes <= took / 0.6 + 1, (writes, took)  # at a 0.6 s interval
    state["state"] = "FAILED"  # material: written at once (a write under way with the old state is not the last)
    state["errors"] = ["/k entry 0: bad"]
    state["generation"] = 1
    pub.poke()
    await eventually(lambda: etcd.status_puts()[-1]["state"] == "FAILED", timeout=1.0)
    assert etcd.status_puts()[-1]["state"] == "FAILED" and etcd.status_puts()[-1]["errors"] == ["/k entry 0: bad"]
    assert [doc for k, doc, _ in etcd.puts if k == SEEN][-1]["state"] == "FAILED"
    await pub.stop()


async def test_a_lost_lease_is_taken_anew_and_the_status_written_again() -> None:
    etcd, obs = FakeStatusEtcd(), FakeObserver()
    pub = publisher(etcd, {}, obs, ttl=3)
    pub.start()
    await eventually(lambda: len(etcd.status_puts()) == 1)
    etcd.leases.clear()  # expired in etcd (e.g. a long partition)
    await eventually(lambda: len(etcd.status_puts()) == 2, timeout=3.0)  # keep-alive every ttl/3
    assert etcd.puts[-1][2] in etcd.leases
    await pub.stop()


async def test_a_clean_stop_writes_stopped_and_a_refused_write_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    etcd, obs = FakeStatusEtcd(), FakeObserver()
    pub = publisher(etcd, {}, obs)
    pub.start()
    await eventually(lambda: len(etcd.status_puts()) == 1)
    await pub.stop()
    await pub.stop()  # idempotent
    assert etcd.status_puts()[-1]["state"] == "STOPPED"
    assert [doc for k, doc, _ in etcd.puts if k == SEEN][-1]["state"] == "STOPPED"

    denied = FakeStatusEtcd()
    denied.refuse = "etcd fake: put /f/status/h1: PERMISSION_DENIED: etcdserver: permission denied"
    caplog.set_level("ERROR", logger="logagent.fleet")
    pub = publisher(denied, {}, obs)
    pub.start()
    await eventually(lambda: any("needs write permission" in r.getMessage() for r in caplog.records))
    await pub.stop()
    assert sum("needs write permission" in r.getMessage() for r in caplog.records) == 1


def test_the_status_is_bounded() -> None:
    entries = {f"/var/log/{i:05d}/" + "x" * 200: EntryHealth(files=3, errors=1, error="e" * 5000, behind=10)
               for i in range(10_000)}
    doc = build_status(inputs(errors=["y" * 10_000] * 500), entries, Health(), 0.0, 1.0)
    assert len(doc["errors"]) == 20 and doc["errors_more"] == 480 and len(doc["errors"][0]) == 300
    assert len(doc["entries"]) == 200 and doc["entries_more"] == 9800
    raw = encode(doc)
    assert len(raw) <= MAX_BYTES
    assert json.loads(raw)["entries_more"] == 10_000  # the details went first
    assert doc["behind"] == 100_000  # the totals stay whole


def test_nothing_secret_goes_into_the_status(tmp_path: Path) -> None:
    settings = Settings(kafka=KafkaSettings(producer={"sasl.password": "kafka-secret-pw"}),
                        etcd=EtcdSettings(username="agent", password="etcd-secret-pw"),
                        agent=AgentSettings(ip="10.0.0.1", hostname="h", data_dir=tmp_path),
                        fleet=FleetSettings())
    keys = FleetKeys()
    tracker = ConfigTracker("/logagent/10.0.0.1/collect_log/config", "/logagent/10.0.0.1/collect_sysinfo/config",
                            ("/var/log/**",), SysinfoSettings(), FleetScope(keys, "10.0.0.1", ("web",)))
    tracker.update_many({tracker.collect_key: b'[{"path": "/var/log/a.log", "topic": "a"}]'}, 4, complete=True)
    host = FleetHost(settings, tracker, FakeObserver(), lambda: None, lambda why: None, lambda why: asyncio.sleep(0))
    raw = encode(build_status(host.inputs(), FakeObserver().entry_health(True), Health(), 0.0, 1.0)).decode()
    assert "secret" not in raw and "agent" not in json.loads(raw)["hostname"]
    doc = json.loads(raw)
    assert doc["state"] == "APPLIED" and doc["groups"] == ["web"] and doc["groups_from"] == "config.ini"
    assert doc["config"]["sources"][tracker.collect_key] == 4
