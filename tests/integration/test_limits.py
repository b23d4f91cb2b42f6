"""Descriptor cap, idle close, permanent Kafka refusals: nothing lost, others keep flowing."""

from __future__ import annotations

import time

from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

from tests.support import KafkaReader, check_delivery, new_topic, wait_until


def test_max_open_files_caps_descriptors_and_loses_nothing(make_agent, kafka, logdir):
    topic = new_topic()
    paths = [logdir / f"f{i:02d}.log" for i in range(30)]
    for p in paths:
        p.write_text("")
    agent = make_agent(files=[{"path": str(logdir / "*.log"), "topic": topic}],
                       extra={"agent": {"max_open_files": "8", "close_inactive": "1"}})
    expected: dict[str, list[str]] = {str(p): [] for p in paths}
    peak = 0.0
    for round_ in range(3):
        for p in paths:
            line = f"{p.name} round {round_}"
            with open(p, "a") as f:
                f.write(line + "\n")
            expected[str(p)].append(line)
        peak = max(peak, agent.metric("logagent_files_open"))
        time.sleep(1.5)
        peak = max(peak, agent.metric("logagent_files_open"))
    with KafkaReader(kafka, topic) as reader:
        reader.read(90, timeout=60)
        reader.settle(quiet=1.0)
        values = reader.values()
    assert peak <= 8
    for path, lines in expected.items():
        check_delivery(lines, [v["data"] for v in values if v["path"] == path])
    assert agent.stop() == 0


def test_permanent_refusal_waits_and_retries_while_other_files_flow(make_agent, kafka, logdir):
    small, other = new_topic("small"), new_topic()
    admin = AdminClient({"bootstrap.servers": kafka})
    admin.create_topics([NewTopic(small, 1, 1, config={"max.message.bytes": "2000"})])[small].result(20)
    stuck, free = logdir / "stuck.log", logdir / "free.log"
    stuck.write_text("")
    free.write_text("")
    agent = make_agent(files=[{"path": str(stuck), "topic": small}, {"path": str(free), "topic": other}],
                       extra={"kafka.producer": {"compression.type": "none"}})
    big = "B" * 5000
    with open(stuck, "a") as f:
        f.write("small before\n" + big + "\nsmall after\n")
    with open(free, "a") as f:
        f.write("".join(f"free {i}\n" for i in range(100)))
    with KafkaReader(kafka, other) as reader:
        reader.read(100, timeout=30)
        assert [v["data"] for v in reader.values()] == [f"free {i}" for i in range(100)]
    wait_until(lambda: agent.metric("logagent_messages_failed_total", topic=small) > 0, timeout=20,
               what="the refused message to be counted")
    assert "kafka refused lines of" in agent.log_text() and str(stuck) in agent.log_text()
    # The operator raises the topic's limit: the waiting file resumes, nothing lost.
    resource = ConfigResource("topic", small, incremental_configs=[
        ConfigEntry("max.message.bytes", "1000000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result(20)
    with KafkaReader(kafka, small) as reader:
        wait_until(lambda: reader.poll(0.5) is not None and "small after" in
                   [v["data"] for v in reader.values()], timeout=60, what="the refused lines to arrive")
        got = [v["data"] for v in reader.values()]
    check_delivery(["small before", big, "small after"], got, max_dups=None)
    assert agent.alive()
    assert agent.stop() == 0
