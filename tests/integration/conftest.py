"""Fixtures of the integration and fault suites: the real stack, and agents that run against it.

- Session fixtures start a real Apache Kafka broker (KRaft, with SASL/PLAIN and TLS listeners) and a
  real etcd on free loopback ports, only for the tests that ask for them, and always stop them (one
  broker and one etcd per pytest run, shared with tests/integration/faults when run together; `make
  test` runs the fault suite and the rest as two runs side by side, each with its own). LOGAGENT_TEST_KAFKA=host:port or
  LOGAGENT_TEST_ETCD=host:port use servers that already run instead. A server that does not start
  fails the run: never a silent skip.
- Failing tests get the tails of the server and agent logs in their report.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from devstack.stack import EtcdServer, KafkaServer
from tests.kit import AgentProcess, LineWriter, enable_etcd_auth, make_certs, new_topic, running, write_config

_SERVER_LOGS: list[Path] = []
SASL_USERS = {"logagent": "s3cret-kafka-pw"}


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


Server = TypeVar("Server", KafkaServer, EtcdServer)


def _run_server(server: Server, reuse_env: str) -> Iterator[Server | None]:
    """Start a session's server (or none when `reuse_env` names one already running); always stop it."""
    if os.environ.get(reuse_env):
        yield None
        return
    _SERVER_LOGS.append(server.log_path)
    with running(server, f"{server.name} for the integration tests"):
        yield server


@pytest.fixture(scope="session")
def kafka_certs(stack_dir: Path) -> dict[str, Path]:
    """The CA and certificates of the broker's TLS listener."""
    try:
        return make_certs(stack_dir / "kafka-certs")
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def kafka_server(stack_dir: Path, kafka_certs: dict[str, Path]) -> Iterator[KafkaServer | None]:
    yield from _run_server(KafkaServer(stack_dir / "kafka", sasl_users=SASL_USERS, tls_pem=kafka_certs["server.pem"]),
                           "LOGAGENT_TEST_KAFKA")


@pytest.fixture(scope="session")
def kafka(kafka_server: KafkaServer | None) -> str:
    """Bootstrap address of the real broker."""
    return os.environ.get("LOGAGENT_TEST_KAFKA") or kafka_server.bootstrap  # type: ignore[union-attr]


@pytest.fixture(scope="session")
def kafka_sasl(kafka_server: KafkaServer | None) -> tuple[str, str, str]:
    """(bootstrap, user, password) of the broker's SASL/PLAIN listener."""
    if kafka_server is None:
        pytest.fail("the SASL tests need the suite's own broker (unset LOGAGENT_TEST_KAFKA)", pytrace=False)
    user, password = next(iter(SASL_USERS.items()))
    return kafka_server.sasl_bootstrap, user, password


@pytest.fixture(scope="session")
def kafka_tls(kafka_server: KafkaServer | None, kafka_certs: dict[str, Path]) -> tuple[str, Path]:
    """(bootstrap, CA certificate) of the broker's TLS listener."""
    if kafka_server is None:
        pytest.fail("the TLS tests need the suite's own broker (unset LOGAGENT_TEST_KAFKA)", pytrace=False)
    return kafka_server.tls_bootstrap, kafka_certs["ca.crt"]


@pytest.fixture(scope="session")
def etcd_server(stack_dir: Path) -> Iterator[EtcdServer | None]:
    yield from _run_server(EtcdServer(stack_dir / "etcd"), "LOGAGENT_TEST_ETCD")


@pytest.fixture(scope="session")
def etcd(etcd_server: EtcdServer | None) -> str:
    """host:port of the real etcd."""
    return os.environ.get("LOGAGENT_TEST_ETCD") or etcd_server.endpoint  # type: ignore[union-attr]


@pytest.fixture
def auth_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """An etcd of the test's own with auth enabled and a root user (password ETCD_ROOT_PASSWORD)."""
    with running(EtcdServer(tmp_path / "auth-etcd"), "a test etcd") as server:
        enable_etcd_auth(server.endpoint)
        yield server


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[AgentProcess]]:
    """Agents a test started; all stopped at the end, their logs shown on failure."""
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.kill()


@pytest.fixture
def make_agent(tmp_path: Path, kafka: str, logdir: Path, agents: list[AgentProcess]):  # type: ignore[no-untyped-def]
    """make_agent(files=[...], etcd="", extra={...}, start=True) -> a running AgentProcess."""
    counter = [0]

    def make(files: list[dict] | None = None, etcd: str = "", extra: dict | None = None,
             start: bool = True, data_dir: Path | None = None, ip: str = "127.0.0.1",
             env: dict[str, str] | None = None) -> AgentProcess:
        counter[0] += 1
        n = counter[0]
        cfg = write_config(tmp_path / f"agent{n}.ini", kafka, data_dir or tmp_path / "data",
                           f"{logdir}/**", etcd=etcd, files=files, extra=extra, ip=ip)
        agent = AgentProcess(cfg, tmp_path / f"agent{n}.log", env=env)
        agents.append(agent)
        if start:
            agent.start()
        return agent

    return make


@pytest.fixture
def loaded_agent(make_agent, logdir: Path):  # type: ignore[no-untyped-def]
    """loaded_agent(name, rate, **make_agent's kwargs) -> (topic, agent, writer): a running agent
    shipping logdir/app.log to a new topic, and a LineWriter appending `rate` lines/s to that file
    (stopped at the end if the test did not stop it)."""
    writers: list[LineWriter] = []

    def start(name: str, rate: float, **agent_kw: Any) -> tuple[str, AgentProcess, LineWriter]:
        topic = new_topic(name)
        log = logdir / "app.log"
        log.touch()
        agent = make_agent(files=[{"path": str(log), "topic": topic}], **agent_kw)
        writers.append(LineWriter(log, name, rate=rate).start())
        return topic, agent, writers[-1]

    yield start
    for writer in writers:
        writer.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when == "call":
        from devstack.stack import tail

        for path in _SERVER_LOGS:
            report.sections.append((f"{path.name} (tail)", tail(path, 30)))
        for agent in item.funcargs.get("agents", []) or []:
            report.sections.append((f"{agent.log_path.name} (tail)", agent.log_tail(80)))
