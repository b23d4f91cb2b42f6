"""etcd fails under load: down for 30 s with a config change right after; values that are bad."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.stack import EtcdServer
from logagent.config.settings import EtcdSettings
from logagent.control.etcd_client import connect
from tests.integration.faults.conftest import shown_logs
from tests.integration.faults.helpers import RSS_LIMIT_MB, PeakTracker
from tests.kit import (
    KafkaReader,
    LineWriter,
    new_topic,
    read_all,
    running,
    tally,
    tally_delivered,
    wait_delivered,
    wait_until,
)

DOWN_SECONDS = 30
REVISION = "logagent_etcd_config_revision"


def unique_ip() -> str:
    return "127.{}.{}.{}".format(*(random.randint(1, 254) for _ in range(3)))


def collect_key(ip: str) -> str:
    return f"/logagent/{ip}/collect_log/config"


def put(endpoint: str, key: str, value: str | bytes) -> int:
    with connect(EtcdSettings(address=(endpoint,)), timeout=10) as client:
        return client.put(key, value)


def test_etcd_down_30s_under_load_then_config_change(make_agent, kafka, etcd, etcd_server, logdir, tmp_path,
                                                     results):
    if etcd_server is None:
        pytest.fail("this test stops etcd: run it against the suite's own (unset LOGAGENT_TEST_ETCD)")
    rate = 1000
    ip = unique_ip()
    a, b = logdir / "a.log", logdir / "b.log"
    a.touch()
    t1, t2, t3 = new_topic("etcd-a"), new_topic("etcd-a2"), new_topic("etcd-b")
    put(etcd, collect_key(ip), json.dumps([{"path": str(a), "topic": t1, "start": "beginning"}]))
    agent = make_agent(etcd=etcd, ip=ip, data_dir=tmp_path / "data")
    peak = PeakTracker()
    wa = LineWriter(a, "ea", rate=rate).start()
    wb = LineWriter(b, "eb", rate=rate)
    try:
        with KafkaReader(kafka, t1) as r1:
            r1.read(300, timeout=30)
            etcd_server.stop()
            down_at = time.monotonic()
            try:
                wait_until(lambda: agent.metric("logagent_etcd_up") == 0, timeout=30, what="etcd_up = 0")
                # Shipping goes on during the outage: a line written 20 s into it is in Kafka in 10 s.
                time.sleep(max(0.0, 20 - (time.monotonic() - down_at)))
                marker = wa.line(wa.count - 1)
                lag = wait_delivered(r1, marker, timeout=10, what="lines written while etcd is down")
                time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - down_at)))
                assert agent.alive(), agent.log_tail()
                peak.sample(agent)
            finally:
                etcd_server.start()
        # Right after etcd is back: move a.log to another topic and add b.log.
        wb.start()
        rev = put(etcd, collect_key(ip), json.dumps([{"path": str(a), "topic": t2, "start": "beginning"},
                                                     {"path": str(b), "topic": t3, "start": "beginning"}]))
        put_at = time.monotonic()
        wait_until(lambda: agent.metric(REVISION) >= rev, timeout=60, what=f"the agent at revision {rev}")
        applied_after = time.monotonic() - put_at
        with KafkaReader(kafka, t3) as r3:
            r3.read(200, timeout=30)
        time.sleep(1.0)
    finally:
        wa.stop()
        wb.stop()
    with KafkaReader(kafka, t1, t2) as ra, KafkaReader(kafka, t3) as rb:
        read_all(ra, wa.count, timeout=60, last=wa.line(wa.count - 1))
        read_all(rb, wb.count, timeout=60, last=wb.line(wb.count - 1))
        got_a, got_b = ra.data(), rb.data()
        moved = sum(1 for m in ra.messages if m.topic() == t2)
    peak.sample(agent)
    ta, tb = tally(wa.expected(), got_a), tally(wb.expected(), got_b)
    results.add_tally(f"etcd stopped {DOWN_SECONDS} s under load ({rate} lines/s), a.log", ta, peak.peak,
                      notes=f"line written 20 s into the outage in Kafka after {lag:.1f} s; "
                            f"{moved} lines went to the new topic")
    results.add_tally("etcd back, then put: a.log retargeted, b.log added", tb, peak.peak,
                      notes=f"change applied {applied_after:.1f} s after the put")
    assert not ta.missing, ta.describe()
    assert ta.duplicated == 0, ta.describe()
    assert moved > 0, "a.log's lines never moved to the new topic"
    assert not tb.missing, tb.describe()
    assert tb.duplicated == 0, tb.describe()
    assert peak.peak < RSS_LIMIT_MB
    assert agent.stop() == 0


def test_topic_change_that_drops_start_resends_nothing(make_agent, kafka, etcd, logdir, tmp_path, results):
    """An entry whose topic changes and whose `start` is dropped (beginning -> the default, end): `start`
    only decides where a file without a saved offset begins, so the running file must be retargeted in
    place, with nothing re-read (docs/etcd-keys.md). Batches are kept in flight (linger.ms 1500) when
    the change arrives, so re-reading them would show as duplicates."""
    ip = unique_ip()
    log = logdir / "app.log"
    log.touch()
    t1, t2 = new_topic("start-a"), new_topic("start-b")
    put(etcd, collect_key(ip), json.dumps([{"path": str(log), "topic": t1, "start": "beginning"}]))
    agent = make_agent(etcd=etcd, ip=ip, data_dir=tmp_path / "data", extra={"kafka.producer": {"linger.ms": "1500"}})
    peak = PeakTracker()
    with open(log, "a") as f:
        f.write("".join(f"start {i:04d}\n" for i in range(200)))
    wait_until(lambda: agent.metric("logagent_lines_read_total", path=str(log)) >= 200, timeout=10,
               what="the lines read (and in flight: linger.ms 1500)")
    rev = put(etcd, collect_key(ip), json.dumps([{"path": str(log), "topic": t2}]))
    wait_until(lambda: agent.metric(REVISION) >= rev, timeout=30, what=f"the agent at revision {rev}")
    with open(log, "a") as f:
        f.write("".join(f"start {i:04d}\n" for i in range(200, 300)))
    expected = [f"start {i:04d}" for i in range(300)]
    with KafkaReader(kafka, t1, t2) as reader:
        read_all(reader, 300, timeout=30, last=expected[-1])
        got = reader.data()
    peak.sample(agent)
    t = tally(expected, got)
    how = "retargeted in place" if "retargeted" in agent.log_text() else \
        "tailer restarted ('restarted ... with new reading options')"
    results.add_tally("etcd change: topic moved and `start` dropped while batches are in flight", t, peak.peak,
                      notes=how)
    assert not t.missing, t.describe()
    assert t.duplicated == 0, f"{how}: {t.describe()}"
    assert agent.stop() == 0


@pytest.fixture
def big_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """An etcd of this test's own that takes 16 MiB requests (the default limit is 1.5 MiB)."""
    server = EtcdServer(tmp_path / "big-etcd")
    server.extra_args = ["--max-request-bytes", str(16 * 1024 * 1024)]
    with shown_logs(server.log_path), running(server, "a test etcd"):
        yield server


def test_etcd_value_of_10mb_and_value_not_json(make_agent, kafka, big_etcd, logdir, tmp_path, results):
    """Each bad value: an error naming the key and the problem, a config-error metric, the last
    good configuration stays in force (good.log keeps flowing), and the next good value applies."""
    rate = 500
    ip = unique_ip()
    key = collect_key(ip)
    endpoint = big_etcd.endpoint
    good, later = logdir / "good.log", logdir / "later.log"
    good.touch()
    t_good, t_later = new_topic("good"), new_topic("later")
    good_value = [{"path": str(good), "topic": t_good, "start": "beginning"}]
    put(endpoint, key, json.dumps(good_value))
    agent = make_agent(etcd=endpoint, ip=ip, data_dir=tmp_path / "data")
    peak = PeakTracker()
    writer = LineWriter(good, "good", rate=rate).start()
    problems: list[str] = []
    notes: list[str] = []

    def config_errors() -> float:
        return agent.metric("logagent_config_errors_total", key=key)

    def soft_wait(cond, timeout: float, what: str) -> bool:  # type: ignore[no-untyped-def]
        try:
            wait_until(cond, timeout, what=what)
            return True
        except AssertionError as exc:
            problems.append(str(exc))
            return False

    try:
        with KafkaReader(kafka, t_good) as reader:
            reader.read(100, timeout=30)
            # 1. A 10 MB value: valid JSON, but ten times the 1 MiB limit.
            huge = json.dumps(good_value + [{"path": str(logdir / "pad.log"), "topic": t_good,
                                             "fields": {"pad": "x" * (10 * 1024 * 1024)}}])
            before, log_at = config_errors(), len(agent.log_text())
            put(endpoint, key, huge)
            if soft_wait(lambda: config_errors() > before, 20,
                         f"logagent_config_errors_total{{key={key}}} to count the 10 MB value"):
                text = agent.log_text()[log_at:]
                if not (key in text and "refused" in text and str(len(huge)) in text):
                    problems.append("no log line naming the key, the value's size and the refusal")
            time.sleep(1.0)
            new_log = agent.log_text()[log_at:]
            notes.append("10 MB value: agent logged " + ("; ".join(
                line.split(" ", 4)[-1][:230] for line in new_log.splitlines()
                if " WARNING " in line or " ERROR " in line)[:500] or "nothing")
                + f" (then logagent_etcd_up={agent.metric('logagent_etcd_up'):.0f}, "
                  f"logagent_etcd_errors_total={agent.metric('logagent_etcd_errors_total'):.0f})")
            marker = writer.line(writer.count - 1)
            try:
                wait_delivered(reader, marker, timeout=15)
            except AssertionError:
                problems.append("good.log stopped flowing after the 10 MB value")
            peak.sample(agent)

            # 2. A value that is not JSON.
            before, log_at = config_errors(), len(agent.log_text())
            put(endpoint, key, b'[{"path": "/var/log/x.log", "topic": ')
            if soft_wait(lambda: config_errors() > before, 40,
                         f"logagent_config_errors_total{{key={key}}} to count the non-JSON value") \
                    and "not valid JSON" not in agent.log_text()[log_at:]:
                problems.append("no 'not valid JSON' log line for the non-JSON value")
            marker = writer.line(writer.count - 1)
            try:
                wait_delivered(reader, marker, timeout=15)
            except AssertionError:
                problems.append("good.log stopped flowing after the non-JSON value")

            # 3. A good value again: the watch is alive and applies it.
            later.write_text("later 1\nlater 2\n")
            rev = put(endpoint, key, json.dumps(good_value + [{"path": str(later), "topic": t_later,
                                                               "start": "beginning"}]))
            put_at = time.monotonic()
            if soft_wait(lambda: agent.metric(REVISION) >= rev, 45, f"the agent to apply revision {rev}"):
                notes.append(f"next good value applied after {time.monotonic() - put_at:.1f} s")
                with KafkaReader(kafka, t_later) as r2:
                    r2.read(2, timeout=30)
        time.sleep(0.5)
    finally:
        writer.stop()
    t = tally_delivered(kafka, t_good, writer, timeout=60)
    peak.sample(agent)
    results.add_tally("etcd value of 10 MB, then a value that is not JSON, then a good one (good.log flowing)",
                      t, peak.peak, notes=" / ".join(notes + problems))
    assert not t.missing, t.describe()
    assert t.duplicated == 0, t.describe()
    assert peak.peak < RSS_LIMIT_MB
    assert agent.alive()
    assert not problems, "\n".join(problems)
    assert agent.stop() == 0
