"""Kafka SASL/PLAIN and TLS for real: credentials from config.ini and from the environment, wrong ones
lose nothing; the broker's certificate verified against a CA, a wrong CA refused. Secrets never reach
the agent's log."""

from __future__ import annotations

from pathlib import Path

from tests.kit import KafkaReader, make_certs, new_topic, wait_until


def _sasl(bootstrap: str, user: str, password: str | None) -> dict[str, dict[str, str]]:
    producer = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": user}
    if password is not None:
        producer["sasl.password"] = password
    return {"kafka": {"address": bootstrap}, "kafka.producer": producer, "agent": {"log_level": "DEBUG"}}


def test_sasl_credentials_from_config_ini(make_agent, kafka, kafka_sasl, logdir):
    bootstrap, user, password = kafka_sasl
    topic = new_topic()
    log = logdir / "app.log"
    log.write_text("")
    agent = make_agent(files=[{"path": str(log), "topic": topic}], extra=_sasl(bootstrap, user, password))
    log.write_text("over sasl 1\nover sasl 2\n")
    with KafkaReader(kafka, topic) as reader:
        reader.read(2)
        assert reader.data() == ["over sasl 1", "over sasl 2"]
    assert agent.stop() == 0
    assert password not in agent.log_text()
    assert "sasl.password=***" in agent.log_text()


def test_sasl_password_from_environment(make_agent, kafka, kafka_sasl, logdir):
    bootstrap, user, password = kafka_sasl
    topic = new_topic()
    log = logdir / "app.log"
    log.write_text("")
    agent = make_agent(files=[{"path": str(log), "topic": topic}], extra=_sasl(bootstrap, user, None),
                       env={"LOGAGENT_KAFKA_PRODUCER_SASL_PASSWORD": password})
    log.write_text("env creds\n")
    with KafkaReader(kafka, topic) as reader:
        reader.read(1)
    assert agent.stop() == 0
    assert password not in agent.log_text()


def test_wrong_credentials_clear_error_nothing_lost(make_agent, kafka, kafka_sasl, logdir, tmp_path):
    bootstrap, user, password = kafka_sasl
    topic = new_topic()
    log = logdir / "app.log"
    log.write_text("")
    files = [{"path": str(log), "topic": topic}]
    data = tmp_path / "data"
    extra = _sasl(bootstrap, user, "wrong-password")
    extra["agent"]["shutdown_timeout"] = "3"  # nothing can be acknowledged: do not wait 20 s to stop
    agent = make_agent(files=files, extra=extra, start=False, data_dir=data)
    agent.start(wait_ready=False)
    wait_until(lambda: agent.get("/healthz")[0] == 200, timeout=20, what="agent up")
    log.write_text("".join(f"line {i}\n" for i in range(50)))
    wait_until(lambda: "Authentication failed" in agent.log_text() or "SASL authentication" in agent.log_text(),
               timeout=30, what="a clear authentication error in the log")
    assert agent.get("/readyz")[0] == 503
    assert "wrong-password" not in agent.log_text()
    assert agent.stop() == 0
    fixed = make_agent(files=files, extra=_sasl(bootstrap, user, password), data_dir=data)
    with KafkaReader(kafka, topic) as reader:
        reader.read(50)
        reader.settle(quiet=1.0)
        assert reader.data() == [f"line {i}" for i in range(50)]
    assert fixed.stop() == 0


def _tls(bootstrap: str, ca: Path) -> dict[str, dict[str, str]]:
    return {"kafka": {"address": bootstrap},
            "kafka.producer": {"security.protocol": "SSL", "ssl.ca.location": str(ca)}}


def test_tls_with_the_brokers_ca(make_agent, kafka, kafka_tls, logdir):
    bootstrap, ca = kafka_tls
    topic = new_topic()
    log = logdir / "app.log"
    log.write_text("")
    agent = make_agent(files=[{"path": str(log), "topic": topic}], extra=_tls(bootstrap, ca))
    log.write_text("over tls 1\nover tls 2\n")
    with KafkaReader(kafka, topic) as reader:
        reader.read(2)
        assert reader.data() == ["over tls 1", "over tls 2"]
    assert agent.ready()
    assert agent.stop() == 0


def test_tls_with_a_wrong_ca_is_refused_clearly(make_agent, kafka_tls, logdir, tmp_path):
    bootstrap, _ = kafka_tls
    other_ca = make_certs(tmp_path / "other-ca")["ca.crt"]  # a CA that did not sign the broker's certificate
    log = logdir / "app.log"
    log.write_text("")
    extra = _tls(bootstrap, other_ca)
    extra["agent"] = {"shutdown_timeout": "3"}  # nothing can be acknowledged: do not wait 20 s to stop
    agent = make_agent(files=[{"path": str(log), "topic": new_topic()}], extra=extra, start=False)
    agent.start(wait_ready=False)
    wait_until(lambda: agent.get("/healthz")[0] == 200, timeout=20, what="agent up")
    log.write_text("never sent\n")
    wait_until(lambda: "certificate verify failed" in agent.log_text(), timeout=30,
               what="a clear certificate error in the log")
    assert agent.get("/readyz")[0] == 503
    agent.stop()
