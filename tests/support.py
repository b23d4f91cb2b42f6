"""Helpers shared by the tests: run the agent as a real process, read Kafka back, wait on conditions."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping

from devstack.stack import StackError, listen_port, tail

ROOT = Path(__file__).resolve().parent.parent

# Loopback only: an http_proxy variable must not route requests to the agent elsewhere
# (urllib's default opener would send http://127.0.0.1/... to the proxy).
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def wait_until(cond: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05,
               what: str = "condition") -> Any:
    """Poll cond() until it returns something truthy; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def new_topic(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class KafkaReader:
    """A real consumer reading one or more topics from the beginning.

    Partitions are assigned by hand (no group rebalances, which would re-deliver
    messages and look like duplicates); a topic that does not exist yet is assigned
    as soon as it appears.
    """

    def __init__(self, bootstrap: str, *topics: str) -> None:
        from confluent_kafka import Consumer

        self.consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "topic.metadata.refresh.interval.ms": 500,
        })
        self._pending = set(topics)
        self.messages: list[Any] = []

    def _assign_new_topics(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        md = self.consumer.list_topics(timeout=2)
        ready = [t for t in self._pending if t in md.topics and md.topics[t].partitions
                 and md.topics[t].error is None]
        if ready:
            self.consumer.incremental_assign([TopicPartition(t, p, OFFSET_BEGINNING)
                                              for t in ready for p in md.topics[t].partitions])
            self._pending.difference_update(ready)

    def poll(self, seconds: float = 0.5) -> int:
        if self._pending:
            self._assign_new_topics()
            if self._pending and not self.consumer.assignment():
                time.sleep(min(seconds, 0.2))
                return 0
        got = 0
        for msg in self.consumer.consume(num_messages=10000, timeout=seconds):
            if msg.error():
                continue
            self.messages.append(msg)
            got += 1
        return got

    def read(self, count: int, timeout: float = 30.0) -> list[Any]:
        """Read until `count` messages arrived in all (or fail after timeout)."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            self.poll(0.5)
        if len(self.messages) < count:
            raise AssertionError(f"got {len(self.messages)} of {count} messages within {timeout}s")
        return self.messages

    def settle(self, quiet: float = 2.0, timeout: float = 30.0) -> list[Any]:
        """Read until nothing new arrives for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < deadline:
            if self.poll(0.3):
                last = time.monotonic()
            elif time.monotonic() - last >= quiet:
                break
        return self.messages

    def values(self) -> list[dict[str, Any]]:
        return [json.loads(m.value()) for m in self.messages]

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> "KafkaReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_config(path: Path, kafka: str, data_dir: Path, allowed: str, etcd: str = "",
                 files: list[dict[str, Any]] | None = None, extra: dict[str, dict[str, str]] | None = None,
                 ip: str = "127.0.0.1") -> Path:
    """A config.ini for a test agent (loopback only, fast intervals)."""
    sections: dict[str, dict[str, str]] = {
        "kafka": {"address": kafka, "chan_size": "10000"},
        "kafka.producer": {"linger.ms": "5"},
        "etcd": {"address": etcd},
        "agent": {"ip": ip, "hostname": "test-host", "data_dir": str(data_dir), "allowed_paths": allowed,
                  "http_listen": f"127.0.0.1:{listen_port()}", "log_level": "INFO",
                  "stat_interval": "0.5", "scan_interval": "0.5", "rotate_wait": "1",
                  "registry_flush_interval": "0.5", "shutdown_timeout": "20"},
        "collect": {"files": json.dumps(files or [])},
        "sysinfo": {"enabled": "false"},
    }
    for section, values in (extra or {}).items():
        sections.setdefault(section, {}).update(values)
    path.write_text(render_config(sections))
    return path


def render_config(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """config.ini text: a `[section]` per key, its `key = value` lines in order
    (shared with bench/, which writes its own sections with the agent's default intervals)."""
    return "".join(f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items()) + "\n"
                   for s, kv in sections.items())


def parse_metrics(body: str) -> dict[str, float]:
    """A /metrics text body as {'name{labels}': value}; comment and unparsable lines skipped.

    Hand-rolled rather than prometheus_client.parser: the benchmark scrapes agents with 10,000
    files while measuring them on 2 shared cores; on 80,000 samples (6 MiB) this took 0.05 s
    and the parser 1.4 s."""
    out: dict[str, float] = {}
    for line in body.splitlines():
        if not line or line[0] == "#":
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            pass
    return out


def metric_sum(samples: Mapping[str, float] | None, name: str, **labels: str) -> float:
    """Sum of the samples of metric `name` whose labels include `labels` (0 when there are none)."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum((value for key, value in (samples or {}).items()
                if key.split("{", 1)[0] == name and all(w in key for w in want)), 0.0)


class AgentProcess:
    """`python -m logagent run -c config` as a child process, as systemd would run it.

    Shared by the tests and bench/ (bench/harness.py's BenchAgent adds reaping with rusage for
    CPU accounting and a start-up wait of its own); every wait for the process goes through
    `_wait`, so a subclass that reaps differently changes one method."""

    def __init__(self, config: Path, log_path: Path, env: dict[str, str] | None = None, *,
                 base_env: Mapping[str, str] | None = None,
                 preexec_fn: Callable[[], None] | None = None) -> None:
        """env: variables set on top of base_env (default: this process's environment);
        preexec_fn: run in the child before exec (the benchmark's setsid and RLIMIT_NOFILE)."""
        self.config = config
        self.log_path = log_path
        self.env = dict(os.environ if base_env is None else base_env, **(env or {}))
        self.preexec_fn = preexec_fn
        self.proc: subprocess.Popen[bytes] | None = None
        self.t_spawn = 0.0  # time.perf_counter() just before the spawn
        self.http = ""
        for line in config.read_text().splitlines():
            if line.startswith("http_listen"):
                self.http = line.split("=", 1)[1].strip()

    def start(self, wait_ready: bool = True, timeout: float = 30.0) -> "AgentProcess":
        with open(self.log_path, "ab") as log:
            self.t_spawn = time.perf_counter()
            self.proc = subprocess.Popen([sys.executable, "-m", "logagent", "run", "-c", str(self.config)],
                                         stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=self.env,
                                         preexec_fn=self.preexec_fn)
        if wait_ready:
            wait_until(lambda: self.ready() or not self.alive(), timeout, what="agent /readyz")
            if not self.alive():
                raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.log_tail()}")
        return self

    def _wait(self, timeout: float | None) -> int | None:
        """The exit code once the process has ended, waiting up to `timeout` s (None: no limit);
        None while it still runs."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def alive(self) -> bool:
        return self.proc is not None and self._wait(0) is None

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        try:
            with _HTTP.open(f"http://{self.http}{path}", timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def scrape(self, timeout: float = 5.0) -> dict[str, float] | None:
        """All /metrics samples (parse_metrics), or None when /metrics does not answer 200."""
        status, body = self.get("/metrics", timeout)
        return parse_metrics(body) if status == 200 else None

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include `labels`."""
        status, body = self.get("/metrics")
        assert status == 200, body
        return metric_sum(parse_metrics(body), name, **labels)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the clean stop. One that takes longer than `timeout` is killed and
        handed to stop_timed_out."""
        if self.proc is None:
            return 0
        if self._wait(0) is None:
            # os.kill, not Popen.send_signal: that polls first and could reap the child before
            # a subclass's _wait collects its rusage. An unreaped pid cannot be reused.
            os.kill(self.proc.pid, signal.SIGTERM)
            if self._wait(timeout) is None:
                self.kill()
                self.stop_timed_out(timeout)
        assert self.proc.returncode is not None
        return self.proc.returncode

    def stop_timed_out(self, timeout: float) -> None:
        """An agent that ignored SIGTERM for `timeout` s (already killed): a test fails."""
        raise AssertionError(f"agent did not stop within {timeout}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """kill -9: the crash."""
        if self.proc is not None and self._wait(0) is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self._wait(None)

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class LineWriter:
    """Appends numbered lines to a file from a thread, reopening the name for every burst
    (as an application that reopens its log after rotation would)."""

    def __init__(self, path: Path, name: str, rate: float = 2000.0, burst: int = 20) -> None:
        import threading

        self.path = path
        self.name = name
        self.rate = rate
        self.burst = burst
        self.count = 0
        self._stop = threading.Event()
        self._pause = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"writer-{name}", daemon=True)

    def line(self, i: int) -> str:
        return f"{self.name} {i:08d}"

    def _run(self) -> None:
        interval = self.burst / self.rate
        while not self._stop.is_set():
            if not self._pause.is_set():
                with open(self.path, "a") as f:
                    f.write("".join(self.line(self.count + k) + "\n" for k in range(self.burst)))
                self.count += self.burst
            time.sleep(interval)

    def start(self) -> "LineWriter":
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.count

    def expected(self) -> list[str]:
        return [self.line(i) for i in range(self.count)]


def check_delivery(expected: list[str], got: list[str], max_dups: int | None = 0) -> None:
    """Every expected line arrived, in order of first arrival; at most max_dups duplicates."""
    from collections import Counter

    counts = Counter(got)
    missing = [line for line in expected if counts[line] == 0]
    assert not missing, f"{len(missing)} of {len(expected)} lines missing, first: {missing[:5]}"
    dups = sum(c - 1 for c in counts.values() if c > 1)
    if max_dups is not None:
        assert dups <= max_dups, f"{dups} duplicated lines (allowed {max_dups})"
    firsts: list[str] = []
    seen: set[str] = set()
    for line in got:
        if line not in seen:
            seen.add(line)
            firsts.append(line)
    wanted = set(expected)
    assert [x for x in firsts if x in wanted] == expected, "lines arrived out of order"


def start_or_fail(server: Any, what: str) -> None:
    """Start a test server (KafkaServer, EtcdServer, KafkaCluster); one that does not start
    fails the test loudly, in CI and out of it: never a skip."""
    import pytest  # here, not at the top: bench/ imports this module outside pytest

    try:
        server.start()
    except (StackError, OSError) as exc:
        pytest.fail(f"could not start {what}: {exc}", pytrace=False)


def make_certs(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl
    (installed by `make setup`). Also server.pem: the server's key and certificate in one file,
    as Kafka's PEM keystore reads them."""
    if shutil.which("openssl") is None:
        raise RuntimeError("the TLS tests need the openssl command: apt-get install openssl (make setup does)")
    folder.mkdir(parents=True)

    def ssl(*args: str) -> None:
        done = subprocess.run(["openssl", *args], cwd=folder, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"openssl {args}: {done.stderr}"

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=logagent-test-ca")
    for name, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        (folder / f"{name}.ext").write_text(f"subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n")
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    (folder / "server.pem").write_text((folder / "server.key").read_text() + (folder / "server.crt").read_text())
    return {n: folder / n for n in ("ca.crt", "server.crt", "server.key", "server.pem", "client.crt", "client.key")}
