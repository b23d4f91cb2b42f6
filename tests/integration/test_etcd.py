"""The etcd control plane end to end: real etcd, real Kafka, the agent as a process.

Each test uses its own host ip (so its own keys) unless it is about the ip itself.
Tests that stop etcd use an etcd of their own, so the session's one stays up.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from devstack.stack import EtcdServer, etcd_binary, free_port
from logagent.cli.checks import check_etcd
from logagent.config.settings import AgentSettings, EtcdSettings, Settings, detect_ip, load
from logagent.control.etcd import SAVED_NAME, EtcdControl
from logagent.control.etcd_client import EtcdClient, connect
from logagent.runtime.backoff import Backoff
from tests.kit import (
    ETCD_ROOT_PASSWORD,
    ROOT,
    AgentProcess,
    KafkaReader,
    RecordingAgent,
    eventually,
    make_certs,
    new_topic,
    running,
    wait_until,
)

REVISION = "logagent_etcd_config_revision"


def unique_ip() -> str:
    return "127.{}.{}.{}".format(*(random.randint(1, 254) for _ in range(3)))


def collect_key(ip: str) -> str:
    return f"/logagent/{ip}/collect_log/config"


def sysinfo_key(ip: str) -> str:
    return f"/logagent/{ip}/collect_sysinfo/config"


def entries(*items: tuple[Path, str], start: str = "beginning") -> str:
    return json.dumps([{"path": str(p), "topic": t, "start": start} for p, t in items])


def applied(agent: AgentProcess, revision: int, timeout: float = 10.0) -> None:
    """Wait until the agent runs the configuration of `revision` (or a newer one)."""
    wait_until(lambda: agent.metric(REVISION) >= revision, timeout, what=f"agent at etcd revision {revision}")


def append(path: Path, lines: list[str]) -> None:
    with open(path, "a") as f:
        f.writelines(line + "\n" for line in lines)


@pytest.fixture
def kv(etcd: str) -> Iterator[EtcdClient]:
    """A client of the session's etcd, for the test's own puts."""
    with connect(EtcdSettings(address=(etcd,))) as client:
        yield client


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """An etcd for this test alone: it may be stopped and restarted (same port, same data)."""
    with running(EtcdServer(tmp_path / "own-etcd"), "a test etcd") as server:
        yield server


def logagent(*args: str, stdin: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "logagent", *args], cwd=ROOT, capture_output=True,
                          input=stdin.decode() if stdin is not None else None, text=True, timeout=timeout)


# ---------------------------------------------------------------------------- live changes

def test_put_starts_a_file_within_2s_and_removing_it_stops_it(make_agent, kafka, etcd, kv, logdir, tmp_path):
    ip = unique_ip()
    a, b = logdir / "a.log", logdir / "b.log"
    ta, tb = new_topic("a"), new_topic("b")
    kv.put(collect_key(ip), entries((a, ta)))
    agent = make_agent(etcd=etcd, ip=ip, data_dir=tmp_path / "data")
    append(a, [f"a{i}" for i in range(5)])
    with KafkaReader(kafka, ta) as ra, KafkaReader(kafka, tb) as rb:
        ra.read(5)
        # A new file: its lines are in Kafka within 2 s of the put.
        append(b, [f"b{i}" for i in range(5)])
        put_at = time.time()
        rev = kv.put(collect_key(ip), entries((a, ta), (b, tb)))
        msgs = rb.read(5, timeout=10)
        produced = max(m.timestamp()[1] for m in msgs) / 1000.0
        assert produced - put_at < 2.0, f"took {produced - put_at:.2f}s from put to Kafka"
        assert rb.data() == [f"b{i}" for i in range(5)]
        assert agent.metric(REVISION) == rev

        # Removing a.log's entry stops that file; b.log goes on.
        rev = kv.put(collect_key(ip), entries((b, tb)))
        applied(agent, rev)
        append(a, ["a after removal"])
        append(b, ["b after removal"])
        rb.read(6)
        ra.settle(quiet=1.5)
        assert ra.data() == [f"a{i}" for i in range(5)]

        # Deleting the key stops what it described.
        kv.delete(collect_key(ip))
        wait_until(lambda: "not set (revision" in agent.log_text(), 10, what="empty collect set applied")
        assert "WARNING logagent.etcd: " + collect_key(ip) + ": not set (revision" in agent.log_text()
        append(b, ["b after delete"])
        rb.settle(quiet=1.5)
        assert rb.data()[-1] == "b after removal"
    assert agent.stop() == 0


def test_topic_change_mid_stream_moves_lines_without_loss_or_duplicates(make_agent, kafka, etcd, kv, logdir,
                                                                        tmp_path):
    ip = unique_ip()
    log = logdir / "app.log"
    log.touch()
    t1, t2 = new_topic("old"), new_topic("new")
    kv.put(collect_key(ip), json.dumps([{"path": str(log), "topic": t1, "module": "m"}]))
    agent = make_agent(etcd=etcd, ip=ip, data_dir=tmp_path / "data")
    total = 1500
    lines = [f"line {i:05d}" for i in range(total)]
    switched = threading.Event()

    def writer() -> None:
        with open(log, "a") as f:
            for i, line in enumerate(lines):
                f.write(line + "\n")
                f.flush()
                if i == total // 3:
                    switched.set()
                time.sleep(0.001)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        switched.wait(10)
        rev = kv.put(collect_key(ip), json.dumps([{"path": str(log), "topic": t2, "module": "m"}]))
    finally:
        thread.join()
    applied(agent, rev)
    with KafkaReader(kafka, t1, t2) as reader:
        reader.read(total, timeout=30)
        reader.settle(quiet=1.5)
        by_topic = {t1: [], t2: []}  # type: dict[str, list[str]]
        for msg in reader.messages:
            by_topic[msg.topic()].append(json.loads(msg.value())["data"])
    old, new = by_topic[t1], by_topic[t2]
    assert old and new, (len(old), len(new))
    assert old + new == lines  # a clean split: none lost, none twice, order kept
    assert agent.stop() == 0


def test_bad_values_are_refused_while_the_rest_keeps_running(make_agent, kafka, etcd, kv, logdir, tmp_path):
    ip = unique_ip()
    key = collect_key(ip)
    good = logdir / "good.log"
    outside = tmp_path / "outside.log"  # not under [agent] allowed_paths
    outside.write_text("secret\n")
    topic, stolen = new_topic("good"), new_topic("stolen")
    kv.put(key, entries((good, topic)))
    agent = make_agent(etcd=etcd, ip=ip, data_dir=tmp_path / "data")
    with KafkaReader(kafka, topic) as reader:
        append(good, ["one"])
        reader.read(1)

        rev = kv.put(key, b'[{"path": "' + str(good).encode() + b'", "topic": ')  # not JSON
        wait_until(lambda: agent.metric("logagent_config_errors_total", key=key) == 1, 10, what="error counted")
        append(good, ["two"])
        reader.read(2)

        rev = kv.put(key, entries((good, topic), (outside, stolen)))
        applied(agent, rev)
        assert agent.metric("logagent_config_errors_total", key=key) == 2
        append(good, ["three"])
        reader.read(3)

        rev = kv.put(key, b"[" + b" " * (1024 * 1024 + 10) + b"]")  # over collect.MAX_VALUE_BYTES
        wait_until(lambda: agent.metric("logagent_config_errors_total", key=key) == 3, 10, what="error counted")
        append(good, ["four"])
        reader.read(4)
        assert reader.data() == ["one", "two", "three", "four"]
    with KafkaReader(kafka, stolen) as reader:
        reader.settle(quiet=1.0)
        assert reader.messages == []
    text = agent.log_text()
    assert f"{key}: not valid JSON" in text
    assert f"{key} entry 1 ('{outside}'): path '{outside}' is outside [agent] allowed_paths" in text
    assert "refused (limit 1048576)" in text
    assert "the last good configuration stays in force" in text
    assert agent.stop() == 0


# Values that slipped past validation and crashed the agent (exit 1 at start, a task crash live):
# each must now be refused with a one-line error while the last good configuration runs on.
CRASHERS = {
    "fields >= 2^64": lambda p: '[{"path": "%s", "topic": "t", "fields": {"n": 18446744073709551616}}]' % p,
    "fields 300 deep": lambda p: json.dumps([{"path": str(p), "topic": "t",
                                              "fields": {"d": json.loads("[" * 300 + "]" * 300)}}]),
    "max_lines NaN": lambda p: '[{"path": "%s", "topic": "t", "multiline": {"preset": "java", "max_lines": NaN}}]' % p,
    "max_lines Infinity": lambda p: '[{"path": "%s", "topic": "t", "multiline": {"pattern": "^ ", "max_lines": '
                                    'Infinity}}]' % p,
    "200,000 deep": lambda p: "[" * 200_000 + "]" * 200_000,
    "lone surrogate": lambda p: '[{"path": "%s", "topic": "t", "module": "\\udcff"}]' % p,
    "encoding idna": lambda p: '[{"path": "%s", "topic": "t", "encoding": "idna"}]' % p,
    "null": lambda p: "null",
    "UTF-16": lambda p: entries((p, "t")).encode("utf-16"),
}


def test_values_that_crashed_the_agent_are_refused_at_start_and_live(make_agent, kafka, etcd, kv, logdir,
                                                                      tmp_path):
    ip = unique_ip()
    key, skey = collect_key(ip), sysinfo_key(ip)
    log, topic = logdir / "app.log", new_topic("crash")
    data = tmp_path / "data"
    kv.put(key, entries((log, topic)))
    first = make_agent(etcd=etcd, ip=ip, data_dir=data)
    assert first.stop() == 0  # the good value is saved as the last good configuration

    # At start: the agent used to exit 1 here; now it runs the saved entries.
    kv.put(key, CRASHERS["fields >= 2^64"](log))
    kv.put(skey, '{"a":' * 150_000 + "1" + "}" * 150_000)  # 900 KB: under the size limit
    append(log, ["at start"])
    agent = make_agent(etcd=etcd, ip=ip, data_dir=data)
    with KafkaReader(kafka, topic) as reader:
        reader.read(1)
        text = agent.log_text()
        assert "fields cannot be sent as JSON: Integer exceeds 64-bit range" in text
        assert f"{skey}: not valid JSON: nested deeper than 64 levels" in text
        assert f"{key}: using the last good entries saved in" in text
        # Live: each is refused, counted, and collecting goes on.
        errors = agent.metric("logagent_config_errors_total", key=key)
        for n, (name, make) in enumerate(list(CRASHERS.items())[1:], 1):  # the first one is in force
            kv.put(key, make(log))
            wait_until(lambda: agent.metric("logagent_config_errors_total", key=key) >= errors + n, 10,  # noqa: B023
                       what=f"{name} refused")
        append(log, ["live"])
        reader.read(2)
        assert reader.data() == ["at start", "live"]
    assert agent.metric("logagent_task_crashes_total") == 0
    assert "Traceback" not in agent.log_text()
    assert "etcd values must be UTF-8 JSON" in agent.log_text()
    assert agent.stop() == 0

    # The CLI reads such values without crashing: `config show` prints them and why they are
    # refused, `check` fails on them.
    for name in ("200,000 deep", "lone surrogate", "fields >= 2^64"):
        kv.put(key, CRASHERS[name](log))
        shown = logagent("config", "show", "-c", str(agent.config))
        assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
        assert f"  # refused: {key}" in shown.stdout
        checked = logagent("check", "-c", str(agent.config), "--timeout", "5")
        assert checked.returncode == 1 and "Traceback" not in checked.stderr, checked.stderr
        assert any(line.startswith("FAIL etcd:") and key in line for line in checked.stdout.splitlines())


# ---------------------------------------------------------------------------- etcd outages

def test_etcd_restarted_while_the_agent_runs(make_agent, kafka, own_etcd, logdir, tmp_path):
    ip = unique_ip()
    log = logdir / "app.log"
    t1, t2 = new_topic("before"), new_topic("after")
    with connect(EtcdSettings(address=(own_etcd.endpoint,))) as client:
        client.put(collect_key(ip), entries((log, t1)))
    agent = make_agent(etcd=own_etcd.endpoint, ip=ip, data_dir=tmp_path / "data")
    assert agent.metric("logagent_etcd_up") == 1
    with KafkaReader(kafka, t1) as r1, KafkaReader(kafka, t2) as r2:
        append(log, ["up"])
        r1.read(1)
        own_etcd.stop()
        wait_until(lambda: agent.metric("logagent_etcd_up") == 0, 20, what="agent to see etcd gone")
        append(log, ["etcd down"])  # collecting goes on without etcd
        r1.read(2)
        own_etcd.start()
        # Changed as soon as etcd is back: whether the agent sees it by re-reading or by its
        # new watch, it must end up applied.
        with connect(EtcdSettings(address=(own_etcd.endpoint,))) as client:
            rev = client.put(collect_key(ip), entries((log, t2)))
        wait_until(lambda: agent.metric("logagent_etcd_up") == 1, 30, what="agent to reconnect")
        applied(agent, rev, timeout=20)
        append(log, ["etcd back"])
        r2.read(1)
        assert r1.data() == ["up", "etcd down"] and r2.data() == ["etcd back"]
        # And the watch works again after the outage.
        with connect(EtcdSettings(address=(own_etcd.endpoint,))) as client:
            rev = client.put(collect_key(ip), entries((log, t1)))
        applied(agent, rev)
        append(log, ["watch again"])
        r1.read(3)
    assert agent.metric("logagent_etcd_errors_total") >= 1
    assert "is back" in agent.log_text()
    assert agent.stop() == 0


def test_agent_started_while_etcd_is_down_runs_from_the_saved_config(make_agent, kafka, own_etcd, logdir,
                                                                     tmp_path):
    ip = unique_ip()
    log = logdir / "app.log"
    topic, later = new_topic("saved"), new_topic("later")
    data = tmp_path / "data"
    with connect(EtcdSettings(address=(own_etcd.endpoint,))) as client:
        client.put(collect_key(ip), entries((log, topic)))
        client.put(sysinfo_key(ip), json.dumps({"interval": 30, "enabled": False}))
    first = make_agent(etcd=own_etcd.endpoint, ip=ip, data_dir=data)
    assert first.stop() == 0
    saved = json.loads((data / SAVED_NAME).read_text())
    assert saved["collect"] == [{"path": str(log), "topic": topic, "start": "beginning"}]
    own_etcd.stop()

    append(log, ["while etcd is down"])
    started = time.monotonic()
    agent = make_agent(etcd=own_etcd.endpoint, ip=ip, data_dir=data)  # waits for /readyz
    assert time.monotonic() - started < 10
    assert agent.metric("logagent_etcd_up") == 0
    with KafkaReader(kafka, topic) as reader:
        reader.read(1)
        assert "while etcd is down" in reader.data()
    assert "using the last good configuration saved in" in agent.log_text()

    own_etcd.start()  # back: the agent connects in the background and follows etcd again
    with connect(EtcdSettings(address=(own_etcd.endpoint,))) as client:
        rev = client.put(collect_key(ip), entries((log, later), start="end"))
    wait_until(lambda: agent.metric("logagent_etcd_up") == 1, 30, what="agent to connect")
    applied(agent, rev, timeout=20)
    append(log, ["etcd is back"])
    with KafkaReader(kafka, later) as reader:
        reader.read(1)
        assert reader.data() == ["etcd is back"]
    assert agent.stop() == 0


# ---------------------------------------------------------------------------- identity and compatibility

def test_two_agents_follow_only_their_own_keys(make_agent, kafka, etcd, kv, logdir, tmp_path):
    ip1, ip2 = "127.0.0.1", "127.0.0.2"
    a, b = logdir / "a.log", logdir / "b.log"
    t1, t2, t3 = new_topic("one"), new_topic("two"), new_topic("three")
    try:
        kv.put(collect_key(ip1), entries((a, t1)))
        kv.put(collect_key(ip2), entries((b, t2)))
        one = make_agent(etcd=etcd, ip=ip1, data_dir=tmp_path / "data1")
        two = make_agent(etcd=etcd, ip=ip2, data_dir=tmp_path / "data2")
        append(a, ["for one"])
        append(b, ["for two"])
        with KafkaReader(kafka, t1) as r1, KafkaReader(kafka, t2) as r2:
            r1.read(1)
            r2.read(1)
            r1.settle(quiet=1.0)
            r2.settle(quiet=0.5)
            assert [(v["ip"], v["path"], v["data"]) for v in r1.values()] == [(ip1, str(a), "for one")]
            assert [(v["ip"], v["path"], v["data"]) for v in r2.values()] == [(ip2, str(b), "for two")]

        rev_one = one.metric(REVISION)
        rev = kv.put(collect_key(ip2), entries((b, t3), start="end"))
        applied(two, rev)
        assert one.metric(REVISION) == rev_one  # not its key: not its business
        append(b, ["moved"])
        with KafkaReader(kafka, t3) as r3:
            r3.read(1)
            assert r3.data() == ["moved"]
        assert one.stop() == 0 and two.stop() == 0
    finally:
        kv.delete(collect_key(ip1))
        kv.delete(collect_key(ip2))


def test_go_agent_config_and_values_work_unchanged(agents, kafka, etcd, kv, logdir, tmp_path):
    ip = detect_ip()  # the Go agent's file has no ip: the agent finds it, as the Go agent did
    key = f"/logagent/{ip}/collect_log/config"
    (logdir / "nginx").mkdir()
    access, app = logdir / "nginx" / "access.log", logdir / "app.log"
    web_log, app_log = new_topic("web_log"), new_topic("app_log")
    cfg = tmp_path / "go-config.ini"
    cfg.write_text(
        "[kafka]\n"
        f"address={kafka}\n"
        "chan_size=100000\n"
        "\n"
        "[etcd]\n"
        f"address={etcd}\n"
        "collect_log_key=/logagent/%s/collect_log/config\n"
        "\n"
        "[agent]\n"  # only what a test run needs: no /var/lib, no fixed port, logs in tmp
        f"data_dir={tmp_path / 'data'}\n"
        f"allowed_paths={logdir}/**\n"
        f"http_listen=127.0.0.1:{free_port()}\n"
    )
    value = ('[{"path":"%s","topic":"%s"},{"path":"%s","topic":"%s"}]'
             % (access, web_log, app, app_log)).encode()
    try:
        kv.put(key, value)
        agent = AgentProcess(cfg, tmp_path / "go-agent.log")
        agents.append(agent)
        agent.start()
        append(access, ['127.0.0.1 - - "GET / HTTP/1.1" 200'])
        append(app, ["app started"])
        with KafkaReader(kafka, web_log) as rw, KafkaReader(kafka, app_log) as ra:
            web, appm = rw.read(1)[0], ra.read(1)[0]
            for msg, data in ((web, '127.0.0.1 - - "GET / HTTP/1.1" 200'), (appm, "app started")):
                body = json.loads(msg.value())
                # The Go agent's consumers read {"ip", "data"}; the rest is extra.
                assert body["ip"] == ip and body["data"] == data
        assert kv.get(key)[0] == value  # untouched
        assert agent.stop() == 0
    finally:
        kv.delete(key)


# ---------------------------------------------------------------------------- sysinfo from etcd

async def test_sysinfo_key_put_calls_apply_sysinfo(etcd, kv, tmp_path):
    ip = unique_ip()
    cfg = tmp_path / "c.ini"
    cfg.write_text(f"[etcd]\naddress = {etcd}\n[agent]\nip = {ip}\ndata_dir = {tmp_path}\n"
                   "[sysinfo]\ninterval = 9\ntopic = from_ini\n")
    settings = load(cfg)

    agent = RecordingAgent()
    control = EtcdControl(settings, agent)
    await control.start()
    assert agent.sysinfo == [settings.sysinfo] and agent.collect == [[]]
    await asyncio.to_thread(kv.put, sysinfo_key(ip), '{"interval": 2, "topic": "from_etcd", "format": "influx"}')
    await eventually(lambda: len(agent.sysinfo) == 2, timeout=5.0)
    assert agent.sysinfo[-1] == replace(settings.sysinfo, interval=2.0, topic="from_etcd", format="influx")
    await asyncio.to_thread(kv.delete, sysinfo_key(ip))  # deleted: the [sysinfo] defaults
    await eventually(lambda: len(agent.sysinfo) == 3, timeout=5.0)
    assert agent.sysinfo[-1] == settings.sysinfo
    await control.stop()


def test_sysinfo_topic_set_by_the_cli_moves_the_host_metrics(make_agent, kafka, etcd, tmp_path):
    ip = unique_ip()
    t1, t2 = new_topic("sys1"), new_topic("sys2")
    agent = make_agent(etcd=etcd, ip=ip, data_dir=tmp_path / "data")
    cfg = str(agent.config)
    done = logagent("config", "set-sysinfo", "-c", cfg, "--interval", "1", "--topic", t1, "--enabled", "true")
    assert done.returncode == 0, done.stderr
    with KafkaReader(kafka, t1) as reader:
        msg = json.loads(reader.read(1, timeout=15)[0].value())
        assert msg["tags"]["ip"] == ip and msg["name"] in {"cpu", "mem", "swap", "disk", "diskio", "net", "system"}
    done = logagent("config", "set-sysinfo", "-c", cfg, "--topic", t2)
    assert done.returncode == 0, done.stderr
    with KafkaReader(kafka, t2) as reader:
        reader.read(1, timeout=15)
    assert agent.stop() == 0


# ---------------------------------------------------------------------------- the CLI

def test_config_cli_against_etcd(make_agent, kafka, etcd, kv, logdir, tmp_path):
    ip = unique_ip()
    key = collect_key(ip)
    agent = make_agent(etcd=etcd, ip=ip, data_dir=tmp_path / "data", start=False)
    cfg = str(agent.config)
    log, topic = logdir / "cli.log", new_topic("cli")
    kv.put(key, '[{"path":"%s/old.log","topic":"old"}]' % logdir)

    def written() -> tuple[bytes | None, int]:
        """The key's value and the revision it was written at (the store's revision moves with any
        write to this shared etcd: an earlier test's status key whose lease expires deletes it)."""
        snap = kv.read([key])
        return snap.values[key], snap.mod_revisions[key]

    stored, before = written()

    good = tmp_path / "good.json"
    good.write_text(entries((log, topic)) + "\n")
    done = logagent("config", "set-collect", "-c", cfg, "--dry-run", str(good))
    assert done.returncode == 0, done.stderr
    assert f"--- {key} (stored)" in done.stdout and f'+    "path": "{log}"' in done.stdout
    assert "not written" in done.stdout
    assert written() == (stored, before)  # nothing written: not even the key's revision moved

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"path": str(log), "topic": topic}, {"path": "/etc/passwd", "topic": "x"}]))
    done = logagent("config", "set-collect", "-c", cfg, str(bad))
    assert done.returncode == 2
    assert "/etc/passwd" in done.stderr and "allowed_paths" in done.stderr and "nothing written" in done.stderr
    assert written() == (stored, before)

    done = logagent("config", "set-collect", "-c", cfg, "-", stdin=good.read_bytes())
    assert done.returncode == 0, done.stderr
    assert kv.get(key)[0] == good.read_bytes().strip()
    assert logagent("config", "set-collect", "-c", cfg, str(good)).stdout.strip() == f"{key}: no change"

    done = logagent("config", "show", "-c", cfg)
    assert done.returncode == 0 and key in done.stdout and str(log) in done.stdout
    assert "(not set)  [sysinfo] defaults apply" in done.stdout
    other = logagent("config", "show", "-c", cfg, "--ip", "10.255.255.254")
    assert "/logagent/10.255.255.254/collect_log/config:\n  (not set)" in other.stdout

    agent.start()  # and the agent runs what the CLI wrote
    append(log, ["via cli"])
    with KafkaReader(kafka, topic) as reader:
        reader.read(1)
    assert agent.stop() == 0


def test_check_passes_on_the_live_stack_and_fails_on_a_wrong_kafka(make_agent, kafka, etcd, tmp_path):
    agent = make_agent(etcd=etcd, ip=unique_ip(), data_dir=tmp_path / "data", start=False)
    done = logagent("check", "-c", str(agent.config), "--timeout", "5")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   kafka" in done.stdout and f"ok   etcd: {etcd}: reachable" in done.stdout

    wrong = tmp_path / "wrong.ini"
    wrong.write_text(agent.config.read_text().replace(f"address = {kafka}", "address = 127.0.0.1:1"))
    done = logagent("check", "-c", str(wrong), "--timeout", "2")
    assert done.returncode == 1
    assert any(line.startswith("FAIL kafka: 127.0.0.1:1") for line in done.stdout.splitlines()), done.stdout

    no_etcd = tmp_path / "no-etcd.ini"
    no_etcd.write_text(agent.config.read_text().replace(f"address = {etcd}", f"address = 127.0.0.1:{free_port()}"))
    done = logagent("check", "-c", str(no_etcd), "--timeout", "2")
    assert done.returncode == 1
    assert any(line.startswith("FAIL etcd:") and "UNAVAILABLE" in line for line in done.stdout.splitlines())


def test_check_reports_symlinked_folders_outside_allowed_paths_and_strict_warnings(make_agent, kafka, etcd, kv,
                                                                                      logdir, tmp_path):
    ip = unique_ip()
    agent = make_agent(etcd=etcd, ip=ip, data_dir=tmp_path / "data", start=False)
    outside = tmp_path / "outside-secret-folder"
    outside.mkdir()
    (outside / "x.log").write_text("not for the agent\n")
    (logdir / "linked").symlink_to(outside)
    kv.put(collect_key(ip), json.dumps([{"path": f"{logdir}/linked/*.log", "topic": "t"},
                                        {"path": f"{logdir}/real.log", "topic": "t"}]))
    done = logagent("check", "-c", str(agent.config), "--timeout", "5")
    assert done.returncode == 1, done.stdout + done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("FAIL etcd:"))
    assert f"folder '{logdir}/linked' resolves through a symlink to a place outside [agent] allowed_paths" in line
    assert "has 2 good entries" in line and str(outside) not in done.stdout  # the target is not shown

    kv.put(collect_key(ip), entries((logdir / "real.log", "t")))
    typo = tmp_path / "typo.ini"
    typo.write_text(agent.config.read_text().replace("[agent]\n", "[agent]\nmax_open_file = 10\n"))
    done = logagent("check", "-c", str(typo), "--timeout", "5")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"ok   config: warning: {typo}: [agent] max_open_file: unknown key, ignored, did you mean " \
           "max_open_files?" in done.stdout
    done = logagent("check", "--strict", "-c", str(typo), "--timeout", "5")
    assert done.returncode == 1
    assert "FAIL config: warning:" in done.stdout and "ok   kafka" in done.stdout and "ok   etcd" in done.stdout


# ---------------------------------------------------------------------------- auth

async def test_username_and_password(auth_etcd, tmp_path):
    ip = unique_ip()
    base = tmp_path / "auth.ini"
    base.write_text(f"[etcd]\naddress = {auth_etcd.endpoint}\ntimeout = 3\nusername = root\n"
                    f"password = {ETCD_ROOT_PASSWORD}\n[agent]\nip = {ip}\ndata_dir = {tmp_path}\n"
                    f"allowed_paths = {tmp_path}/**\n")
    settings = load(base)
    ok, detail = check_etcd(settings, timeout=3)
    assert ok, detail

    wrong = replace(settings, etcd=replace(settings.etcd, password="wrong"))
    ok, detail = check_etcd(wrong, timeout=3)
    assert not ok and "authentication failed" in detail
    anonymous = replace(settings, etcd=replace(settings.etcd, username="", password=""))
    ok, detail = check_etcd(anonymous, timeout=3)
    assert not ok and "user name is empty" in detail

    value = entries((tmp_path / "x.log", "x"))
    done = logagent("config", "set-collect", "-c", str(base), "-", stdin=value.encode())
    assert done.returncode == 0, done.stderr

    agent = RecordingAgent()
    control = EtcdControl(settings, agent, backoff=Backoff(first=0.1, cap=0.5))
    await control.start()
    assert control.connected and agent.paths == [str(tmp_path / "x.log")]
    with connect(settings.etcd) as client:  # the watch carries the token too
        await asyncio.to_thread(client.put, collect_key(ip), entries((tmp_path / "y.log", "y")))
    await eventually(lambda: agent.paths == [str(tmp_path / "y.log")], timeout=5.0)
    await control.stop()


# ---------------------------------------------------------------------------- TLS

def settings_for(etcd_settings: EtcdSettings) -> Settings:
    return Settings(etcd=etcd_settings, agent=AgentSettings(ip="10.0.0.1", hostname="h"))


class TlsEtcdServer(EtcdServer):
    """etcd serving clients over TLS only, requiring a client certificate signed by the CA."""

    def __init__(self, workdir: Path, certs: dict[str, Path]) -> None:
        super().__init__(workdir)
        self.certs = certs
        self.client = EtcdSettings(address=(self.endpoint,), timeout=3, ca_cert=str(certs["ca.crt"]),
                                   cert_cert=str(certs["client.crt"]), cert_key=str(certs["client.key"]))

    def start(self, timeout: float = 30) -> None:
        url = f"https://127.0.0.1:{self.port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        self._spawn([etcd_binary(), "--name", "tls-test", "--data-dir", str(self.workdir / "data"),
                     "--listen-client-urls", url, "--advertise-client-urls", url,
                     "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                     "--initial-cluster", f"tls-test={peer}", "--log-level", "warn",
                     "--cert-file", str(self.certs["server.crt"]), "--key-file", str(self.certs["server.key"]),
                     "--trusted-ca-file", str(self.certs["ca.crt"]), "--client-cert-auth"])
        ok, detail = False, ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            ok, detail = check_etcd(settings_for(self.client), timeout=1)
            if ok:
                return
            time.sleep(0.2)
        self.stop(kill=True)
        pytest.fail(f"TLS etcd did not start: {detail}\n{self.log_tail()}", pytrace=False)


async def test_tls_with_a_client_certificate(tmp_path):
    certs = make_certs(tmp_path / "certs")
    server = TlsEtcdServer(tmp_path / "tls-etcd", certs)
    tls = server.client
    server.start()
    try:
        ip = unique_ip()
        cfg = tmp_path / "tls.ini"
        cfg.write_text(f"[etcd]\naddress = {server.endpoint}\ntimeout = 3\nca_cert = {certs['ca.crt']}\n"
                       f"cert_cert = {certs['client.crt']}\ncert_key = {certs['client.key']}\n"
                       f"[agent]\nip = {ip}\ndata_dir = {tmp_path}\nallowed_paths = {tmp_path}/**\n")
        value = entries((tmp_path / "tls.log", "tls"))
        done = logagent("config", "set-collect", "-c", str(cfg), "-", stdin=value.encode())
        assert done.returncode == 0, done.stderr
        done = logagent("config", "show", "-c", str(cfg))
        assert done.returncode == 0 and str(tmp_path / "tls.log") in done.stdout

        # Without a client certificate the server refuses; with plain text it is not understood.
        ok, detail = check_etcd(settings_for(replace(tls, cert_cert="", cert_key="")), timeout=2)
        assert not ok and "UNAVAILABLE" in detail
        ok, detail = check_etcd(settings_for(replace(tls, ca_cert="", cert_cert="", cert_key="")), timeout=2)
        assert not ok

        settings = load(cfg)
        agent = RecordingAgent()
        control = EtcdControl(settings, agent)
        await control.start()
        assert control.connected and agent.paths == [str(tmp_path / "tls.log")]
        with connect(settings.etcd) as client:
            await asyncio.to_thread(client.put, collect_key(ip), entries((tmp_path / "tls2.log", "tls")))
        await eventually(lambda: agent.paths == [str(tmp_path / "tls2.log")], timeout=5.0)
        await control.stop()
    finally:
        server.stop()
