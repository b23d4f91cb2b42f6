"""Descriptor cap, idle close, permanent Kafka refusals: nothing lost, others keep flowing."""

from __future__ import annotations

import time

from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

from tests.kit import KafkaReader, check_delivery, new_topic, wait_until


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
        got = {path: reader.data(path) for path in expected}
    assert peak <= 8
    for path, lines in expected.items():
        check_delivery(lines, got[path])
    assert agent.stop() == 0


def _create(admin: AdminClient, topic: str, **config: str) -> None:
    admin.create_topics([NewTopic(topic, 1, 1, config=config)])[topic].result(20)


def _set_limit(admin: AdminClient, topic: str, limit: int) -> None:
    resource = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry("max.message.bytes", str(limit), incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result(20)


def test_a_line_of_max_line_bytes_is_cut_to_what_the_broker_takes_and_nothing_repeats(make_agent, kafka, logdir):
    """Issue 14 item 10: a 1 MiB line (the default max_line_bytes) makes a message above the broker's
    default message.max.bytes. It is cut to fit and flagged, and the lines after it go once."""
    topic = new_topic("big")
    log = logdir / "big.log"
    log.write_text("")
    agent = make_agent(files=[{"path": str(log), "topic": topic}])
    with open(log, "a") as f:
        f.write("before\n" + "x" * (1024 * 1024) + "\n" + "".join(f"after {i}\n" for i in range(20)))
    with KafkaReader(kafka, topic) as reader:
        reader.read(22, timeout=30)
        reader.settle(quiet=3.0)
        values = reader.values()
        sizes = [len(m.value()) for m in reader.messages]
    assert [v["data"] for v in values if len(v["data"]) < 100] == ["before"] + [f"after {i}" for i in range(20)]
    [big] = [v for v in values if len(v["data"]) >= 100]
    assert big["truncated"] is True and set(big["data"]) == {"x"} and big["offset"] == 7
    assert max(sizes) <= 1048588
    assert agent.metric("logagent_messages_failed_total") == 0
    assert agent.metric("logagent_lines_truncated_total") >= 1
    assert agent.stop() == 0


def test_a_limit_lowered_while_running_resends_only_the_refused_line(make_agent, kafka, logdir):
    """The agent learned the topic's limit; the operator lowers it; the broker refuses a line for its
    size. That line is sent again, cut to the new limit: its batch does not fail, its file does not
    rewind, nothing is sent twice."""
    topic = new_topic("lowered")
    admin = AdminClient({"bootstrap.servers": kafka})
    _create(admin, topic)
    log = logdir / "l.log"
    log.write_text("")
    agent = make_agent(files=[{"path": str(log), "topic": topic}],
                       extra={"kafka.producer": {"compression.type": "none"}})
    with KafkaReader(kafka, topic) as reader:
        with open(log, "a") as f:
            f.write("learn the limit\n")
        reader.read(1, timeout=30)
        _set_limit(admin, topic, 150_000)  # still above a batch of the 200 short lines below
        time.sleep(1)
        with open(log, "a") as f:
            f.write("y" * 300_000 + "\n")
        reader.read(2, timeout=30)
        with open(log, "a") as f:
            f.write("".join(f"after {i}\n" for i in range(200)))
        reader.read(202, timeout=60)
        reader.settle(quiet=3.0)
        values = reader.values()
    assert [v["data"] for v in values if len(v["data"]) < 100] == \
        ["learn the limit"] + [f"after {i}" for i in range(200)], "each once, in order"
    [big] = [v for v in values if len(v["data"]) >= 100]
    assert big["truncated"] is True and 100_000 < len(big["data"]) < 150_000
    assert agent.metric("logagent_messages_failed_total") == 0, "no batch failed: nothing rewound"
    assert "kafka refused lines of" not in agent.log_text()
    assert agent.stop() == 0


def test_a_message_that_cannot_fit_waits_and_retries_while_other_files_flow(make_agent, kafka, logdir):
    small, other = new_topic("small"), new_topic()
    admin = AdminClient({"bootstrap.servers": kafka})
    _create(admin, small, **{"max.message.bytes": "100"})  # not even an empty line's envelope fits
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
        assert reader.data() == [f"free {i}" for i in range(100)]
    wait_until(lambda: agent.metric("logagent_messages_failed_total", topic=small) > 0, timeout=20,
               what="the refused message to be counted")
    assert "kafka refused lines of" in agent.log_text() and str(stuck) in agent.log_text()
    # The operator raises the topic's limit: the waiting file resumes, nothing lost.
    _set_limit(admin, small, 1_000_000)
    with KafkaReader(kafka, small) as reader:
        wait_until(lambda: reader.poll(0.5) is not None and "small after" in
                   reader.data(), timeout=60, what="the refused lines to arrive")
        got = reader.data()
    check_delivery(["small before", big, "small after"], got, max_dups=None)
    assert agent.alive()
    assert agent.stop() == 0
