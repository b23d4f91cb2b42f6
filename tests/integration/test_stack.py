"""The test stack itself: a real broker takes and returns messages, a real etcd puts, gets and watches."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tests.kit import KafkaReader, new_topic


def test_broker_round_trip_1000_messages(kafka):
    topic = new_topic()
    producer = Producer({"bootstrap.servers": kafka, "acks": "all", "enable.idempotence": True})
    sent = [f"message {i}".encode() for i in range(1000)]
    for value in sent:
        producer.produce(topic, value)
    assert producer.flush(30) == 0
    with KafkaReader(kafka, topic) as reader:
        got = [m.value() for m in reader.read(1000)]
    assert got == sent


def test_etcd_put_get_watch(etcd):
    import pyetcd

    host, port = etcd.rsplit(":", 1)
    client = pyetcd.client(host=host, port=int(port))
    try:
        client.put("/logagent/test/key", "v1")
        value, _meta = client.get("/logagent/test/key")
        assert value == b"v1"
        seen: list[bytes] = []
        got = threading.Event()

        def on_event(response) -> None:  # type: ignore[no-untyped-def]
            for event in getattr(response, "events", []):
                seen.append(event.value)
                got.set()

        watch_id = client.add_watch_callback("/logagent/test/key", on_event)
        client.put("/logagent/test/key", "v2")
        assert got.wait(5)
        assert seen == [b"v2"]
        client.cancel_watch(watch_id)
    finally:
        client.close()


def test_check_passes_against_live_stack_and_fails_on_wrong_kafka(kafka, etcd, tmp_path: Path):
    cfg = tmp_path / "c.ini"
    cfg.write_text(f"[kafka]\naddress = {kafka}\n[etcd]\naddress = {etcd}\n")
    ok = subprocess.run([sys.executable, "-m", "logagent", "check", "-c", str(cfg)],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok   kafka" in ok.stdout and "ok   etcd" in ok.stdout
    cfg.write_text(f"[kafka]\naddress = 127.0.0.1:1\n[etcd]\naddress = {etcd}\n")
    bad = subprocess.run([sys.executable, "-m", "logagent", "check", "-c", str(cfg), "--timeout", "2"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "FAIL kafka: 127.0.0.1:1" in bad.stdout


def test_a_stopped_servers_ports_stay_its_own_until_it_starts_again(tmp_path: Path):
    """A test's outage stops a server and starts it again on the same ports: meanwhile no other
    process may take them (an etcd restarted after an outage found its peer port taken by a server
    of a test run beside it). Stopped, a client is refused as by no server; started, it serves."""
    import socket

    from devstack.stack import EtcdServer, port_open
    from tests.kit.servers import running

    with running(EtcdServer(tmp_path / "etcd"), "a test etcd") as server:
        server.stop()
        assert not port_open(server.port), "stopped: refused, as by no server"
        for port in server.ports():  # what another process's listen_port() tries: refused
            with socket.socket() as probe, pytest.raises(OSError):
                probe.bind(("127.0.0.1", port))
        server.start()
        assert port_open(server.port)
    assert not server._held, "stopped for good: its ports go back to the machine"
