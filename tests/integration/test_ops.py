"""Operating the agent: its own logs as JSON, secrets kept out of logs and `check`, health endpoints."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import KafkaReader, new_topic


def test_json_logs_one_object_per_line(make_agent, kafka, logdir):
    topic = new_topic()
    log = logdir / "app.log"
    log.write_text("")
    # Secret-bearing librdkafka properties that a PLAINTEXT producer accepts (and ignores): the
    # agent logs its producer configuration at INFO, which must show none of them.
    secrets = {"sasl.password": "sasl-secret-pw", "ssl.key.password": "key-secret-pw",
               "sasl.oauthbearer.config": "principal=svc clientSecret=oauth-secret-value",
               "sasl.oauthbearer.client.secret": "client-secret-value",
               "ssl.key.pem": "-----BEGIN PRIVATE KEY-----pem-secret-value"}
    agent = make_agent(files=[{"path": str(log), "topic": topic}],
                       extra={"agent": {"log_format": "json"}, "etcd": {"password": "etcd-secret-pw"},
                              "kafka.producer": secrets})
    log.write_text("hello\n")
    with KafkaReader(kafka, topic) as reader:
        reader.read(1)
    assert agent.stop() == 0
    lines = [line for line in agent.log_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is a JSON object
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any("tailing" in r["message"] for r in records)
    assert "etcd-secret-pw" not in agent.log_text()
    assert "kafka producer started" in agent.log_text()
    for value in secrets.values():
        assert value.split("=")[-1].split("-----")[-1] not in agent.log_text()


def test_health_endpoints_report_real_state(make_agent, kafka, logdir):
    topic = new_topic()
    log = logdir / "app.log"
    log.write_text("")
    agent = make_agent(files=[{"path": str(log), "topic": topic}])
    assert agent.get("/healthz") == (200, "ok\n")
    assert agent.get("/readyz") == (200, "ready\n")
    log.write_text("a\nb\nc\n")
    with KafkaReader(kafka, topic) as reader:
        reader.read(3)
    assert agent.metric("logagent_lines_read_total", path=str(log)) == 3
    assert agent.metric("logagent_messages_delivered_total", topic=topic) == 3
    assert agent.metric("logagent_queue_capacity") == 10000
    assert agent.metric("logagent_files_open") == 1
    assert agent.metric("logagent_kafka_up") == 1
    assert agent.stop() == 0


def test_check_never_prints_secrets(kafka, tmp_path):
    cfg = tmp_path / "c.ini"
    cfg.write_text(f"[kafka]\naddress = {kafka}\n[kafka.producer]\nsasl.password = kafka-secret-pw\n"
                   "[etcd]\naddress =\npassword = etcd-secret-pw\n")
    out = subprocess.run([sys.executable, "-m", "logagent", "check", "-c", str(cfg), "--timeout", "5"],
                         capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    assert "ok   kafka" in out.stdout
    assert "kafka-secret-pw" not in text and "etcd-secret-pw" not in text
