"""SIGHUP re-reads config.ini: new entries start, running ones keep their place, bad files are refused."""

from __future__ import annotations

import json
import signal
import time

from tests.kit import KafkaReader, check_delivery, new_topic, wait_until


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
        got_a, got_b = reader.data(str(a)), reader.data(str(b))
    check_delivery(["a1", "a2"], got_a)
    assert got_b == ["b1"]

    agent.config.write_text(agent.config.read_text().replace("chan_size = 10000", "chan_size = nope"))
    agent.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "the running configuration stays in force" in agent.log_text(), timeout=10,
               what="a refused reload")
    assert agent.alive() and agent.ready()
    assert agent.metric("logagent_config_errors_total", key="config.ini") == 1
    time.sleep(0.2)
    assert agent.stop() == 0


def test_sighup_with_etcd_rejudges_values_against_new_allowed_paths(make_agent, kafka, etcd, logdir, tmp_path):
    from logagent.config.settings import EtcdSettings
    from logagent.control.etcd_client import connect

    topic = new_topic()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    log = outside / "app.log"
    log.write_text("")
    ip = "127.9.8.7"
    with connect(EtcdSettings(address=(etcd,))) as kv:
        kv.put(f"/logagent/{ip}/collect_log/config", json.dumps([{"path": str(log), "topic": topic}]))
    agent = make_agent(etcd=etcd, ip=ip, start=False)
    agent.start(wait_ready=False)
    wait_until(lambda: "outside [agent] allowed_paths" in agent.log_text(), timeout=15, what="refusal")
    text = agent.config.read_text()
    agent.config.write_text(text.replace(f"allowed_paths = {logdir}/**",
                                         f"allowed_paths = {logdir}/**, {outside}/**"))
    agent.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in agent.log_text(), timeout=10, what="reload")
    wait_until(agent.ready, timeout=10, what="ready with the entry applied")
    with open(log, "a") as f:
        f.write("now allowed\n")
    with KafkaReader(kafka, topic) as reader:
        reader.read(1)
        assert reader.data() == ["now allowed"]
    assert agent.stop() == 0


def test_sighup_applies_live_settings_and_names_restart_only_ones(make_agent, kafka, logdir):
    """Issue 15: every changed setting is applied or named. log_level and log_format apply at
    once; max_open_files and a librdkafka property are named in one WARNING as taking effect at
    the next restart (the old reload said nothing about either)."""
    topic = new_topic()
    log = logdir / "a.log"
    log.write_text("")
    agent = make_agent(files=[{"path": str(log), "topic": topic}])
    text = agent.config.read_text()
    changed = (text.replace("log_level = INFO", "log_level = DEBUG\nlog_format = json\nmax_open_files = 64")
               .replace("linger.ms = 5", "linger.ms = 7"))
    assert changed.count("max_open_files") == 1 and "linger.ms = 7" in changed
    agent.config.write_text(changed)
    before = len(agent.log_text().splitlines())
    agent.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in agent.log_text(), timeout=10, what="reload")
    new_lines = agent.log_text().splitlines()[before:]
    warnings = [line for line in new_lines if "takes effect at the next restart" in line]
    assert len(warnings) == 1, new_lines
    assert "[agent] max_open_files" in warnings[0] and "[kafka.producer] linger.ms" in warnings[0], warnings
    assert "log_level" not in warnings[0] and "log_format" not in warnings[0]
    # Live: from the reload on, the log is JSON, at DEBUG.
    reloaded = json.loads(next(line for line in new_lines if "configuration reloaded" in line))
    assert "[agent] log_level" in reloaded["message"] and "[agent] log_format" in reloaded["message"]
    with open(log, "a") as f:
        f.write("after reload\n")
    with KafkaReader(kafka, topic) as reader:
        reader.read(1)
        assert reader.data() == ["after reload"]
    # Until a restart applies it, the next SIGHUP names the restart-only change again.
    before_second = len(agent.log_text().splitlines())
    agent.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: sum("configuration reloaded" in line for line in agent.log_text().splitlines()) == 2,
               timeout=10, what="second reload")
    again = [line for line in agent.log_text().splitlines()[before_second:] if "next restart" in line]
    assert len(again) == 1 and "[agent] max_open_files" in again[0], again
    assert agent.stop() == 0
    after = agent.log_text().splitlines()[before:]
    records = [json.loads(line) for line in after if line.startswith("{")]
    assert any(r["level"] == "DEBUG" and r["message"].startswith("config now: ") for r in records), \
        "log_level=DEBUG was not applied live"
