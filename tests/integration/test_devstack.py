"""The README's dev path (`make run`, `make consume`, the CLI with devstack/dev.ini), without starting
a second Kafka: the dev config against the session's servers, devstack's port check, and the
consumer behind `make consume` against the real broker."""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from devstack.stack import DEMO_LOG, DEV_CONFIG, DevPlan, listen_port, seed_etcd
from tests.kit import ROOT, new_topic

# What the README's live-change example writes: the demo entry plus a second file, new topic.
README_EXAMPLE = json.dumps([
    {"path": DEMO_LOG, "topic": "demo_log", "module": "demo", "start": "beginning"},
    {"path": "/tmp/logagent-demo/other.log", "topic": "demo_other", "start": "beginning"},
])


def _run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, input=stdin, timeout=timeout)


@pytest.fixture
def dev_env(kafka: str, etcd: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """devstack/dev.ini pointed at the session's servers, with key templates of this test's own
    (the session etcd is shared): everything else is the dev config as `make run` uses it."""
    prefix = f"/devstack-test-{uuid.uuid4().hex[:8]}"
    overrides = {"LOGAGENT_KAFKA_ADDRESS": kafka, "LOGAGENT_ETCD_ADDRESS": etcd,
                 "LOGAGENT_ETCD_COLLECT_LOG_KEY": f"{prefix}/%s/collect_log/config",
                 "LOGAGENT_ETCD_COLLECT_SYSINFO_KEY": f"{prefix}/%s/collect_sysinfo/config"}
    for name, value in overrides.items():
        monkeypatch.setenv(name, value)
    return dict(os.environ)


def test_dev_config_sees_the_keys_make_run_seeds(dev_env: dict[str, str], etcd: str) -> None:
    """Issue 15 items 2 and 3: with config.ini (ip = auto) `check` looked at this host's real ip and said
    "nothing collected", and set-collect refused the demo folder; with the dev config both agree with
    what `make run` seeds."""
    plan = DevPlan(DEV_CONFIG)
    assert plan.ip == "127.0.0.1" and "/127.0.0.1/" in plan.collect_key
    seed_etcd(etcd, plan, DEMO_LOG)

    check = _run("-m", "logagent", "check", "-c", str(DEV_CONFIG), env=dev_env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"ok   etcd: {etcd}: reachable" in check.stdout
    assert f"{plan.collect_key} has 1 good entry" in check.stdout, check.stdout
    assert f"{plan.sysinfo_key} is valid" in check.stdout, check.stdout
    assert "warning" not in check.stdout  # every key of dev.ini is known

    show = _run("-m", "logagent", "config", "show", "-c", str(DEV_CONFIG), env=dev_env)
    assert show.returncode == 0, show.stderr
    assert f'"path": "{DEMO_LOG}"' in show.stdout and '"interval": 10' in show.stdout

    with_dev = _run("-m", "logagent", "config", "set-collect", "-c", str(DEV_CONFIG), "--dry-run", "-",
                    env=dev_env, stdin=README_EXAMPLE)
    assert with_dev.returncode == 0, with_dev.stdout + with_dev.stderr
    assert '"topic": "demo_other"' in with_dev.stdout
    # The repository's config.ini (allowed_paths = /var/log/**) refuses the same value.
    with_repo = _run("-m", "logagent", "config", "set-collect", "-c", str(ROOT / "config.ini"),
                     "--ip", plan.ip, "--dry-run", "-", env=dev_env, stdin=README_EXAMPLE)
    assert with_repo.returncode == 2 and "allowed_paths" in with_repo.stdout + with_repo.stderr


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port this process listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", listen_port()))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("which", ["kafka", "etcd"])
def test_up_with_a_port_in_use_is_one_line_naming_port_and_holder(held_port: int, which: str,
                                                                   tmp_path: Path) -> None:
    """Issue 15 item 12: a taken 9092 or 2379 ended in a Python traceback from devstack."""
    free = listen_port()
    kafka_port, etcd_port = (held_port, free) if which == "kafka" else (free, held_port)
    up = _run("-m", "devstack.stack", "up", "--kafka-port", str(kafka_port), "--etcd-port", str(etcd_port),
              "--dir", str(tmp_path / "run"), timeout=30)
    assert up.returncode == 1
    assert len(up.stderr.splitlines()) == 1, up.stderr
    line = up.stderr.strip()
    assert line.startswith(f"devstack: port {held_port} ({which}) is in use by pid {os.getpid()} (")
    assert line.endswith("): stop it, or free the port")
    assert not (tmp_path / "run").exists()  # nothing was started


def test_up_checks_the_agents_http_port_of_the_dev_config(held_port: int, tmp_path: Path) -> None:
    """The agent's http_listen taken: said before Kafka and etcd start, not by the agent after."""
    config = tmp_path / "dev.ini"
    config.write_text(f"[kafka]\naddress = 127.0.0.1:{listen_port()}\n[etcd]\naddress = 127.0.0.1:{listen_port()}\n"
                      f"[agent]\nip = 127.0.0.1\nhttp_listen = 127.0.0.1:{held_port}\n")
    up = _run("-m", "devstack.stack", "up", "--config", str(config), "--dir", str(tmp_path / "run"), timeout=30)
    assert up.returncode == 1
    assert up.stderr.startswith(f"devstack: port {held_port} (the agent's http_listen) is in use by pid "
                                f"{os.getpid()} ("), up.stderr
    assert len(up.stderr.splitlines()) == 1


def test_consume_picks_up_a_topic_created_after_it_started(kafka: str) -> None:
    """Issue 15 item 5: `make consume` started before the metrics topic existed never showed it
    (librdkafka looked for new topics every 5 minutes once the other topic flowed)."""
    early, late = new_topic("early"), new_topic("late")
    producer = Producer({"bootstrap.servers": kafka})
    producer.produce(early, b"first")
    assert producer.flush(10) == 0
    proc = subprocess.Popen([sys.executable, "-m", "devstack.consume", "--bootstrap", kafka, early, late],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], name="consume-out")  # type: ignore[union-attr]
    reader.start()
    try:
        # The consumer has joined and reads `early`: only now does `late` come into being.
        assert lines.get(timeout=30).startswith(f"{early} ")
        producer.produce(late, b"second")
        assert producer.flush(10) == 0
        assert lines.get(timeout=15) == f"{late}  second\n"
    finally:
        proc.terminate()
        proc.wait(10)
        reader.join(5)
