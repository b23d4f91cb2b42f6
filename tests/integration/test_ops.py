"""Operating the agent: its own logs as JSON, secrets kept out of logs and `check`, health endpoints."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from tests.kit import AgentProcess, KafkaReader, new_topic, wait_until


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


def test_files_shows_each_reader_its_offsets_and_what_it_waits_for(make_agent, kafka, logdir):
    """GET /files: each file read, how far it is read and acknowledged by Kafka, and in words what it
    does; once logrotate renamed app.log and the renamed file is done, only the new one is listed."""
    topic = new_topic()
    log = logdir / "app.log"
    log.write_text("")
    agent = make_agent(files=[{"path": str(logdir / "*.log"), "topic": topic}])

    def rows() -> list[dict[str, object]]:
        status, body = agent.get("/files")
        assert status == 200, body
        listing = json.loads(body)
        assert listing["count"] == len(listing["files"])
        return listing["files"]  # type: ignore[no-any-return]

    log.write_text("a\nb\nc\npartial")
    with KafkaReader(kafka, topic) as reader:
        reader.read(3)
        wait_until(lambda: rows()[0]["acked"] == 6, what="/files to show the 3 lines acknowledged")
        [row] = rows()
        assert row["path"] == str(log) and row["entry"] == str(logdir / "*.log") and row["topic"] == topic
        assert (row["source"], row["read"], row["in_flight"], row["partial_bytes"]) == ("current file", 13, 0, 7)
        assert row["state"] == "following (its last line waits for a newline)"
        shown = subprocess.run([sys.executable, "-m", "logagent", "files", "-c", str(agent.config)],
                               capture_output=True, text=True, timeout=30)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.splitlines()[1].split()[:3] == ["7", "6", "13"] and str(log) in shown.stdout
        os.rename(log, logdir / "app.log.1")
        log.write_text("d\n")
        reader.read(2)  # "partial", sent as it is once the renamed file is done; then d
    wait_until(lambda: [(r["path"], r["acked"]) for r in rows()] == [(str(log), 2)],
               what="/files to list the new app.log alone, acknowledged")
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


def test_second_agent_on_a_taken_port_exits_with_one_line(make_agent, kafka, logdir, tmp_path):
    """Issue 14 item 14: a second agent whose http_listen port is held says so in one line
    naming [agent] http_listen and the address, exits 1 at once, and leaves the first running
    (the old code died with an OSError traceback after having started its producer)."""
    topic = new_topic()
    log = logdir / "app.log"
    log.write_text("")
    first = make_agent(files=[{"path": str(log), "topic": topic}])
    second_cfg = tmp_path / "second.ini"
    second_cfg.write_text(first.config.read_text().replace(str(tmp_path / "data"), str(tmp_path / "data2")))
    second = AgentProcess(second_cfg, tmp_path / "second.log")
    second.start(wait_ready=False)
    assert second.proc is not None
    code = second.proc.wait(timeout=30)
    text = second.log_text()
    assert code == 1, text
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if "CRITICAL" in line or "ERROR" in line]
    assert len(errors) == 1, text
    assert f"[agent] http_listen = {first.http}: cannot listen: address already in use" in errors[0], errors
    assert "kafka" not in text.split("cannot listen", 1)[1].lower(), "it went on after the error"
    log.write_text("still shipping\n")
    with KafkaReader(kafka, topic) as reader:
        reader.read(1)
    assert first.ready() and first.stop() == 0


def test_hostile_requests_get_answers_and_leave_no_trace_in_the_log(make_agent, logdir):
    """A 200 KB header: 431 without a traceback in the agent's log (the old code logged one per
    request); the agent stays healthy."""
    agent = make_agent()
    host, port = agent.http.rsplit(":", 1)
    big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
    for _ in range(3):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(big)
            sock.shutdown(socket.SHUT_WR)
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    assert agent.get("/healthz") == (200, "ok\n")
    assert agent.stop() == 0
    text = agent.log_text()
    assert "Traceback" not in text and "LimitOverrunError" not in text, agent.log_tail(30)
