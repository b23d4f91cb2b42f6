"""Helpers of the fault-injection suite: peak RSS, line-by-line tallies, an unprivileged agent."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import ROOT, AgentProcess, KafkaReader, LineWriter, wait_until

FLUSH_INTERVAL = 0.5  # registry_flush_interval that tests.support.write_config sets
RSS_LIMIT_MB = 150.0  # what "bounded" means here: the agent runs at ~40 MiB under load


def peak_rss_mb(agent: AgentProcess) -> float:
    """VmHWM (peak resident set) of the running agent, in MiB; 0 when it is not running."""
    if agent.proc is None or agent.proc.poll() is not None:
        return 0.0
    try:
        for line in Path(f"/proc/{agent.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


class PeakTracker:
    """The highest VmHWM seen across the incarnations of one or more agents."""

    def __init__(self) -> None:
        self.peak = 0.0

    def sample(self, *agents: AgentProcess) -> float:
        for agent in agents:
            self.peak = max(self.peak, peak_rss_mb(agent))
        return self.peak


@dataclass
class Tally:
    """Line-by-line comparison of what was written with what Kafka holds."""

    written: int
    delivered: int  # messages that carry an expected line, duplicates included
    missing: list[str] = field(default_factory=list)
    duplicated: int = 0
    unexpected: list[str] = field(default_factory=list)  # lines nobody wrote (garbled, cut)
    dup_runs: list[int] = field(default_factory=list)  # lengths of runs of consecutive duplicated lines
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (first index, length) of missing runs

    def describe(self) -> str:
        s = (f"written {self.written}, delivered {self.delivered}, missing {len(self.missing)}, "
             f"duplicated {self.duplicated}")
        if self.missing:
            s += f", missing runs {self.gaps[:8]} first {self.missing[:3]}"
        if self.dup_runs:
            s += f", duplicate runs {self.dup_runs[:12]}"
        if self.unexpected:
            s += f", {len(self.unexpected)} unexpected lines e.g. {[u[:60] for u in self.unexpected[:3]]}"
        return s


def tally(expected: list[str], got: list[str]) -> Tally:
    counts = Counter(got)
    wanted = set(expected)
    t = Tally(written=len(expected), delivered=sum(c for line, c in counts.items() if line in wanted))
    run = 0
    gap_start = -1
    for i, line in enumerate(expected):
        c = counts.get(line, 0)
        if c == 0:
            t.missing.append(line)
            if gap_start < 0:
                gap_start = i
        elif gap_start >= 0:
            t.gaps.append((gap_start, i - gap_start))
            gap_start = -1
        if c > 1:
            t.duplicated += c - 1
            run += 1
        elif run:
            t.dup_runs.append(run)
            run = 0
    if run:
        t.dup_runs.append(run)
    if gap_start >= 0:
        t.gaps.append((gap_start, len(expected) - gap_start))
    t.unexpected = [line for line in got if line not in wanted]
    return t


def data_of(reader: KafkaReader, path: str | None = None) -> list[str]:
    return [v["data"] for v in reader.values() if path is None or v.get("path") == path]


def read_all(reader: KafkaReader, count: int, timeout: float = 90.0, quiet: float = 2.0,
             last: str | None = None) -> None:
    """Read until `count` messages arrived, or the line `last` did (some lines may be missing: this
    does not fail, the tally tells), then until nothing new comes for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    needle = f'"data":{json.dumps(last)}'.encode() if last is not None else None
    while len(reader.messages) < count and time.monotonic() < deadline:
        before = len(reader.messages)
        reader.poll(0.5)
        if needle is not None and any(needle in m.value() for m in reader.messages[before:]):
            break
    reader.settle(quiet=quiet, timeout=max(5.0, deadline - time.monotonic()))


def wait_delivered(reader: KafkaReader, line: str, timeout: float, what: str = "") -> float:
    """Poll until `line` is among the delivered data; returns the seconds it took."""
    t0 = time.monotonic()

    def seen() -> bool:
        reader.poll(0.3)
        return any(line in m.value().decode(errors="replace") for m in reader.messages[-5000:])

    wait_until(seen, timeout, interval=0.0, what=what or f"line {line!r} in Kafka")
    return time.monotonic() - t0


# ---------------------------------------------------------------------------- running as nobody

SETPRIV = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def nobody_ids() -> tuple[int, int]:
    pw = pwd.getpwnam("nobody")
    return pw.pw_uid, pw.pw_gid


def check_setpriv() -> str:
    """'' when agents can run unprivileged here, else why not."""
    if os.geteuid() != 0:
        return "the suite does not run as root: permission tests need root to drop to nobody"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    try:
        nobody_ids()
    except KeyError:
        return "no user 'nobody'"
    proc = subprocess.run([*SETPRIV, sys.executable, "-c", "import logagent"], capture_output=True,
                          text=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        return f"the agent cannot be imported as nobody: {proc.stderr.strip()[-300:]}"
    return ""


class UnprivilegedAgent(AgentProcess):
    """The agent run as nobody:nogroup through setpriv, so file permissions apply to it."""

    def start(self, wait_ready: bool = True, timeout: float = 30.0) -> UnprivilegedAgent:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*SETPRIV, sys.executable, "-m", "logagent", "run", "-c",
                                          str(self.config)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                         env=self.env)
        if wait_ready:
            wait_until(lambda: self.ready() or not self.alive(), timeout, what="agent /readyz")
            if not self.alive():
                raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.log_tail()}")
        return self


def metric_samples(agent: AgentProcess, name: str) -> list[tuple[str, float]]:
    """(labels, value) of every sample of a metric, for messages."""
    status, body = agent.get("/metrics")
    out: list[tuple[str, float]] = []
    if status != 200:
        return out
    for line in body.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            if head.split("{", 1)[0] == name:
                out.append((head[len(name):], float(value)))
    return out


def any_metric(agent: AgentProcess, names: tuple[str, ...], **labels: str) -> dict[str, Any]:
    """{name: value} of the metrics among `names` that have a sample with these labels and value > 0."""
    found = {}
    for name in names:
        value = agent.metric(name, **labels)
        if value > 0:
            found[name] = value
    return found


def pause(writer: LineWriter) -> int:
    """Pause a LineWriter (it stays alive) and return how many lines it wrote."""
    writer._pause.set()
    time.sleep(2 * writer.burst / writer.rate + 0.05)  # a burst in progress ends
    return writer.count


def resume(writer: LineWriter) -> None:
    writer._pause.clear()
