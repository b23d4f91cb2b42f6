"""The agent as a real process (`python -m logagent run -c config`, as systemd runs it), its test
config, and plain HTTP to its status endpoints. Shared with bench/ (bench/harness.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from devstack.promtext import metric_sum, parse_metrics
from devstack.stack import listen_port, tail
from devstack.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]

# Loopback only: an http_proxy variable must not route requests to the agent elsewhere
# (urllib's default opener would send http://127.0.0.1/... to the proxy).
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body) of a GET, never through a proxy; (0, why) when nothing answered."""
    try:
        with _HTTP.open(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def render_config(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """config.ini text: a `[section]` per key, its `key = value` lines in order
    (shared with bench/, which writes its own sections with the agent's default intervals)."""
    return "".join(f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items()) + "\n"
                   for s, kv in sections.items())


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


class AgentProcess:
    """`python -m logagent run -c config` as a child process, as systemd would run it.

    Shared by the tests and bench/ (bench/harness.py's BenchAgent adds reaping with rusage for
    CPU accounting and a start-up wait of its own); every wait for the process goes through
    `_wait`, so a subclass that reaps differently changes one method."""

    def __init__(self, config: Path, log_path: Path, env: dict[str, str] | None = None, *,
                 base_env: Mapping[str, str] | None = None,
                 preexec_fn: Callable[[], None] | None = None, python: str | None = None) -> None:
        """env: variables set on top of base_env (default: this process's environment);
        preexec_fn: run in the child before exec (the benchmark's setsid and RLIMIT_NOFILE);
        python: the interpreter that runs the agent (default: this one)."""
        self.python = python or sys.executable
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

    def start(self, wait_ready: bool = True, timeout: float = 30.0) -> AgentProcess:
        with open(self.log_path, "ab") as log:
            self.t_spawn = time.perf_counter()
            self.proc = subprocess.Popen([self.python, "-m", "logagent", "run", "-c", str(self.config)],
                                         stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                         env=self.env, preexec_fn=self.preexec_fn)
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until /readyz answers 200; fails with the log's tail when the process exits first."""
        wait_until(lambda: self.ready() or not self.alive(), timeout, what="agent /readyz")
        if not self.alive():
            assert self.proc is not None
            raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.log_tail()}")

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
        return http_get(f"http://{self.http}{path}", timeout)

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
