"""The etcd control plane without etcd: value parsing, last-good tracking, the saved file,
backoff, and EtcdControl driven by a fake client (watch items delivered from another thread)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from logagent.config.settings import AgentSettings, EtcdSettings, FleetSettings, Settings
from logagent.config.sysinfo import SysinfoSettings, parse_sysinfo_value
from logagent.control.etcd import (
    SAVED_NAME,
    ConfigTracker,
    EtcdControl,
    SavedConfig,
)
from logagent.control.etcd_client import (
    Snapshot,
    WatchBatch,
    WatchEvent,
    WatchLost,
    describe_error,
)
from logagent.errors import ConfigError, EtcdError
from logagent.runtime import metrics
from logagent.runtime.backoff import Backoff
from logagent.sources.files.entry import MAX_VALUE_BYTES, CollectEntry
from tests.kit import RecordingAgent, eventually

CK = "/logagent/10.0.0.5/collect_log/config"
SK = "/logagent/10.0.0.5/collect_sysinfo/config"
ALLOWED = ("/var/log/**",)
BASE = SysinfoSettings(enabled=False, topic="base_topic", interval=7, format="json")


def value(*entries: tuple[str, str]) -> bytes:
    return json.dumps([{"path": p, "topic": t} for p, t in entries]).encode()


def tracker() -> ConfigTracker:
    return ConfigTracker(CK, SK, ALLOWED, BASE)


# ---------------------------------------------------------------------------- parse_sysinfo_value

def test_sysinfo_value_overrides_the_base() -> None:
    settings, override = parse_sysinfo_value(b'{"interval": 5, "topic": "collect_system_info"}', SK, BASE)
    assert settings == SysinfoSettings(enabled=False, topic="collect_system_info", interval=5, format="json")
    assert override == {"interval": 5, "topic": "collect_system_info"}


@pytest.mark.parametrize("raw", [None, b"null"])
def test_missing_sysinfo_value_means_the_base(raw: bytes | None) -> None:
    assert parse_sysinfo_value(raw, SK, BASE) == (BASE, None)


@pytest.mark.parametrize("raw, problem", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "expected an object"),
    (b'{"interval": 0}', "interval must be"),
    (b'{"interval": "soon"}', "interval must be"),
    (b'{"topic": ""}', "topic must be"),
    (b'{"enabled": "maybe"}', "enabled must be"),
    (b'{"format": "xml"}', "format must be"),
    (b"{" + b" " * MAX_VALUE_BYTES + b"}", "refused"),
])
def test_bad_sysinfo_value_names_the_key(raw: bytes, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_sysinfo_value(raw, SK, BASE)
    assert SK in str(err.value) and problem in str(err.value)


# ---------------------------------------------------------------------------- ConfigTracker

def test_tracker_applies_good_values() -> None:
    t = tracker()
    change = t.update(CK, value(("/var/log/a.log", "a")), 5)
    assert change.collect == [CollectEntry("/var/log/a.log", "a")] and change.errors == [] and not change.refused
    change = t.update(SK, b'{"interval": 2}', 6)
    assert change.sysinfo == replace(BASE, interval=2.0)
    assert t.revision == 6


def test_tracker_keeps_last_good_on_wholly_bad_value() -> None:
    t = tracker()
    t.update(CK, value(("/var/log/a.log", "a")), 5)
    for bad in (b"not json", b'{"path": "/var/log/a.log"}', b"[" + b" " * MAX_VALUE_BYTES + b"]"):
        change = t.update(CK, bad, 9)
        assert change.refused and change.collect is None and len(change.errors) == 1
        assert CK in change.errors[0]
    assert t.collect == [CollectEntry("/var/log/a.log", "a")]
    assert t.revision == 5  # the revision in force is the good one


def test_tracker_refuses_an_array_of_only_bad_entries() -> None:
    t = tracker()
    t.update(CK, value(("/var/log/a.log", "a")), 5)
    change = t.update(CK, value(("/etc/passwd", "x")), 6)
    assert change.refused and change.collect is None and "allowed_paths" in change.errors[0]
    assert t.collect == [CollectEntry("/var/log/a.log", "a")]


def test_tracker_applies_good_entries_beside_bad_ones() -> None:
    t = tracker()
    change = t.update(CK, value(("/var/log/a.log", "a"), ("rel.log", "r"), ("/var/log/b.log", "")), 3)
    assert change.collect == [CollectEntry("/var/log/a.log", "a")]
    assert len(change.errors) == 2 and not change.refused


def test_tracker_deleted_keys() -> None:
    t = tracker()
    t.update(CK, value(("/var/log/a.log", "a")), 2)
    t.update(SK, b'{"interval": 2}', 3)
    assert t.update(CK, None, 4).collect == []  # deleted: stop what it described
    assert t.update(SK, None, 5).sysinfo == BASE  # deleted: the [sysinfo] defaults
    assert t.sysinfo_override is None


def test_tracker_bad_sysinfo_keeps_last_good() -> None:
    t = tracker()
    t.update(SK, b'{"interval": 2}', 3)
    change = t.update(SK, b'{"interval": -1}', 4)
    assert change.refused and change.sysinfo is None
    assert t.sysinfo == replace(BASE, interval=2.0)


def test_tracker_same_value_again_is_no_news() -> None:
    t = tracker()
    t.update(CK, value(("/var/log/a.log", "a")), 2)
    change = t.update(CK, value(("/var/log/a.log", "a")), 8)
    assert not change.applies and not change.errors
    assert t.revision == 8
    t.update(SK, b"bad", 9)
    assert t.update(SK, b"bad", 10).errors == []  # reported once, not at every re-read
    assert t.revision == 8


def test_tracker_same_entries_in_other_bytes_are_not_re_applied() -> None:
    t = tracker()
    t.update(CK, value(("/var/log/a.log", "a")), 2)
    t.update(SK, b'{"interval": 2}', 3)
    assert not t.update(CK, b'[{"topic": "a", "path": "/var/log/a.log"}]', 4).applies
    assert not t.update(SK, b'{"interval": 2.0}', 5).applies
    assert t.revision == 5


def test_tracker_after_restore_only_differences_apply() -> None:
    t = tracker()
    t.restore([CollectEntry("/var/log/a.log", "a")], BASE, None, 7)
    assert not t.update(CK, value(("/var/log/a.log", "a")), 9).applies
    assert not t.update(SK, None, 9).applies
    assert t.update(CK, value(("/var/log/b.log", "b")), 10).collect == [CollectEntry("/var/log/b.log", "b")]


def test_tracker_ignores_other_keys() -> None:
    assert not tracker().update("/other", b"[]", 1).applies


# ---------------------------------------------------------------------------- SavedConfig

def test_saved_config_round_trip(tmp_path: Path) -> None:
    t = tracker()
    t.update(CK, json.dumps([{"path": "/var/log/a.log", "topic": "a", "module": "m", "start": "beginning",
                              "fields": {"k": 1}}]).encode(), 4)
    t.update(SK, b'{"interval": 3}', 5)
    saved = SavedConfig(tmp_path / "data")
    saved.save(t.saved_form())
    assert (tmp_path / "data" / SAVED_NAME).exists()
    assert not list((tmp_path / "data").glob("*.tmp"))
    restored = saved.load(tracker())
    assert restored is not None
    assert restored.collect == t.collect and restored.sysinfo == t.sysinfo
    assert restored.override == {"interval": 3} and restored.revision == 5 and restored.errors == []


def test_saved_config_missing_corrupt_or_foreign(tmp_path: Path) -> None:
    saved = SavedConfig(tmp_path)
    assert saved.load(tracker()) is None
    (tmp_path / SAVED_NAME).write_text("{half")
    with pytest.raises(ConfigError, match="corrupt"):
        saved.load(tracker())
    other = ConfigTracker("/logagent/10.9.9.9/collect_log/config", SK, ALLOWED, BASE)
    other.collect = []
    saved.save(other.saved_form())
    with pytest.raises(ConfigError, match="not this host's"):
        saved.load(tracker())


def test_saved_config_is_checked_against_the_allow_list_again(tmp_path: Path) -> None:
    t = ConfigTracker(CK, SK, ("/var/log/**", "/srv/**"), BASE)
    t.update(CK, value(("/var/log/a.log", "a"), ("/srv/b.log", "b")), 4)
    saved = SavedConfig(tmp_path)
    saved.save(t.saved_form())
    restored = saved.load(tracker())  # allowed_paths narrowed to /var/log/**
    assert restored is not None
    assert [e.path for e in restored.collect] == ["/var/log/a.log"]
    assert len(restored.errors) == 1 and "allowed_paths" in restored.errors[0]


def test_describe_error_uses_the_hidden_grpc_error() -> None:
    class Rpc(Exception):
        def code(self) -> Any:
            class C:
                name = "UNAVAILABLE"
            return C()

        def details(self) -> str:
            return "connection refused"

    try:
        try:
            raise Rpc()
        except Rpc:
            raise RuntimeError("etcd connection failed")  # noqa: B904 - the implicit __context__ is the point
    except RuntimeError as exc:
        assert describe_error(exc) == "UNAVAILABLE: connection refused"
    assert describe_error(ValueError("x")) == "ValueError: x"


# ---------------------------------------------------------------------------- EtcdControl with a fake etcd

class FakeEtcd:
    """Shared state of a fake etcd: values, a revision, and whether it answers."""

    def __init__(self) -> None:
        self.values: dict[str, bytes | None] = {}
        self.revision = 1
        self.down = False
        self.delay = 0.0
        self.clients: list[FakeClient] = []
        self.watch_from: list[int] = []

    def connect(self, settings: Any, timeout: float) -> FakeClient:
        if self.delay:
            time.sleep(self.delay)
        if self.down:
            raise EtcdError("etcd fake: UNAVAILABLE: connection refused")
        client = FakeClient(self)
        self.clients.append(client)
        return client

    def put(self, key: str, raw: bytes | None) -> None:
        """Change a key and tell the live watches, from another thread (as gRPC does)."""
        self.revision += 1
        self.values[key] = raw
        for client in self.clients:
            client.notify(key, raw, self.revision)

    def lose_watches(self, compacted: int = 0) -> None:
        for client in self.clients:
            client.lose(compacted)


class FakeClient:
    address = "fake:2379"

    def __init__(self, etcd: FakeEtcd) -> None:
        self.etcd = etcd
        self.callback: Callable[[Any], None] | None = None
        self.keys: tuple[str, ...] = ()
        self.prefixes: tuple[str, ...] = ()
        self.closed = False

    def read(self, keys: Sequence[str], prefixes: Sequence[str] = ()) -> Snapshot:
        if self.etcd.down:
            raise EtcdError("etcd fake: read: UNAVAILABLE")
        values = {k: self.etcd.values.get(k) for k in keys}
        values.update({k: v for k, v in self.etcd.values.items()
                       if v is not None and any(k.startswith(p) for p in prefixes)})
        return Snapshot(self.etcd.revision, values)

    def watch(self, keys: Sequence[str], start_revision: int, callback: Callable[[Any], None],
              prefixes: Sequence[str] = ()) -> None:
        self.keys, self.prefixes, self.callback = tuple(keys), tuple(prefixes), callback
        self.etcd.watch_from.append(start_revision)

    def _deliver(self, item: Any) -> None:
        if self.callback is not None and not self.closed:
            t = threading.Thread(target=self.callback, args=(item,))
            t.start()
            t.join()

    def notify(self, key: str, raw: bytes | None, revision: int) -> None:
        if key in self.keys or any(key.startswith(p) for p in self.prefixes):
            self._deliver(WatchBatch(key, (WatchEvent(key, raw, revision),), revision))

    def lose(self, compacted: int) -> None:
        for key in self.keys + self.prefixes:
            self._deliver(WatchLost(key, "compacted" if compacted else "UNAVAILABLE", compacted))

    def close(self) -> None:
        self.closed = True


def make_settings(tmp_path: Path, timeout: float = 1.0) -> Settings:
    return Settings(etcd=EtcdSettings(address=("127.0.0.1:2379",), timeout=timeout), fleet=FleetSettings(status=False),
                    agent=AgentSettings(ip="10.0.0.5", hostname="h", data_dir=tmp_path / "data",
                                        allowed_paths=ALLOWED),
                    sysinfo=BASE)


def control_for(etcd: FakeEtcd, tmp_path: Path, agent: RecordingAgent | None = None, *, timeout: float = 1.0,
                backoff: Backoff | None = None) -> tuple[EtcdControl, RecordingAgent]:
    """An EtcdControl on the fake etcd driving `agent` (a new RecordingAgent by default); fast backoff."""
    agent = agent or RecordingAgent()
    control = EtcdControl(make_settings(tmp_path, timeout), agent, etcd.connect,
                          backoff or Backoff(first=0.02, cap=0.05))
    return control, agent


async def test_control_reads_applies_and_watches_from_the_next_revision(tmp_path: Path) -> None:
    etcd = FakeEtcd()
    etcd.values[CK] = value(("/var/log/a.log", "a"))
    etcd.revision = 10
    control, agent = control_for(etcd, tmp_path)
    await control.start()
    assert agent.paths == ["/var/log/a.log"] and agent.sysinfo == [BASE]
    assert etcd.watch_from == [11]
    assert metrics.CONFIG_REVISION._value.get() == 10 and metrics.ETCD_UP._value.get() == 1
    etcd.put(CK, value(("/var/log/a.log", "a"), ("/var/log/b.log", "b")))
    await eventually(lambda: agent.paths == ["/var/log/a.log", "/var/log/b.log"])
    etcd.put(SK, b'{"topic": "new_topic"}')
    await eventually(lambda: agent.sysinfo[-1].topic == "new_topic")
    assert agent.sysinfo[-1] == replace(BASE, topic="new_topic")
    etcd.put(CK, None)
    await eventually(lambda: agent.collect[-1] == [])
    assert metrics.CONFIG_REVISION._value.get() == 13
    await control.stop()
    await control.stop()  # idempotent
    assert etcd.clients[0].closed and metrics.ETCD_UP._value.get() == 0


async def test_control_bad_values_are_counted_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    etcd = FakeEtcd()
    etcd.values[CK] = value(("/var/log/a.log", "a"))
    caplog.set_level("ERROR", logger="logagent.etcd")
    control, agent = control_for(etcd, tmp_path)
    await control.start()
    before = metrics.CONFIG_ERRORS.labels(CK)._value.get()
    etcd.put(CK, b"[{oops")
    etcd.put(CK, value(("/var/log/a.log", "a"), ("/etc/shadow", "s")))
    await eventually(lambda: metrics.CONFIG_ERRORS.labels(CK)._value.get() == before + 2)
    # The good entry beside the bad one was already running: nothing to re-apply.
    assert agent.collect == [[CollectEntry("/var/log/a.log", "a")]]
    await control.stop()
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "logagent.etcd")
    assert f"{CK}: not valid JSON" in text
    assert "last good configuration stays in force" in text
    assert f"{CK} entry 1 ('/etc/shadow')" in text and "allowed_paths" in text


async def test_control_reconnects_after_a_lost_watch_and_re_reads(tmp_path: Path) -> None:
    etcd = FakeEtcd()
    etcd.values[CK] = value(("/var/log/a.log", "a"))
    control, agent = control_for(etcd, tmp_path)
    await control.start()
    errors = metrics.ETCD_ERRORS._value.get()
    etcd.down = True
    etcd.lose_watches()
    await eventually(lambda: not control.connected and metrics.ETCD_UP._value.get() == 0)
    # A change made "while it was down" (the fake still takes writes) is read on return.
    etcd.values[CK] = value(("/var/log/b.log", "b"))
    etcd.revision += 1
    await asyncio.sleep(0.2)  # several failed attempts, with backoff
    assert agent.paths == ["/var/log/a.log"]  # collecting goes on meanwhile
    etcd.down = False
    await eventually(lambda: control.connected and agent.paths == ["/var/log/b.log"])
    assert metrics.ETCD_ERRORS._value.get() > errors and metrics.ETCD_UP._value.get() == 1
    assert all(c.closed for c in etcd.clients[:-1])
    etcd.put(CK, value(("/var/log/c.log", "c")))  # the new watch works
    await eventually(lambda: agent.paths == ["/var/log/c.log"])
    await control.stop()
    assert all(c.closed for c in etcd.clients)


async def test_control_compaction_re_reads_at_once(tmp_path: Path) -> None:
    etcd = FakeEtcd()
    etcd.values[CK] = value(("/var/log/a.log", "a"))
    control, agent = control_for(etcd, tmp_path, backoff=Backoff(first=60, cap=60))
    await control.start()
    etcd.values[CK] = value(("/var/log/b.log", "b"))
    etcd.revision = 50
    etcd.lose_watches(compacted=40)
    # No backoff wait (60 s here) for a compaction: re-read straight away.
    await eventually(lambda: agent.paths == ["/var/log/b.log"] and control.connected)
    assert etcd.watch_from[-1] == 51
    await control.stop()


async def test_control_starts_from_the_saved_config_when_etcd_is_down(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    etcd = FakeEtcd()
    etcd.values[CK] = value(("/var/log/a.log", "a"))
    etcd.values[SK] = b'{"interval": 3}'
    first, _ = control_for(etcd, tmp_path)
    await first.start()
    await first.stop()

    etcd.down = True
    caplog.set_level("WARNING", logger="logagent.etcd")
    control, agent = control_for(etcd, tmp_path)
    started = time.monotonic()
    await control.start()
    assert time.monotonic() - started < 1
    assert agent.paths == ["/var/log/a.log"] and agent.sysinfo == [replace(BASE, interval=3.0)]
    assert not control.connected
    etcd.down = False
    etcd.put(CK, value(("/var/log/b.log", "b")))
    await eventually(lambda: control.connected and agent.paths == ["/var/log/b.log"])
    await control.stop()
    assert any("using the last good configuration saved in" in r.getMessage() for r in caplog.records)


async def test_control_start_is_bounded_by_the_timeout_when_etcd_hangs(tmp_path: Path) -> None:
    etcd = FakeEtcd()
    etcd.values[CK] = value(("/var/log/a.log", "a"))
    etcd.delay = 1.0  # the connect blocks longer than [etcd] timeout
    control, agent = control_for(etcd, tmp_path, timeout=0.3)
    started = time.monotonic()
    await control.start()
    assert time.monotonic() - started < 0.8
    assert agent.collect == []  # nothing saved, nothing to collect yet
    await eventually(lambda: agent.paths == ["/var/log/a.log"])  # the slow attempt still lands
    await control.stop()


async def test_control_stop_while_connecting_closes_the_late_client(tmp_path: Path) -> None:
    etcd = FakeEtcd()
    etcd.delay = 0.5
    control, _ = control_for(etcd, tmp_path, timeout=0.1)
    await control.start()
    await control.stop()
    assert etcd.clients and all(c.closed for c in etcd.clients)


async def start_and_stop(etcd: FakeEtcd, tmp_path: Path) -> RecordingAgent:
    """One run of the control plane: start (what it applies at start is recorded), stop."""
    control, agent = control_for(etcd, tmp_path)
    await control.start()
    await control.stop()
    return agent


async def test_control_refused_value_at_start_falls_back_to_the_saved_entries(tmp_path: Path) -> None:
    etcd = FakeEtcd()
    etcd.values[CK] = value(("/var/log/a.log", "a"))
    assert (await start_and_stop(etcd, tmp_path)).paths == ["/var/log/a.log"]
    etcd.values[CK] = b"{broken"
    # the last good config, across a restart
    assert (await start_and_stop(etcd, tmp_path)).paths == ["/var/log/a.log"]
    saved = json.loads((tmp_path / "data" / SAVED_NAME).read_text())
    assert [e["path"] for e in saved["collect"]] == ["/var/log/a.log"]


async def test_control_survives_a_failing_apply(tmp_path: Path) -> None:
    etcd = FakeEtcd()
    etcd.values[CK] = value(("/var/log/a.log", "a"))

    class Flaky(RecordingAgent):
        fail = False

        async def apply_collect(self, entries: list[CollectEntry]) -> None:
            if self.fail:
                self.fail = False
                raise RuntimeError("boom")
            await super().apply_collect(entries)

    control, agent = control_for(etcd, tmp_path, Flaky())
    await control.start()
    agent.fail = True  # type: ignore[attr-defined]
    etcd.put(CK, value(("/var/log/b.log", "b")))
    etcd.put(CK, value(("/var/log/c.log", "c")))
    await eventually(lambda: agent.paths == ["/var/log/c.log"])
    await control.stop()


# ---------------------------------------------------------------------------- hostile values (issue 14)

# Values that crashed the agent before validation was total, and a UTF-16 one (a codec error).
CRASHERS = [
    b'[{"path": "/var/log/a.log", "topic": "a", "fields": {"n": 18446744073709551616}}]',
    json.dumps([{"path": "/var/log/a.log", "topic": "a", "fields": {"d": json.loads("[" * 300 + "]" * 300)}}]).encode(),
    b'[{"path": "/var/log/a.log", "topic": "a", "multiline": {"preset": "java", "max_lines": NaN}}]',
    b'[{"path": "/var/log/a.log", "topic": "a", "multiline": {"pattern": "^ ", "timeout": Infinity}}]',
    b"[" * 200_000 + b"]" * 200_000,
    b'[{"path": "/var/log/a.log", "topic": "a", "fields": {"s": "\\udcff"}}]',
    b'[{"path": "/var/log/a.log", "topic": "a", "encoding": "idna"}]',
    b'[{"path": "/var/log/a.log", "topic": "__consumer_offsets"}]',
    b"null",
    value(("/var/log/a.log", "a")).decode().encode("utf-16"),
]
SYSINFO_CRASHERS = [b'{"interval": NaN}', b'{"a": ' * 100_000 + b"1" + b"}" * 100_000,
                    b'{"topic": "__consumer_offsets"}', b'{"topic": "\\udcff"}', b'{"enabled": "\\udcff"}',
                    '{"topic": "t"}'.encode("utf-16")]


@pytest.mark.parametrize("raw", CRASHERS, ids=range(len(CRASHERS)))
def test_tracker_refuses_each_crasher_and_keeps_the_last_good(raw: bytes) -> None:
    t = tracker()
    t.update(CK, value(("/var/log/b.log", "b")), 5)
    change = t.update(CK, raw, 6)
    assert change.refused and change.collect is None and len(change.errors) == 1
    assert change.errors[0].startswith(CK) and "\n" not in change.errors[0]
    assert t.collect == [CollectEntry("/var/log/b.log", "b")] and t.revision == 5


@pytest.mark.parametrize("raw", SYSINFO_CRASHERS, ids=range(len(SYSINFO_CRASHERS)))
def test_tracker_refuses_each_sysinfo_crasher(raw: bytes) -> None:
    t = tracker()
    t.update(SK, b'{"interval": 2}', 5)
    change = t.update(SK, raw, 6)
    assert change.refused and change.sysinfo is None and change.errors[0].startswith(SK)
    assert t.sysinfo == replace(BASE, interval=2.0)


def test_a_sysinfo_override_keeps_only_known_fields_so_it_can_be_saved(tmp_path: Path) -> None:
    t = tracker()
    t.update(CK, value(("/var/log/a.log", "a")), 1)
    change = t.update(SK, b'{"interval": 2, "note": "\\udcff", "deep": [[[1]]]}', 2)
    assert change.sysinfo == replace(BASE, interval=2.0) and t.sysinfo_override == {"interval": 2}
    SavedConfig(tmp_path).save(t.saved_form())  # a lone surrogate used to fail the UTF-8 write


def test_a_damaged_saved_file_is_refused_not_raised(tmp_path: Path) -> None:
    saved = SavedConfig(tmp_path)
    for text in ('{"version": 1, "revision": "x"}', "[" * 100_000, '{"version": 1, "revision": [1]}'):
        saved.path.write_text(text)
        with pytest.raises(ConfigError, match="corrupt"):
            saved.load(tracker())


@pytest.mark.parametrize("raw", [CRASHERS[0], CRASHERS[4], CRASHERS[8]], ids=["bigint", "deep", "null"])
async def test_control_crasher_at_start_falls_back_to_the_saved_config(tmp_path: Path, raw: bytes) -> None:
    etcd = FakeEtcd()
    etcd.values[CK] = value(("/var/log/a.log", "a"))
    etcd.values[SK] = b'{"interval": 3}'
    agent = await start_and_stop(etcd, tmp_path)
    assert agent.paths == ["/var/log/a.log"] and agent.sysinfo[-1].interval == 3.0
    etcd.values[CK] = raw
    etcd.values[SK] = SYSINFO_CRASHERS[1]
    agent = await start_and_stop(etcd, tmp_path)  # the saved entries and the saved sysinfo settings
    assert agent.paths == ["/var/log/a.log"] and agent.sysinfo[-1].interval == 3.0


async def test_control_empty_or_deleted_collect_value_warns_collecting_nothing(tmp_path: Path,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    etcd = FakeEtcd()
    etcd.values[CK] = value(("/var/log/a.log", "a"))
    caplog.set_level("INFO", logger="logagent.etcd")
    control, agent = control_for(etcd, tmp_path)
    await control.start()
    etcd.put(CK, b"[]")
    await eventually(lambda: agent.collect[-1] == [])
    etcd.put(CK, value(("/var/log/a.log", "a")))
    await eventually(lambda: agent.paths == ["/var/log/a.log"])
    etcd.put(CK, None)
    await eventually(lambda: agent.collect[-1] == [])
    before = metrics.CONFIG_ERRORS.labels(CK)._value.get()
    etcd.put(CK, b"null")  # refused: nothing changes
    await eventually(lambda: metrics.CONFIG_ERRORS.labels(CK)._value.get() > before)
    assert agent.collect[-1] == []
    await control.stop()
    warnings = [r.getMessage() for r in caplog.records if r.name == "logagent.etcd" and r.levelname == "WARNING"]
    assert f"{CK}: an empty list (revision 2): collecting nothing" in warnings
    assert f"{CK}: not set (revision 4): collecting nothing" in warnings
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert f"{CK}: expected a JSON array of entries, got null (to collect nothing, set [])" in errors


async def test_control_etcd_down_at_start_with_nothing_saved_says_one_true_thing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    etcd = FakeEtcd()
    etcd.down = True
    caplog.set_level("INFO", logger="logagent.etcd")
    control, agent = control_for(etcd, tmp_path)
    await control.start()
    await asyncio.sleep(0.2)  # retries in the background are not news
    assert agent.collect == []
    await control.stop()
    records = [r for r in caplog.records if r.name == "logagent.etcd" and r.levelno >= 30]
    assert len(records) == 1, [r.getMessage() for r in records]
    text = records[0].getMessage()
    assert text.startswith("etcd fake: UNAVAILABLE: connection refused; no saved etcd configuration in ")
    assert "nothing is collected until etcd answers (retrying in the background)" in text
    assert "configuration in force" not in text
