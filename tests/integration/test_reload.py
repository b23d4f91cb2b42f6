"""SIGHUP re-reads config.ini: new entries start, running ones keep their place, bad files are refused."""

from __future__ import annotations

import json
import signal
import time

from tests.support import KafkaReader, check_delivery, new_topic, wait_until


def _set_files(agent, files) -> None:  # type: ignore[no-untyped-def]
    lines = agent.config.read_text().splitlines()
    out = [f"files = {json.dumps(files)}" if line.startswith("files =") else line for line in lines]
    agent.config.write_text("\n".join(out) + "\n")


def test_sighup_applies_collect_changes_and_loses_nothing(make_agent, kafka, logdir):
    a_topic, b_topic = new_topic(), new_topic()
    a, b = logdir / "a.log", logdir / "b.log"
    a.write_text("")
    b.write_text("")
    files = [{"path": str(a), "topic": a_topic}]
    agent = make_agent(files=files)
    with open(a, "a") as f:
        f.write("a1\n")
    _set_files(agent, files + [{"path": str(b), "topic": b_topic}])
    agent.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in agent.log_text(), timeout=10, what="reload")
    with open(a, "a") as f:
        f.write("a2\n")
    with open(b, "a") as f:
        f.write("b1\n")
    with KafkaReader(kafka, a_topic, b_topic) as reader:
        reader.read(3)
        reader.settle(quiet=1.0)
        values = reader.values()
    check_delivery(["a1", "a2"], [v["data"] for v in values if v["path"] == str(a)])
    assert [v["data"] for v in values if v["path"] == str(b)] == ["b1"]

    agent.config.write_text(agent.config.read_text().replace("chan_size = 10000", "chan_size = nope"))
    agent.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "the running configuration stays in force" in agent.log_text(), timeout=10,
               what="a refused reload")
    assert agent.alive() and agent.ready()
    assert agent.metric("logagent_config_errors_total", key="config.ini") == 1
    time.sleep(0.2)
    assert agent.stop() == 0
