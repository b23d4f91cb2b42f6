"""exactly_once under faults (docs/delivery.md#exactly-once): kill -9 at random moments with
logrotate running and a Kafka restart; a transaction aborted by force; two agents with one id.

A read_committed consumer must see every line exactly once, in order; a read_uncommitted one
every line at least once."""

from __future__ import annotations

import itertools
import os
import random
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from devstack.stack import KafkaServer
from tests.integration.faults.conftest import shown_logs
from tests.integration.faults.helpers import RSS_LIMIT_MB, PeakTracker
from tests.integration.faults.test_logrotate import Rotator, logrotate_binary
from tests.integration.faults.test_rotation_outage import FAST, _lines, _needs_own_broker, _restart
from tests.integration.test_exactly_once import eos as exactly_once
from tests.kit import KafkaReader, LineWriter, new_topic, read_all, running, tally, wait_delivered, wait_until

RATE = 2500  # lines per second
KILLS = 20
TXN_TIMEOUT_MS = 6000  # [kafka.producer] transaction.timeout.ms of the forced-abort test
ABORT_INTERVAL = "3.0"  # its transaction_interval: the broker stops well inside an open transaction


def _seed() -> int:
    seed = int(os.environ.get("FAULTS_SEED", str(int(time.time()))))
    print(f"random seed {seed} (FAULTS_SEED={seed} repeats the same moments)")
    return seed


def eos(**kafka: str) -> dict[str, dict[str, str]]:
    """test_exactly_once.eos with a commit every 0.2 s."""
    return exactly_once("0.2", **kafka)


def committed_and_uncommitted(bootstrap: str, topic: str, writer: LineWriter
                              ) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """The lines of `topic` as a read_committed and as a read_uncommitted consumer see them, and
    the messages the latter read."""
    return both_isolations(bootstrap, topic, writer.count, writer.line(writer.count - 1))


def both_isolations(bootstrap: str, topic: str, count: int, last: str
                    ) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """committed_and_uncommitted for `count` messages whose last carries the data `last`."""
    out = []
    for isolation in ("read_committed", "read_uncommitted"):
        with KafkaReader(bootstrap, topic, isolation=isolation) as reader:
            read_all(reader, count, timeout=90, last=last)
            out.append(reader.values())
    return [v["data"] for v in out[0]], [v["data"] for v in out[1]], out[1]


def dedup(messages: list[dict[str, Any]]) -> list[str]:
    """What a consumer without transactions keeps when it drops every message whose msgid it has
    seen (docs/messages.md); fails if one msgid ever stood for two different lines."""
    kept: dict[str, str] = {}
    for m in messages:
        line = kept.setdefault(m["msgid"], m["data"])
        assert line == m["data"], f"msgid {m['msgid']} stands for {line!r} and {m['data']!r}"
    return list(kept.values())


def repeated_under_other_msgids(messages: list[dict[str, Any]], limit: int = 5) -> str:
    """The lines that came under more than one msgid (what dropping seen msgids cannot remove),
    with their msgids and offsets: what a failure has to show."""
    ids: dict[str, list[str]] = {}
    for m in messages:
        seen = ids.setdefault(m["data"], [])
        if m["msgid"] not in seen:
            seen.append(m["msgid"])
    repeated = [(line, found) for line, found in ids.items() if len(found) > 1]
    return f"{len(repeated)} lines under 2+ msgids, e.g. " + "; ".join(
        f"{line[:40]!r}: {found}" for line, found in repeated[:limit])


def around_break(bootstrap: str, topic: str, writer: LineWriter) -> str:
    """For an order failure: the committed messages where the order first breaks, with their msgid
    (file uid and offset) and path, read again."""
    with KafkaReader(bootstrap, topic, isolation="read_committed") as reader:
        read_all(reader, writer.count, timeout=90, last=writer.line(writer.count - 1))
        docs = reader.values()
    place = {line: i for i, line in enumerate(writer.expected())}
    lines = [d for d in docs if d["data"] in place]
    at = next((i for i, (a, b) in enumerate(itertools.pairwise(lines)) if place[b["data"]] != place[a["data"]] + 1),
              None)
    if at is None:
        return ""
    window = lines[max(0, at - 2):at + 3]
    ends = [i for i, (a, b) in enumerate(itertools.pairwise(lines)) if place[b["data"]] < place[a["data"]]]
    back = lines[ends[0]:ends[0] + 2] if ends else []
    show = [f"{d['data']} msgid={d.get('msgid')} offset={d.get('offset')}" for d in window + back]
    return "\n  " + "\n  ".join(show)


def order_problem(expected: list[str], got: list[str]) -> str | None:
    """None when `got` holds `expected`'s lines in its order; else where the order first breaks, how
    many lines are out of place and which ran ahead (for the failure's message)."""
    wanted = set(expected)
    seen = [line for line in got if line in wanted]
    if seen == expected:
        return None
    pairs = zip(seen, expected, strict=False)
    first = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(seen), len(expected)))
    place = {line: i for i, line in enumerate(expected)}
    behind = sum(1 for a, b in itertools.pairwise(seen) if place[b] < place[a])
    return (f"{behind} place(s) where a line came after a later one; first difference at position {first}: got "
            f"{seen[max(0, first - 2):first + 4]}, expected {expected[max(0, first - 2):first + 4]}")


def test_kill9_twenty_times_with_logrotate_and_a_kafka_restart(make_agent, kafka, kafka_server, logdir, tmp_path,
                                                                results):
    if kafka_server is None:
        pytest.fail("this test restarts the broker: run it against the suite's own (unset LOGAGENT_TEST_KAFKA)")
    rng = random.Random(seed := _seed())
    topic = new_topic("eos-kill9")
    log = logdir / "app.log"
    log.touch()
    conf = tmp_path / "logrotate.conf"
    conf.write_text(f"{log} {{\n    create\n    rotate 200\n    compress\n    missingok\n}}\n")
    agent = make_agent(files=[{"path": str(log), "topic": topic}], extra=eos())
    peak = PeakTracker()
    writer = LineWriter(log, "eos-kill9", rate=RATE).start()
    rotator = Rotator(logrotate_binary(), conf, tmp_path / "logrotate.state", interval=2.0).start()
    restart_at = KILLS // 2
    try:
        for kill in range(KILLS):
            if kill == restart_at:
                kafka_server.stop()
                time.sleep(3.0)
                kafka_server.start()
            time.sleep(rng.uniform(0.3, 2.5))  # a random moment: often inside a commit (every 0.2 s)
            peak.sample(agent)
            agent.kill()
            agent.start(timeout=60)
        time.sleep(2.0)
    finally:
        rotator.stop()
        writer.stop()
    assert not rotator.errors, f"logrotate failed: {rotator.errors[:3]}"
    committed, uncommitted, messages = committed_and_uncommitted(kafka, topic, writer)
    t = tally(writer.expected(), committed)
    u = tally(writer.expected(), uncommitted)
    d = tally(writer.expected(), dedup(messages))
    peak.sample(agent)
    results.add_tally(f"exactly_once: kill -9 x{KILLS}, logrotate create+compress every 2 s, a Kafka restart, "
                      f"{RATE} lines/s (read_committed)", t, peak.peak,
                      notes=f"read_uncommitted: {u.duplicated} duplicates, {len(u.missing)} missing; "
                            f"{rotator.runs} rotations; FAULTS_SEED={seed}")
    assert not t.missing and not t.unexpected and t.duplicated == 0, t.describe()
    problem = order_problem(writer.expected(), committed)
    assert problem is None, f"read_committed: lines out of order: {problem}{around_break(kafka, topic, writer)}"
    assert not u.missing and not u.unexpected, u.describe()
    assert not d.missing and not d.unexpected and d.duplicated == 0, (  # msgid dedup: exactly once
        f"{d.describe()}; {repeated_under_other_msgids(messages)}")
    assert peak.peak < RSS_LIMIT_MB
    assert agent.stop() == 0


@pytest.fixture(scope="module")
def quick_abort_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaServer]:
    """A broker of its own whose transaction coordinator looks for timed-out transactions every
    0.5 s (Kafka's default: 10 s), so that a forced abort happens at a known moment."""
    server = KafkaServer(tmp_path_factory.mktemp("abort-kafka"), extra_props={
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": "500"})
    with shown_logs(server.log_path), running(server, "the forced-abort test's broker"):
        yield server


def stop_inside_an_open_transaction(kafka: KafkaServer, topic: str) -> None:
    """Stop the broker just after a commit, once lines of the next transaction are in its log: that
    transaction, open for about another transaction_interval, is the one the coordinator must abort,
    and its lines, written once, must come again. (Stopped at any moment, the open transaction had
    at times nothing written yet, and no line was seen twice: 1 of 8 runs.)"""
    with KafkaReader(kafka.bootstrap, topic) as done, \
            KafkaReader(kafka.bootstrap, topic, isolation="read_uncommitted") as raw:
        done.read(1000, timeout=30)
        done.settle(quiet=0.5)  # every line of the commits so far: the next poll that gets any is a commit
        wait_until(lambda: done.poll(0.1) > 0, timeout=30, what="a commit")
        committed = len(done.settle(quiet=0.3))
        wait_until(lambda: raw.poll(0.1) >= 0 and len(raw.messages) >= committed + 100, timeout=10,
                   what="lines of the transaction after it in the log")
    kafka.stop()


def test_a_transaction_aborted_by_force_rewinds_and_is_sent_again(make_agent, quick_abort_kafka, logdir, results):
    """The broker stops with a transaction open, and the agent is held (SIGSTOP) until the restarted
    coordinator has aborted it for its transaction.timeout.ms: the agent learns it (librdkafka says
    fenced), sees from the host's transaction record that no other agent took over, makes new
    producers, and rewinds the file to its last committed offset; those lines go again in a new
    transaction."""
    kafka = quick_abort_kafka
    topic = new_topic("eos-abort")
    log = logdir / "app.log"
    log.touch()
    agent = make_agent(files=[{"path": str(log), "topic": topic}],
                       extra={"kafka": eos(transaction_interval=ABORT_INTERVAL)["kafka"] | {"address": kafka.bootstrap},
                              "kafka.producer": {"transaction.timeout.ms": str(TXN_TIMEOUT_MS)}})
    writer = LineWriter(log, "eos-abort", rate=1000).start()
    assert agent.proc is not None
    try:
        stop_inside_an_open_transaction(kafka, topic)
        os.kill(agent.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(TXN_TIMEOUT_MS / 1000 + 1)
            kafka.start()
            time.sleep(3.0)  # the coordinator has loaded its log and aborted what timed out
        finally:
            os.kill(agent.proc.pid, signal.SIGCONT)
        wait_until(lambda: agent.metric("logagent_kafka_transactions_total", outcome="aborted") >= 1, timeout=60,
                   what="the agent to count the aborted transaction")
        time.sleep(2.0)
    finally:
        writer.stop()
    committed, uncommitted, messages = committed_and_uncommitted(kafka.bootstrap, topic, writer)
    t = tally(writer.expected(), committed)
    u = tally(writer.expected(), uncommitted)
    text = agent.log_text()
    results.add_tally("exactly_once: broker stopped and agent held past transaction.timeout.ms (forced abort), "
                      "1000 lines/s (read_committed)", t, 0.0,
                      notes=f"read_uncommitted: {u.duplicated} lines twice (the aborted transaction's, sent again)")
    assert "new producers; transactions up to" in text, text[-3000:]
    assert "another agent took over" not in text  # librdkafka's own lines say "fenced" at CRITICAL: it cannot tell
    assert not t.missing and not t.unexpected and t.duplicated == 0, t.describe()
    problem = order_problem(writer.expected(), committed)
    assert problem is None, f"read_committed: lines out of order: {problem}{around_break(kafka, topic, writer)}"
    assert not u.missing and u.duplicated > 0, u.describe()  # the aborted lines were written, then sent again
    d = tally(writer.expected(), dedup(messages))
    assert not d.missing and d.duplicated == 0, d.describe()
    assert agent.alive()
    assert agent.stop() == 0


def test_two_agents_with_one_id_the_older_is_fenced_and_exits_3(make_agent, kafka, logdir, tmp_path):
    topic = new_topic("eos-fence")
    a_log, b_log = logdir / "a.log", logdir / "b.log"
    a_log.touch()
    b_log.touch()
    extra = eos()
    older = make_agent(files=[{"path": str(a_log), "topic": topic}], extra=extra, data_dir=tmp_path / "a")
    writers = [LineWriter(a_log, "fence-a", rate=500).start(), LineWriter(b_log, "fence-b", rate=500).start()]
    try:
        with KafkaReader(kafka, topic) as reader:
            reader.read(200, timeout=30)
        newer = make_agent(files=[{"path": str(b_log), "topic": topic}], extra=extra, data_dir=tmp_path / "b")
        assert older.proc is not None
        code = wait_until(lambda: older.proc.poll(), timeout=60, what="the older agent to exit")  # type: ignore[union-attr]
        with KafkaReader(kafka, topic) as reader:
            before = writers[1].count
            wait_until(lambda: reader.poll(0.3) is not None and any(
                v.get("data") == writers[1].line(before) for v in reader.values()), timeout=30,
                what="the newer agent to go on shipping")
    finally:
        for w in writers:
            w.stop()
    assert code == 3, older.log_tail()
    assert "CRITICAL" in older.log_text() and "another agent took over" in older.log_text()
    assert newer.alive() and "CRITICAL" not in newer.log_text()
    assert newer.stop() == 0


# ---------------------------------------------------------------- the "keep their guarantees in this mode"

ML_KILLS = ("open", "committed", "open", "committed", "open")  # where each round's events are at the kill
ML_EVENTS = 200  # complete events written before each round's open one
ML_INTERVAL = "2.5"  # transaction_interval: an "open" kill lands well inside the transaction


def java_event(i: int) -> list[str]:
    """Event i as the java preset joins it: a single line, or a head with frames (and a cause)."""
    if i % 4 == 0:
        return [f"ev {i:06d} single"]
    lines = [f"ev {i:06d} head: java.lang.IllegalStateException"]
    lines += [f"\tat com.example.F{j}.run(F.java:{i % 97})" for j in range(1 + i % 3)]
    if i % 2:
        lines += [f"Caused by: java.io.IOException: cause of {i:06d}", "\t... 3 more"]
    return lines


def straddling_event(i: int) -> tuple[list[str], list[str]]:
    """Event i in two parts: what is written before the kill, and its last lines, written after."""
    return ([f"ev {i:06d} head: across a kill", "\tat com.example.A.run(A.java:1)", "\tat com.example.B.run(B.java:2)"],
            [f"Caused by: java.io.IOException: cause of {i:06d}", "\t... 7 more"])


def _append(path: Any, lines: list[str]) -> None:
    with open(path, "a") as f:
        f.write("".join(line + "\n" for line in lines))


def test_multiline_events_across_kill9_each_once_and_whole(make_agent, kafka, logdir, results):
    """Issue 24: multiline events keep their guarantee in exactly_once. In each of 5 rounds, 200
    events are written, then the head and first frames of one more (open: the java preset waits for
    its next lines); once the agent has read that head (the event before it is in Kafka), it is
    killed -9 and the event's last lines are written, then the agent starts again. The kill comes
    while the transaction with the round's events is open ("open": read_uncommitted has them, it is
    aborted at the restart and they are sent again) or once it committed ("committed": the offset
    committed with them must stop at the open event). A read_committed consumer must see every
    event once, whole (none cut at a kill, no fragment), in order."""
    rng = random.Random(seed := _seed())
    topic = new_topic("eos-multiline")
    log = logdir / "app.log"
    log.touch()
    agent = make_agent(files=[{"path": str(log), "topic": topic, "multiline": {"preset": "java", "timeout": 60}}],
                       extra=eos(transaction_interval=ML_INTERVAL))
    expected: list[str] = []
    i = 0
    with KafkaReader(kafka, topic, isolation="read_uncommitted") as raw, KafkaReader(kafka, topic) as done:
        for kill in ML_KILLS:
            events = [java_event(n) for n in range(i, i + ML_EVENTS)]
            before, after = straddling_event(i + ML_EVENTS)
            _append(log, [line for event in events for line in event] + before)
            expected += ["\n".join(event) for event in events]
            wait_delivered(raw if kill == "open" else done, f"ev {i + ML_EVENTS - 1:06d} ", timeout=30,
                           what=f"the event before the open one in Kafka ({kill})")
            time.sleep(rng.uniform(0.0, 0.2))  # the kill's moment, not a wait
            agent.kill()
            _append(log, after)
            expected.append("\n".join(before + after))
            i += ML_EVENTS + 1
            agent.start(timeout=60)
    events = [java_event(n) for n in range(i, i + 50)]
    _append(log, [line for event in events for line in event] + ["ev end"])  # "ev end" ends the last event
    expected += ["\n".join(event) for event in events]
    committed, uncommitted, messages = both_isolations(kafka, topic, len(expected), expected[-1])
    t = tally(expected, committed)
    u = tally(expected, uncommitted)
    results.add_tally(f"exactly_once: java multiline events, kill -9 x{len(ML_KILLS)} each with an event open "
                      "across it, 3 inside an open transaction (read_committed)", t, 0.0,
                      notes=f"read_uncommitted: {u.duplicated} events twice (the open transactions'); "
                            f"FAULTS_SEED={seed}")
    assert not t.missing and not t.unexpected and t.duplicated == 0, t.describe()
    assert committed == expected, "read_committed: every event once, in order"
    assert not u.missing and not u.unexpected, u.describe()  # never a fragment, even in an aborted transaction
    assert u.duplicated > 0, "no kill landed inside an open transaction: the test did not test that"
    d = tally(expected, dedup(messages))
    assert not d.missing and d.duplicated == 0, d.describe()
    assert agent.stop() == 0


def test_spool_through_kill9_and_a_kafka_outage_each_line_once(make_agent, agents, kafka, kafka_server, logdir,
                                                               results):
    """Issue 24: the spool keeps its guarantee in exactly_once. Kafka stops; 5,000 lines are written
    and read; the file is renamed, a new one created and written, the renamed one deleted: only
    the agent's descriptor, then its spool, holds those lines. Once the spool has them the agent is
    killed -9, Kafka comes back, the agent starts again: a read_committed consumer sees every line
    (before the outage, the deleted file's, the new file's, after the restart) once, in order."""
    _needs_own_broker(kafka_server)
    topic = new_topic("eos-spool")
    log = logdir / "app.log"
    log.touch()
    agent = make_agent(files=[{"path": str(log), "topic": topic}], extra={**eos(), **FAST})
    expected = _lines(log, "pre", 0, 500)
    with KafkaReader(kafka, topic) as reader:
        reader.read(len(expected), timeout=30)
    wait_until(lambda: agent.metric("logagent_unacked_bytes") == 0, timeout=10, what="every commit acknowledged")
    kafka_server.stop()
    try:
        out = _lines(log, "out", 0, 5000)
        owed = len("".join(line + "\n" for line in out))
        wait_until(lambda: agent.metric("logagent_bytes_read_total", path=str(log)) >= log.stat().st_size,
                   timeout=20, what="the agent to read the file")
        rotated = log.with_name("app.log.1")
        log.rename(rotated)
        new = _lines(log, "new", 0, 500)
        rotated.unlink()  # deleted while Kafka has none of it: the descriptor holds it, then the spool
        wait_until(lambda: agent.metric("logagent_spool_bytes") >= owed, timeout=20,
                   what="the deleted file's unacknowledged bytes in the spool")
        agent.kill()
    finally:
        kafka_server.start()
    agent = _restart(agents, agent, wait_ready=True)
    after = _lines(log, "after", 0, 500)
    expected += out + new + after
    committed, uncommitted, _ = both_isolations(kafka, topic, len(expected), expected[-1])
    t = tally(expected, committed)
    results.add_tally("exactly_once: Kafka down, 5,000 lines of a renamed and deleted file only in the spool, "
                      "kill -9, Kafka back, restart (read_committed)", t, 0.0,
                      notes=f"read_uncommitted: {tally(expected, uncommitted).duplicated} duplicates")
    assert not t.missing and not t.unexpected and t.duplicated == 0, t.describe()
    assert committed == expected, "read_committed: every line once, the deleted file's before the new file's"
    assert agent.metric("logagent_rotated_files_recovered_total", source="spool") == 1
    wait_until(lambda: agent.metric("logagent_spool_bytes") == 0, timeout=20,
               what="the spool emptied once the deleted file's lines are committed")
    assert agent.stop() == 0
