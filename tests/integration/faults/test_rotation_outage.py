"""Rotation that meets an agent that is not reading (issue 13): files rotated away while the agent is
stopped, and rotated (and compressed, or deleted) while Kafka is down and the agent is killed. Every
scenario reads Kafka back line by line: nothing may be missing."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.delivery import tally, tally_delivered
from devstack.kafkaread import read_all
from tests.integration.faults.test_logrotate import Rotator, logrotate_binary
from tests.kit import AgentProcess, KafkaReader, LineWriter, new_topic, wait_until

FAST = {"agent": {"shutdown_timeout": "3", "registry_flush_interval": "0.5"}}


def _restart(agents: list[AgentProcess], agent: AgentProcess, wait_ready: bool = False) -> AgentProcess:
    """A new incarnation on the same config and data_dir, stopped at the end like the first."""
    again = AgentProcess(agent.config, agent.log_path)
    agents.append(again)
    again.start(wait_ready=wait_ready)
    if not wait_ready:
        wait_until(lambda: again.get("/healthz")[0] == 200, timeout=20, what="agent up again")
    return again


def _needs_own_broker(kafka_server: object) -> None:
    if kafka_server is None:
        pytest.fail("this test stops the broker: run it against the suite's own (unset LOGAGENT_TEST_KAFKA)")


def _lines(path: Path, name: str, start: int, count: int) -> list[str]:
    out = [f"{name} {i:08d}" for i in range(start, start + count)]
    with open(path, "a") as f:
        f.write("".join(line + "\n" for line in out))
    return out


def _shift(log: Path, keep: int) -> None:
    """What logrotate's rename rotation does: app.log.N -> .N+1, ..., app.log -> app.log.1."""
    for n in range(keep - 1, 0, -1):
        older = log.with_name(f"{log.name}.{n}")
        if older.exists():
            older.rename(log.with_name(f"{log.name}.{n + 1}"))
    log.rename(log.with_name(f"{log.name}.1"))


@pytest.mark.parametrize("rotations", [1, 3])
def test_rotated_while_the_agent_is_stopped(make_agent, agents, kafka, logdir, results, rotations):
    topic = new_topic("stopped")
    log = logdir / "svc.log"
    log.write_text("")
    agent = make_agent(files=[{"path": str(log), "topic": topic}])
    expected = _lines(log, "svc", 0, 100)
    with KafkaReader(kafka, topic) as reader:
        reader.read(100, timeout=30)
    assert agent.stop() == 0
    expected += _lines(log, "svc", 100, 100)  # written after the stop, before the rename
    for r in range(rotations):
        _shift(log, keep=rotations + 1)
        log.write_text("")
        expected += _lines(log, "svc", 200 + 100 * r, 100)
    again = _restart(agents, agent, wait_ready=True)
    with KafkaReader(kafka, topic) as reader:
        read_all(reader, len(expected), timeout=60, last=expected[-1])
        got = reader.data()
    t = tally(expected, got)
    results.add_tally(f"renamed {rotations}x while the agent was stopped (svc.log.1..{rotations})", t, 0.0)
    assert not t.missing and t.duplicated == 0, t.describe()
    firsts = list(dict.fromkeys(got))
    assert firsts == expected, "per path, the rotated files' lines come before the new file's"
    assert again.stop() == 0


def _create_racing_the_writer(log: Path, keep: int, name: str, start: int, count: int) -> tuple[list[str], Path]:
    """logrotate `create` losing the race to the application, as logrotate 3.21 handles it
    (createOutputFile): app.log is renamed to app.log.1, the application re-creates app.log and
    writes to it, logrotate's create (O_EXCL) finds it there, renames it to
    app.log-YYYYMMDDHH.backup and creates app.log again, empty. The lines written in between are in
    the .backup file only. Returns them and the .backup path."""
    _shift(log, keep)
    lines = _lines(log, name, start, count)  # the application, between the rename and the create
    backup = log.with_name(f"{log.name}-{time.strftime('%Y%m%d%H')}.backup")
    os.rename(log, backup)
    os.close(os.open(log, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    return lines, backup


@contextlib.contextmanager
def _frozen(agent: AgentProcess) -> Iterator[None]:
    """The agent stopped (SIGSTOP) for the block, as a loaded machine can hold it: whatever the
    block does to its files, it sees only the outcome."""
    assert agent.proc is not None
    os.kill(agent.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(agent.proc.pid, signal.SIGCONT)


@pytest.mark.parametrize("agent_state", ["running", "stopped", "kafka_down"])
def test_a_file_created_between_logrotates_rename_and_create_is_delivered(make_agent, agents, kafka, kafka_server,
                                                                          logdir, results, agent_state):
    """Issue 20 item 4: the writer re-created app.log between logrotate's rename and its create, so
    logrotate renamed that file to app.log-<date>.backup. It is one more generation of the path: its
    lines are delivered, in order between the renamed file's and the new file's, once each; with the
    agent running (held while the race happens, so it never sees the file under the path), stopped
    (a clean stop, started again after), or running with Kafka down."""
    if agent_state == "kafka_down":
        _needs_own_broker(kafka_server)
    topic = new_topic(f"backup-{agent_state}")
    log = logdir / "app.log"
    log.write_text("")
    agent = make_agent(files=[{"path": str(log), "topic": topic}], extra=FAST)
    expected = _lines(log, "first", 0, 100)
    with KafkaReader(kafka, topic) as reader:
        read_all(reader, len(expected), timeout=30, last=expected[-1])
    expected += _lines(log, "first", 100, 100)  # read, perhaps not acknowledged, when the race comes
    outage = contextlib.ExitStack()
    if agent_state == "kafka_down":
        kafka_server.stop()
        outage.callback(kafka_server.start)
    with outage:
        if agent_state == "stopped":
            assert agent.stop() == 0
            raced, backup = _create_racing_the_writer(log, 3, "raced", 0, 100)
        else:
            with _frozen(agent):
                raced, backup = _create_racing_the_writer(log, 3, "raced", 0, 100)
        expected += raced
        expected += _lines(log, "after", 0, 100)
        if agent_state == "stopped":
            agent = _restart(agents, agent, wait_ready=True)
        elif agent_state == "kafka_down":
            # The outage lasts until the agent has read every generation (or gave up on one: the tally
            # below tells which lines), so it found them while Kafka was down.
            with contextlib.suppress(AssertionError):
                wait_until(lambda: agent.metric("logagent_lines_read_total") >= len(expected), timeout=20,
                           what="the agent reading every file of the path")
    with KafkaReader(kafka, topic) as reader:
        read_all(reader, len(expected), timeout=90, last=expected[-1])
        got = reader.data()
    t = tally(expected, got)
    results.add_tally(f"logrotate create raced by the writer (app.log-<date>.backup), agent {agent_state}", t, 0.0)
    assert backup.exists() and backup.stat().st_size > 0
    assert not t.missing and not t.unexpected, t.describe()
    assert t.duplicated == 0, t.describe()
    assert list(dict.fromkeys(got)) == expected, "per path, the generations' lines come in the order written"
    assert agent.stop() == 0


def _logrotate_conf(folder: Path, log: Path, *options: str) -> tuple[Path, Path]:
    conf = folder / "logrotate.conf"
    conf.write_text(f"{log} {{\n" + "".join(f"    {o}\n" for o in options) + "}\n")
    return conf, folder / "logrotate.state"


def test_kafka_down_rotation_and_kills_together_lose_nothing(make_agent, agents, kafka, kafka_server, logdir,
                                                             tmp_path, results):
    """Issue 13's compound fault: 2,000 lines/s, logrotate create + compress + delaycompress every second,
    the broker down ~20 s, SIGKILL twice and SIGTERM once while it is down."""
    _needs_own_broker(kafka_server)
    topic = new_topic("compound")
    log = logdir / "app.log"
    log.write_text("")
    agent = make_agent(files=[{"path": str(log), "topic": topic}], extra=FAST)
    conf, state = _logrotate_conf(tmp_path, log, "create", "compress", "delaycompress", "rotate 100", "missingok")
    writer = LineWriter(log, "compound", rate=2000).start()
    rotator = Rotator(logrotate_binary(), conf, state).start()
    restarts = []
    try:
        time.sleep(4)
        kafka_server.stop()
        try:
            for kind in ("kill", "kill", "term"):
                time.sleep(5)
                if kind == "kill":
                    agent.kill()
                else:
                    assert agent.stop(timeout=15) == 0
                agent = _restart(agents, agent)
                restarts.append(kind)
            time.sleep(4)
        finally:
            kafka_server.start()
        time.sleep(6)
    finally:
        rotator.stop()
        writer.stop()
    t = tally_delivered(kafka, topic, writer, timeout=120)
    results.add_tally("Kafka down 20 s + logrotate create/compress/delaycompress every 1 s + "
                      "SIGKILL x2 and SIGTERM inside the outage, 2000 lines/s", t, 0.0,
                      notes=f"{rotator.runs} rotations, {len(rotator.races)} create(s) raced by the writer "
                            "(app.log-<date>.backup)")
    assert rotator.runs >= 20 and not rotator.errors, rotator.errors[:3]
    assert not t.missing, t.describe()
    assert not t.unexpected, t.describe()
    assert agent.stop() == 0


def test_compress_without_delaycompress_during_an_outage_then_a_restart(make_agent, agents, kafka, kafka_server,
                                                                        logdir, tmp_path, results):
    """The renamed file is gzipped and unlinked within milliseconds: only the agent's descriptor (and
    then its spool, or the .gz) still has the lines Kafka did not take."""
    _needs_own_broker(kafka_server)
    topic = new_topic("gzip")
    log = logdir / "app.log"
    log.write_text("")
    agent = make_agent(files=[{"path": str(log), "topic": topic}], extra=FAST)
    conf, state = _logrotate_conf(tmp_path, log, "create", "compress", "rotate 100", "missingok")
    writer = LineWriter(log, "gzip", rate=1000).start()
    try:
        time.sleep(2)
        kafka_server.stop()
        try:
            rotator = Rotator(logrotate_binary(), conf, state).start()
            time.sleep(8)
            assert agent.stop(timeout=15) == 0
            agent = _restart(agents, agent)
            time.sleep(3)
            rotator.stop()
        finally:
            kafka_server.start()
        time.sleep(3)
    finally:
        writer.stop()
    t = tally_delivered(kafka, topic, writer, timeout=120)
    results.add_tally("logrotate compress without delaycompress every 1 s while Kafka is down, then "
                      "SIGTERM and restart, 1000 lines/s", t, 0.0, notes=f"{rotator.runs} rotations")
    assert not t.missing and not t.unexpected, t.describe()
    assert t.duplicated == 0, t.describe()  # nothing was acknowledged before the stop: nothing twice
    assert agent.stop() == 0


def test_spool_full_is_counted_and_logged_and_other_files_flow(make_agent, agents, kafka, kafka_server, logdir,
                                                              results):
    _needs_own_broker(kafka_server)
    topic = new_topic("full")
    rotated, steady = logdir / "rotated.log", logdir / "steady.log"
    rotated.write_text("")
    steady.write_text("")
    extra = {"agent": {"spool_max_bytes": "65536", "shutdown_timeout": "3"}}
    agent = make_agent(files=[{"path": str(rotated), "topic": topic}, {"path": str(steady), "topic": topic}],
                       extra=extra)
    kafka_server.stop()
    try:
        lost_side = _lines(rotated, "rotated", 0, 20_000)  # ~340 KB: more than the 64 KiB spool
        wait_until(lambda: agent.metric("logagent_bytes_read_total", path=str(rotated)) >= 300_000,
                   timeout=20, what="the agent to read the file")
        rotated.unlink()  # deleted while Kafka has none of it: only the descriptor holds it
        wait_until(lambda: agent.metric("logagent_spool_refused_lines_total") > 0, timeout=20,
                   what="the spool's refusal to be counted")
        refused = agent.metric("logagent_spool_refused_lines_total")
        wait_until(lambda: "spool" in agent.log_text() and " ERROR " in agent.log_text(), timeout=10,
                   what="an ERROR about the full spool")
        kept = _lines(steady, "steady", 0, 1000)
        time.sleep(1)
        agent.kill()  # the descriptor is gone: what the spool could not keep is lost
        agent = _restart(agents, agent)
    finally:
        kafka_server.start()
    with KafkaReader(kafka, topic) as reader:
        read_all(reader, len(kept), timeout=60, last=kept[-1])
        reader.settle(quiet=3.0)
        got = reader.data()
    t_steady = tally(kept, [g for g in got if g.startswith("steady ")])
    t_rotated = tally(lost_side, [g for g in got if not g.startswith("steady ")])
    results.add_tally("spool full (64 KiB) while a deleted file's 20,000 lines wait for Kafka; kill -9",
                      t_rotated, 0.0, notes=f"spool refused {refused:.0f} lines; the other file: "
                                            f"{len(t_steady.missing)} missing")
    assert not t_steady.missing, t_steady.describe()
    assert 0 < len(t_rotated.missing) <= refused, (refused, t_rotated.describe())
    assert not t_rotated.unexpected
    assert agent.stop() == 0


def test_kill9_during_a_spool_write_loses_nothing_and_reads_nothing_twice(make_agent, agents, kafka, kafka_server,
                                                                          logdir, tmp_path, results):
    _needs_own_broker(kafka_server)
    topic = new_topic("spoolkill")
    log = logdir / "big.log"
    log.write_text("")
    data_dir = tmp_path / "data"
    agent = make_agent(files=[{"path": str(log), "topic": topic}], extra=FAST, data_dir=data_dir)
    spool = data_dir / "spool"
    expected: list[str] = []
    hits = 0
    kafka_server.stop()
    try:
        for round_ in range(4):
            expected += _lines(log, f"r{round_}", 0, 150_000)  # ~2.4 MB a round
            time.sleep(0.5)
            log.rename(log.with_name(f"big.log.{round_ + 1}"))  # the rotated copy stays: it is the truth
            log.write_text("")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # kill while a segment is being written, if we can see one
                if spool.exists() and any(p.suffix == ".tmp" for p in spool.rglob("*")):
                    hits += 1
                    break
            agent.kill()
            agent = _restart(agents, agent)
    finally:
        kafka_server.start()
    with KafkaReader(kafka, topic) as reader:
        read_all(reader, len(expected), timeout=120, last=expected[-1])
        got = reader.data()
    t = tally(expected, got)
    results.add_tally("kill -9 while rotated files are spooled (Kafka down), 4 rounds of 150,000 lines", t, 0.0,
                      notes=f"{hits} kill(s) landed while a spool segment was being written")
    assert not t.missing and not t.unexpected, t.describe()
    assert t.duplicated == 0, t.describe()  # Kafka had nothing before the last restart: nothing twice
    assert agent.stop() == 0
    wait_until(lambda: not spool.exists() or not any(p.is_file() for p in spool.rglob("*")), timeout=10,
               what="the spool to be emptied once Kafka has everything")
