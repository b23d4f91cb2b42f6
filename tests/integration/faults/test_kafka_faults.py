"""Kafka fails under load: the single broker stops for 30 s; the leader of a 3-node cluster dies."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from devstack.stack import KafkaCluster
from tests.integration.faults.conftest import shown_logs
from tests.integration.faults.helpers import RSS_LIMIT_MB, PeakTracker
from tests.kit import KafkaReader, LineWriter, new_topic, read_all, running, tally, tally_delivered, wait_until

DOWN_SECONDS = 30


def test_broker_down_30s_under_load(loaded_agent, kafka, kafka_server, results):
    if kafka_server is None:
        pytest.fail("this test stops the broker: run it against the suite's own (unset LOGAGENT_TEST_KAFKA)")
    rate = 1000
    topic, agent, writer = loaded_agent("down", rate)
    peak = PeakTracker()
    try:
        with KafkaReader(kafka, topic) as reader:
            reader.read(500, timeout=30)  # flowing before the outage
        kafka_server.stop()
        try:
            down_at = time.monotonic()
            wait_until(lambda: not agent.ready(), timeout=30, what="/readyz to report Kafka down")
            while time.monotonic() - down_at < DOWN_SECONDS:
                assert agent.alive(), f"the agent died while Kafka was down:\n{agent.log_tail()}"
                peak.sample(agent)
                time.sleep(1.0)
        finally:
            kafka_server.start()
        back_at = time.monotonic()
        try:
            wait_until(agent.ready, timeout=60, what="/readyz after Kafka came back")
        except AssertionError as exc:  # say why it stayed unready: the answer, the gauge, the log
            status, body = agent.get("/readyz", timeout=10)
            samples = agent.scrape(timeout=10) or {}
            raise AssertionError(f"{exc}; /readyz {status} {body.strip()!r}, logagent_kafka_up "
                                 f"{samples.get('logagent_kafka_up')}\n{agent.log_tail(120)}") from None
        ready_after = time.monotonic() - back_at
        time.sleep(2.0)
    finally:
        writer.stop()
    t = tally_delivered(kafka, topic, writer, timeout=90)
    peak.sample(agent)
    results.add_tally(f"Kafka broker stopped {DOWN_SECONDS} s under load, {rate} lines/s", t, peak.peak,
                      notes=f"ready again {ready_after:.1f} s after the broker's restart")
    assert not t.missing, t.describe()
    assert not t.unexpected, t.describe()
    assert t.duplicated == 0, t.describe()  # no agent crash: idempotent producer, nothing re-read
    assert peak.peak < RSS_LIMIT_MB
    assert agent.alive()
    assert agent.stop() == 0


@pytest.fixture
def kafka_cluster(tmp_path: Path) -> Iterator[KafkaCluster]:
    cluster = KafkaCluster(tmp_path / "cluster", size=3)
    with shown_logs(*cluster.log_paths), running(cluster, "the 3-node Kafka cluster",
                                                 stop=lambda: cluster.stop(kill=True)):
        yield cluster


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_cluster_partition_leader_killed_under_load(delivery, make_agent, kafka_cluster, logdir, results):
    """The topic's leader is killed -9 under load: nothing lost, nothing twice (exactly_once: read with
    read_committed, the transactions' offsets topic and coordinator replicated on the same 3 nodes)."""
    cluster = kafka_cluster
    rate = 2000
    topic = new_topic("isr")
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 3, config={"min.insync.replicas": "2"})])[topic].result(30)
    wait_until(lambda: cluster.leader_of(topic) > 0, timeout=30, what="a leader for the topic")
    log = logdir / "app.log"
    log.touch()
    agent = make_agent(files=[{"path": str(log), "topic": topic}],
                       extra={"kafka": {"address": cluster.bootstrap, "delivery": delivery}})
    peak = PeakTracker()
    writer = LineWriter(log, "isr", rate=rate).start()
    with KafkaReader(cluster.bootstrap, topic) as reader:
        try:
            reader.read(1000, timeout=30)
            leader = cluster.leader_of(topic)
            assert leader > 0
            cluster.stop_node(leader, kill=True)  # kill -9 of the partition's leader
            killed_at = time.monotonic()
            written_at_kill = writer.count
            def elected() -> int:
                node = cluster.leader_of(topic)
                return node if node not in (-1, leader) else 0

            new_leader = wait_until(elected, timeout=60, what="a new partition leader")
            failover = time.monotonic() - killed_at
            # The agent keeps shipping: lines written after the kill reach the new leader.
            target = written_at_kill + 4 * rate
            wait_until(lambda: writer.count >= target, timeout=30, what="the writer to go on")
            wait_until(lambda: reader.poll(0.3) is not None and len(reader.messages) >= target, timeout=60,
                       what=f"lines written after the kill of node {leader} to arrive")
            flowing_after = time.monotonic() - killed_at
            peak.sample(agent)
        finally:
            writer.stop()
        read_all(reader, writer.count, timeout=90, last=writer.line(writer.count - 1))
        got = reader.data()
    peak.sample(agent)
    t = tally(writer.expected(), got)
    mode = "" if delivery == "at_least_once" else f", {delivery} (read_committed)"
    results.add_tally(f"3-node KRaft cluster (RF 3, min.insync 2): partition leader kill -9'd, {rate} lines/s{mode}",
                      t, peak.peak,
                      notes=f"node {leader} killed, node {new_leader} leads {failover:.1f} s later; "
                            f"{written_at_kill + 4 * rate} lines in Kafka {flowing_after:.1f} s after the kill")
    assert not t.missing, t.describe()
    assert not t.unexpected, t.describe()
    assert t.duplicated == 0, t.describe()
    assert peak.peak < RSS_LIMIT_MB
    assert agent.stop() == 0
