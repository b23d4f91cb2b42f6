#!/usr/bin/env python3
"""logagent benchmark (issue 7): `make bench`, or `python bench/bench.py [options]`.

Starts its own single-node Kafka broker (devstack) on a free loopback port, runs the
scenarios below against it, prints a markdown table per scenario and writes them all
to bench/RESULTS.md together with the command, the machine and the date.

Scenarios (select with --only, comma-separated):
  throughput  1,000,000 lines of ~100 bytes (and ~1 KB lines) written to a file up front;
              agent and Debian's `kcat -P -l` alternate on the same file, same broker, same
              acks/idempotence/compression; medians of --runs runs; counts verified by consuming.
  latency     a writer appends 20,000 lines/s over 10 files for 30 s; write -> broker append
              time (topic with message.timestamp.type=LogAppendTime), p50/p99/max; kept up?
  files       1,000 and 10,000 files, each appended to once a second: agent CPU %, fds, RSS.
  idle        1,000 files, no writes: agent CPU %.
  sysinfo     the sysinfo reporter at a 1 s interval vs disabled: CPU % difference.
  profile     (not in the default set; also --profile) one extra 100-byte throughput run of
              the agent under `py-spy record`; prints the top functions by self time.

Only loopback traffic. Test files live in a temporary folder, removed at the end
(--keep-tmp keeps it). A default run takes about 6-7 minutes; --quick is a smoke run (1 minute).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import platform
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
OUT_DIR = BENCH_DIR / "out"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ALL_SCENARIOS = ("throughput", "latency", "files", "idle", "sysinfo")
EXTRA_SCENARIOS = ("profile",)
PRODUCER = {"acks": "all", "enable.idempotence": "true", "compression.type": "lz4"}
NOTES_PLACEHOLDER = ("_Filled in by hand: what the numbers mean, what changed since the last run. "
                     "This section and the \"Optimisation log\" section are kept when bench.py "
                     "rewrites this file._")

# Loopback only: never let an http_proxy variable route the /metrics scrapes elsewhere.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


# --------------------------------------------------------------------------- small helpers

def median(values: Iterable[float]) -> float:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else float("nan")


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile of a sorted list."""
    if not values:
        return float("nan")
    k = max(0, min(len(values) - 1, int(round(p / 100.0 * len(values) + 0.5)) - 1))
    return values[k]


def fmt_int(v: float) -> str:
    return "n/a" if v != v else f"{v:,.0f}"


def fmt(v: float, nd: int = 1) -> str:
    return "n/a" if v != v else f"{v:,.{nd}f}"


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nofile_for(needed: int) -> tuple[int, int]:
    """The RLIMIT_NOFILE (soft, hard) a child needing `needed` descriptors should get."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft, hard
    if hard == resource.RLIM_INFINITY or hard >= needed:
        return needed, hard
    if os.geteuid() == 0:  # root may raise the hard limit too
        return needed, needed
    return hard, hard


def preexec_nofile(limits: tuple[int, int] | None) -> Callable[[], None] | None:
    if limits is None:
        return None

    def apply() -> None:
        os.setsid()
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
    return apply


def clean_env() -> dict[str, str]:
    """The environment for children: no LOGAGENT_* overrides from the caller's shell."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LOGAGENT_")}


def metric(m: dict[str, float] | None, name: str, **labels: str) -> float:
    """Sum of the series `name` whose labels include `labels` (0 when absent)."""
    if not m:
        return 0.0
    want = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for key, val in m.items():
        base = key.split("{", 1)[0]
        if base != name:
            continue
        if all(w in key for w in want):
            total += val
    return total


# --------------------------------------------------------------------------- machine

def machine_info(kafka_version: str, kcat_version: str) -> dict[str, str]:
    info: dict[str, str] = {}
    info["cores (nproc)"] = f"{len(os.sched_getaffinity(0))} (os.cpu_count {os.cpu_count()})"
    try:
        mem = Path("/proc/meminfo").read_text()
        kb = int(re.search(r"MemTotal:\s+(\d+)", mem).group(1))  # type: ignore[union-attr]
        info["memory (MemTotal)"] = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        info["memory (MemTotal)"] = "?"
    try:
        cpu = Path("/proc/cpuinfo").read_text()
        model = re.search(r"model name\s*:\s*(.*)", cpu)
        info["CPU model"] = model.group(1).strip() if model else platform.processor() or "?"
        mhz = re.search(r"cpu MHz\s*:\s*(.*)", cpu)
        if mhz:
            info["CPU model"] += f" ({float(mhz.group(1)):.0f} MHz)"
    except OSError:
        info["CPU model"] = "?"
    info["kernel"] = f"{platform.system()} {platform.release()}"
    info["load average at start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    info["python"] = f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})"
    try:
        import confluent_kafka

        ver = confluent_kafka.version()
        ver = ver[0] if isinstance(ver, tuple) else ver
        info["confluent-kafka / librdkafka (agent)"] = f"{ver} / {confluent_kafka.libversion()[0]}"
    except ImportError:
        info["confluent-kafka / librdkafka"] = "?"
    try:
        import logagent

        info["logagent"] = logagent.__version__
    except Exception:  # noqa: BLE001
        pass
    info["kcat"] = kcat_version
    info["Kafka broker"] = kafka_version
    return info


def agent_producer_defaults() -> str:
    try:
        from logagent.producer import PRODUCER_DEFAULTS

        keys = ("linger.ms", "batch.num.messages", "batch.size", "queue.buffering.max.messages",
                "queue.buffering.max.kbytes")
        return ", ".join(f"{k}={PRODUCER_DEFAULTS[k]}" for k in keys if k in PRODUCER_DEFAULTS) or "librdkafka's"
    except Exception:  # noqa: BLE001
        return "see logagent/producer.py"


def kafka_version() -> str:
    try:
        pom = (ROOT / "devstack" / "pom.xml").read_text()
        m = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
        if m:
            return f"Apache Kafka {m.group(1)} (devstack/pom.xml), KRaft single node, 1 partition per topic"
    except OSError:
        pass
    return "?"


def kcat_version(kcat: str | None) -> str:
    if not kcat:
        return "not used"
    try:
        out = subprocess.run([kcat, "-V"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"Version (\S+).*?librdkafka (\S+)", out)
        return f"{m.group(1)} (librdkafka {m.group(2)}), {kcat}" if m else out.strip().splitlines()[-1]
    except (OSError, subprocess.SubprocessError):
        return "?"


def ensure_kcat() -> str:
    """Debian's kcat: install it with apt-get when root and absent, else fail clearly."""
    found = shutil.which("kcat")
    if found:
        return found
    if os.geteuid() != 0:
        raise BenchError("kcat is not installed and this is not root: run `sudo apt-get install -y kcat` "
                         "(Debian's kcat is the baseline of the throughput scenario), or skip it with "
                         "--only latency,files,idle,sysinfo")
    if shutil.which("apt-get") is None:
        raise BenchError("kcat is not installed and there is no apt-get to install it: install kcat by hand")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log("kcat not found: apt-get install -y kcat")
    if subprocess.run(["apt-get", "install", "-y", "kcat"], env=env).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env)
        if subprocess.run(["apt-get", "install", "-y", "kcat"], env=env).returncode != 0:
            raise BenchError("apt-get install -y kcat failed")
    found = shutil.which("kcat")
    if not found:
        raise BenchError("kcat still not on PATH after apt-get install")
    return found


# --------------------------------------------------------------------------- kafka helpers

class KafkaTools:
    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka.admin import AdminClient

        self.bootstrap = bootstrap
        # log_level 2: keep librdkafka's connection chatter (e.g. when the broker stops) off stderr.
        self.admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 2})

    def create_topic(self, topic: str, config: dict[str, str] | None = None) -> None:
        from confluent_kafka.admin import NewTopic

        fut = self.admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1,
                                                 config=config or {})], operation_timeout=30)
        fut[topic].result(timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until the metadata shows a leader
            md = self.admin.list_topics(topic, timeout=5)
            t = md.topics.get(topic)
            if t is not None and t.error is None and t.partitions and t.partitions[0].leader >= 0:
                return
            time.sleep(0.1)
        raise BenchError(f"topic {topic} has no leader after 30 s")

    def delete_topic(self, topic: str) -> None:
        try:
            self.admin.delete_topics([topic], operation_timeout=30)[topic].result(timeout=60)
        except Exception as exc:  # noqa: BLE001 - disk hygiene only
            log(f"could not delete topic {topic}: {exc}")

    def consume(self, topic: str, on_batch: Callable[[list[Any]], None] | None = None,
                timeout: float = 300) -> tuple[int, int, Any, Any]:
        """Read partition 0 from the beginning to the high watermark.

        Returns (messages counted, high watermark, first message, last message).
        """
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                      "enable.auto.commit": False, "enable.partition.eof": False, "log_level": 2,
                      "fetch.max.bytes": 64 * 1024 * 1024, "max.partition.fetch.bytes": 16 * 1024 * 1024,
                      "queued.max.messages.kbytes": 256 * 1024})
        try:
            low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
            c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
            count, last_off = 0, -1
            first = last = None
            deadline = time.monotonic() + timeout
            while last_off < high - 1:
                if time.monotonic() > deadline:
                    raise BenchError(f"consuming {topic}: stuck at offset {last_off} of {high}")
                msgs = c.consume(num_messages=10000, timeout=1.0)
                if not msgs:
                    continue
                good = [m for m in msgs if m.error() is None]
                bad = [m for m in msgs if m.error() is not None
                       and m.error().code() != KafkaError._PARTITION_EOF]
                if bad:
                    raise BenchError(f"consuming {topic}: {bad[0].error()}")
                if not good:
                    continue
                if first is None:
                    first = good[0]
                last = good[-1]
                last_off = last.offset()
                count += len(good)
                if on_batch is not None:
                    on_batch(good)
            return count, high, first, last
        finally:
            c.close()


# --------------------------------------------------------------------------- processes

def _reap(pid: int, timeout: float) -> tuple[int, Any] | None:
    deadline = time.monotonic() + timeout
    while True:
        wpid, status, ru = os.wait4(pid, os.WNOHANG)
        if wpid == pid:
            return status, ru
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


class AgentProc:
    """One `python -m logagent run -c ini` child, its /metrics and its rusage."""

    def __init__(self, workdir: Path, ini_text: str, http_port: int, name: str,
                 nofile: tuple[int, int] | None = None) -> None:
        self.workdir = workdir
        self.port = http_port
        self.ini = workdir / f"{name}.ini"
        self.ini.write_text(ini_text)
        self.log_path = workdir / f"{name}.log"
        self.name = name
        self.nofile = nofile
        self.proc: subprocess.Popen[bytes] | None = None
        self.status: int | None = None
        self.rusage: Any = None
        self.t_spawn = 0.0

    def start(self) -> "AgentProc":
        logf = open(self.log_path, "wb")
        self.t_spawn = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "logagent", "run", "-c", str(self.ini)],
                                     stdout=logf, stderr=subprocess.STDOUT, cwd=str(ROOT), env=clean_env(),
                                     preexec_fn=preexec_nofile(self.nofile) if self.nofile else os.setsid)
        logf.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        if self.proc is None or self.status is not None:
            return False
        got = _reap(self.proc.pid, 0)
        if got is not None:
            self.status, self.rusage = got
            self.proc.returncode = os.waitstatus_to_exitcode(self.status)
            return False
        return True

    def scrape(self, timeout: float = 5.0) -> dict[str, float] | None:
        try:
            with _HTTP.open(f"http://127.0.0.1:{self.port}/metrics", timeout=timeout) as resp:
                body = resp.read().decode()
        except OSError:
            return None
        out: dict[str, float] = {}
        for line in body.splitlines():
            if not line or line[0] == "#":
                continue
            key, _, val = line.rpartition(" ")
            try:
                out[key] = float(val)
            except ValueError:
                pass
        return out

    def wait_metrics(self, timeout: float = 30) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.scrape()
            if m is not None:
                return m
            if not self.alive():
                raise BenchError(f"agent {self.name} exited ({self.status}) during start-up:\n{self.log_tail()}")
            time.sleep(0.05)
        raise BenchError(f"agent {self.name}: no /metrics after {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 60) -> tuple[int, Any]:
        """SIGTERM, wait (SIGKILL after timeout); returns (wait status, rusage)."""
        if self.proc is None:
            raise BenchError("agent never started")
        if self.status is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            got = _reap(self.proc.pid, timeout)
            if got is None:
                log(f"agent {self.name} did not stop within {timeout:.0f}s of SIGTERM: SIGKILL")
                os.kill(self.proc.pid, signal.SIGKILL)
                got = _reap(self.proc.pid, 10)
            if got is None:
                raise BenchError(f"agent {self.name} (pid {self.proc.pid}) could not be reaped")
            self.status, self.rusage = got
            self.proc.returncode = os.waitstatus_to_exitcode(self.status)
        return self.status, self.rusage

    def kill(self) -> None:
        if self.proc is not None and self.status is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            got = _reap(self.proc.pid, 10)
            if got is not None:
                self.status, self.rusage = got
                self.proc.returncode = os.waitstatus_to_exitcode(self.status)


def agent_ini(ctx: "Ctx", data_dir: Path, http_port: int, files: list[dict[str, Any]],
              sysinfo: dict[str, Any] | None = None, agent_extra: dict[str, Any] | None = None) -> str:
    agent = {"ip": "127.0.0.1", "hostname": "bench", "data_dir": str(data_dir),
             "allowed_paths": f"{ctx.tmp}/**", "http_listen": f"127.0.0.1:{http_port}",
             "log_level": "INFO"}
    agent.update(agent_extra or {})
    si = {"enabled": "false"}
    si.update({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (sysinfo or {}).items()})
    lines = ["[kafka]", f"address = {ctx.bootstrap}", "", "[kafka.producer]"]
    lines += [f"{k} = {v}" for k, v in PRODUCER.items()]
    lines += ["", "[etcd]", "address =", "", "[agent]"]
    lines += [f"{k} = {v}" for k, v in agent.items()]
    lines += ["", "[collect]", f"files = {json.dumps(files)}", "", "[sysinfo]"]
    lines += [f"{k} = {v}" for k, v in si.items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- context

@dataclass
class Target:
    what: str
    measured: str
    ok: bool | None  # None: not measured

    @property
    def verdict(self) -> str:
        return "n/a" if self.ok is None else ("PASS" if self.ok else "FAIL")


@dataclass
class Section:
    title: str
    body: str
    seconds: float = 0.0


@dataclass
class Ctx:
    args: argparse.Namespace
    tmp: Path
    bootstrap: str = ""
    kafka: Any = None
    tools: KafkaTools | None = None
    kcat: str | None = None
    sections: list[Section] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    live: list[Any] = field(default_factory=list)  # agents and writers to kill on the way out
    seq: int = 0

    def name(self, prefix: str) -> str:
        self.seq += 1
        return f"bench-{prefix}-{self.seq:02d}-{uuid.uuid4().hex[:6]}"

    def workdir(self, name: str) -> Path:
        d = self.tmp / "runs" / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def broker_cpu(self) -> float:
        try:
            import psutil

            t = psutil.Process(self.kafka.proc.pid).cpu_times()
            return t.user + t.system
        except Exception:  # noqa: BLE001
            return float("nan")


# --------------------------------------------------------------------------- data files

WORDS = ("GET POST PUT DELETE api v1 v2 users items orders cart checkout login session token id status "
         "ok error warn info debug timeout retry cache hit miss upstream backend db query select insert "
         "update from where limit offset took ms bytes client server request response latency user-agent "
         "Mozilla curl python-requests okhttp java go-http-client worker pool queue job done failed "
         "payment invoice shipment customer region eu us ap zone a b c trace span parent sampled").split()


def make_lines_file(path: Path, n: int, size: int, seed: int = 7) -> int:
    """n log-like lines of exactly `size` bytes (newline included); returns the file size."""
    rng = random.Random(seed)
    pool = " ".join(rng.choice(WORDS) for _ in range(200_000)).encode()
    plen = len(pool)
    levels = (b"INFO ", b"INFO ", b"INFO ", b"WARN ", b"ERROR", b"DEBUG")
    base = int(time.time()) - 86400
    chunk: list[bytes] = []
    with open(path, "wb") as f:
        last_ts = b""
        for i in range(n):
            if i % 1000 == 0:
                last_ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + i // 1000)).encode()
            head = b"%s.%06dZ %s req=%09d host=web-%02d " % (last_ts, (i * 997) % 1000000, levels[i % 6],
                                                               i, i % 17)
            need = size - 1 - len(head)
            off = rng.randrange(0, plen - need - 1)
            chunk.append(head + pool[off:off + need] + b"\n")
            if len(chunk) >= 10000:
                f.write(b"".join(chunk))
                chunk.clear()
        f.write(b"".join(chunk))
    return path.stat().st_size


def read_first_last(path: Path) -> tuple[str, str]:
    with open(path, "rb") as f:
        first = f.readline().rstrip(b"\n")
        f.seek(max(0, path.stat().st_size - 64 * 1024))
        tail = f.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return first.decode(), tail.decode()


# --------------------------------------------------------------------------- writers (child processes)

def writer_main(spec: dict[str, Any]) -> int:
    """Runs in a child process: appends lines stamped with time.time_ns(); prints a JSON summary."""
    d = Path(spec["dir"])
    nfiles = spec["nfiles"]
    pattern = spec["pattern"]
    fds = [os.open(d / (pattern % i), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) for i in range(nfiles)]
    pad = (b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt "
           b"ut labore et dolore magna aliqua ") * 20
    size = spec.get("line_bytes", 100)
    seconds = spec["seconds"]
    written = 0
    max_lag = 0.0
    start_wall = time.time()
    t0 = time.monotonic()
    if spec["mode"] == "rate":
        # Bursts every `period` seconds; each burst writes rate*period lines, spread over the files,
        # one write() per file per burst. Time-based schedule: a late burst is not skipped.
        period = spec.get("period", 0.01)
        per_file = max(1, round(spec["rate"] * period / nfiles))
        k = 0
        while True:
            target = t0 + k * period
            now = time.monotonic()
            if target >= t0 + seconds:
                break
            if target > now:
                time.sleep(target - now)
            else:
                max_lag = max(max_lag, now - target)
            for i, fd in enumerate(fds):
                ts = time.time_ns()
                buf = []
                for _ in range(per_file):
                    head = b"%d %010d f%02d " % (ts, written, i)
                    buf.append(head + pad[:size - 1 - len(head)] + b"\n")
                    written += 1
                os.write(fd, b"".join(buf))
            k += 1
    elif spec["mode"] == "slow":
        # One line per file per `cycle` seconds, the files spread over `slices` writes per cycle.
        cycle = spec.get("cycle", 1.0)
        slices = spec.get("slices", 100)
        per_slice = max(1, -(-nfiles // slices))
        k = 0
        while True:
            target = t0 + k * cycle / slices
            now = time.monotonic()
            if target >= t0 + seconds:
                break
            if target > now:
                time.sleep(target - now)
            else:
                max_lag = max(max_lag, now - target)
            lo = (k % slices) * per_slice
            for i in range(lo, min(nfiles, lo + per_slice)):
                head = b"%d %010d f%05d " % (time.time_ns(), written, i)
                os.write(fds[i], head + pad[:size - 1 - len(head)] + b"\n")
                written += 1
            k += 1
    else:
        raise SystemExit(f"unknown writer mode {spec['mode']}")
    elapsed = time.monotonic() - t0
    for fd in fds:
        os.close(fd)
    print(json.dumps({"lines": written, "seconds": elapsed, "max_lag": max_lag, "start": start_wall,
                      "end": time.time()}))
    return 0


def produce_only_main(spec: dict[str, Any]) -> int:
    """Child of the throughput scenario: a bound, not a shipper. The agent's messages for the
    file are built in memory first (not timed); then a confluent-kafka Producer with the agent's
    settings sends them the way KafkaSink does (positional produce(), a delivery report per
    message counted in a poll thread), with no reading, splitting, queue or event loop.
    Prints seconds and CPU from Producer creation to the last delivery report."""
    from confluent_kafka import Producer

    from logagent.lines import LineSplitter, MessageFormat, json_plain, utc_timestamp
    from logagent.producer import PRODUCER_DEFAULTS

    path = spec["path"]
    data = Path(path).read_bytes()
    split = LineSplitter(1 << 20).feed_plain(data, 0)
    assert split is not None
    start, parts = split
    values = MessageFormat("127.0.0.1", "bench", path).build_plain(start, parts, utc_timestamp(),
                                                                  json_plain(data))
    del data, parts
    n = len(values)
    key = f"127.0.0.1:{path}".encode()
    conf: dict[str, Any] = dict(PRODUCER_DEFAULTS, **PRODUCER)
    conf["bootstrap.servers"] = spec["bootstrap"]
    done = [0]
    finished = threading.Event()

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            raise SystemExit(f"delivery failed: {err}")
        done[0] += 1
        if done[0] == n:
            finished.set()

    c0, t0 = os.times(), time.perf_counter()
    producer = Producer(conf)
    running = True

    def poll() -> None:
        while running:
            producer.poll(0.1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    produce, topic, i = producer.produce, spec["topic"], 0
    while i < n:
        try:
            for i in range(i, n):  # noqa: B020 - resumes where BufferError stopped it
                produce(topic, values[i], key, -1, on_delivery)
            i = n
        except BufferError:
            time.sleep(0.001)
    finished.wait()
    t1, c1 = time.perf_counter(), os.times()
    running = False
    poller.join()
    print(json.dumps({"seconds": t1 - t0, "cpu": (c1.user - c0.user) + (c1.system - c0.system)}))
    return 0


class Writer:
    def __init__(self, ctx: Ctx, spec: dict[str, Any], nofile: tuple[int, int] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--_writer", json.dumps(spec)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(),
                                     preexec_fn=preexec_nofile(nofile) if nofile else None)
        self.ctx = ctx
        ctx.live.append(self)

    def result(self, timeout: float) -> dict[str, Any]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchError("writer did not finish in time") from None
        finally:
            if self in self.ctx.live:
                self.ctx.live.remove(self)
        if self.proc.returncode != 0:
            raise BenchError(f"writer failed ({self.proc.returncode}): {err.decode()[-2000:]}")
        return json.loads(out.decode().strip().splitlines()[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------- 1. throughput

class PeakRss:
    """Peak RSS of a running child: the kernel's VmHWM from /proc/<pid>/status, read every 20 ms
    until the child exits (VmHWM only grows, so the last reading is the peak).

    Not ru_maxrss from wait4: Linux carries the high-water mark of the memory the child had
    before exec, i.e. of this forked benchmark process, into the child's rusage. After this
    process has consumed a few topics that was 200-400 MB, reported as the agent's or kcat's.
    """

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"peak-rss-{pid}", daemon=True)
        self._thread.start()

    def sample(self) -> None:
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        self.peak_kb = max(self.peak_kb, int(line.split()[1]))
                        break
        except OSError:  # gone (or a zombie: no memory left to read)
            pass

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def stop(self) -> int:
        """Stop sampling (call before the child is reaped); the peak in KiB."""
        self._stop.set()
        self._thread.join()
        return self.peak_kb


@dataclass
class RunResult:
    tool: str
    lines: int
    wall: float
    cpu: float
    maxrss_kb: int
    broker_cpu: float
    verified: int
    ok: bool
    note: str = ""
    t_up: float = float("nan")  # agent: seconds from spawn until /metrics answered
    t_first: float = float("nan")  # agent: seconds from spawn until the first acknowledgement was seen
    msg_bytes: int = 0  # size of the first Kafka message (the agent's JSON, or kcat's raw line)

    @property
    def rate(self) -> float:
        return self.lines / self.wall if self.wall > 0 else float("nan")


def agent_throughput_run(ctx: Ctx, path: Path, n: int, label: str,
                         profile_out: Path | None = None, spy_args: tuple[str, ...] = (),
                         entry_extra: dict[str, Any] | None = None) -> RunResult:
    assert ctx.tools is not None
    name = ctx.name(f"agent{label}")
    topic = name
    ctx.tools.create_topic(topic)
    wd = ctx.workdir(name)
    port = free_port()
    ini = agent_ini(ctx, wd / "data", port,
                    [{"path": str(path), "topic": topic, "start": "beginning", **(entry_extra or {})}])
    agent = AgentProc(wd, ini, port, "agent")
    ctx.live.append(agent)
    spy: subprocess.Popen[bytes] | None = None
    b0 = ctx.broker_cpu()
    agent.start()
    peak = PeakRss(agent.pid)
    try:
        delivered = 0.0
        t_done = None
        t_up = t_first = float("nan")
        deadline = agent.t_spawn + ctx.args.run_timeout
        while True:
            m = agent.scrape()
            if m is not None and t_up != t_up:
                t_up = time.perf_counter() - agent.t_spawn
            if m is not None and profile_out is not None and spy is None:
                spy = subprocess.Popen([py_spy(), "record", "-p", str(agent.pid), "-r", "100", "-f", "raw",
                                        "--threads", *spy_args, "-o", str(profile_out)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            delivered = metric(m, "logagent_messages_delivered_total", topic=topic)
            if delivered > 0 and t_first != t_first:
                t_first = time.perf_counter() - agent.t_spawn
            if delivered >= n:
                t_done = time.perf_counter()
                break
            if not agent.alive():
                raise BenchError(f"agent exited ({agent.status}) during the run:\n{agent.log_tail()}")
            if time.perf_counter() > deadline:
                break
            time.sleep(0.05)
        b1 = ctx.broker_cpu()
        peak.sample()
        status, ru = agent.stop()
    finally:
        peak_kb = peak.stop()
        agent.kill()
        ctx.live.remove(agent)
        if spy is not None:
            try:
                _, err = spy.communicate(timeout=60)
                if spy.returncode != 0:
                    log(f"py-spy exited {spy.returncode}: {err.decode()[-500:]}")
            except subprocess.TimeoutExpired:
                spy.kill()
    if t_done is None:
        raise BenchError(f"agent delivered {delivered:.0f}/{n} lines within {ctx.args.run_timeout}s:\n"
                         f"{agent.log_tail()}")
    wall = t_done - agent.t_spawn
    count, high, first, last = ctx.tools.consume(topic)
    ok = count == n
    note = "" if ok else f"consumed {count} != {n}"
    if first is not None:
        f_line, l_line = read_first_last(path)
        try:
            if json.loads(first.value())["data"] != f_line or json.loads(last.value())["data"] != l_line:
                ok, note = False, (note + " first/last line differ").strip()
        except (ValueError, KeyError) as exc:
            ok, note = False, f"bad message: {exc}"
    if os.waitstatus_to_exitcode(status) != 0:
        note = (note + f" exit {os.waitstatus_to_exitcode(status)}").strip()
    ctx.tools.delete_topic(topic)
    return RunResult("agent", n, wall, ru.ru_utime + ru.ru_stime, peak_kb, b1 - b0, count, ok, note,
                     t_up, t_first, len(first.value()) if first is not None else 0)


def kcat_throughput_run(ctx: Ctx, path: Path, n: int, label: str) -> RunResult:
    assert ctx.tools is not None and ctx.kcat is not None
    name = ctx.name(f"kcat{label}")
    topic = name
    ctx.tools.create_topic(topic)
    wd = ctx.workdir(name)
    cmd = [ctx.kcat, "-P", "-b", ctx.bootstrap, "-t", topic, "-l", str(path),
           "-X", f"acks={PRODUCER['acks']}", "-X", f"enable.idempotence={PRODUCER['enable.idempotence']}",
           "-z", PRODUCER["compression.type"]]
    logf = open(wd / "kcat.log", "wb")
    b0 = ctx.broker_cpu()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=clean_env())
    peak = PeakRss(proc.pid)
    logf.close()
    timer = threading.Timer(ctx.args.run_timeout, lambda: proc.kill())
    timer.start()
    try:
        # Reaping would stop the sampler's reads: wait for the exit without reaping first.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        t1 = time.perf_counter()
        peak_kb = peak.stop()
        _, status, ru = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
        peak.stop()
    b1 = ctx.broker_cpu()
    proc.returncode = os.waitstatus_to_exitcode(status)
    count, high, first, last = ctx.tools.consume(topic)
    ok = count == n and proc.returncode == 0
    note = "" if count == n else f"consumed {count} != {n}"
    if proc.returncode != 0:
        note = (note + f" kcat exit {proc.returncode}: "
                + (wd / "kcat.log").read_text(errors="replace")[-300:]).strip()
    if first is not None:
        f_line, l_line = read_first_last(path)
        if first.value().decode() != f_line or last.value().decode() != l_line:
            ok, note = False, (note + " first/last line differ").strip()
    ctx.tools.delete_topic(topic)
    return RunResult("kcat", n, t1 - t0, ru.ru_utime + ru.ru_stime, peak_kb, b1 - b0, count, ok, note,
                     msg_bytes=len(first.value()) if first is not None else 0)


def produce_only_run(ctx: Ctx, path: Path, n: int, label: str) -> RunResult:
    """The bound: the agent's messages produced from memory by one Python process (produce_only_main)."""
    assert ctx.tools is not None
    topic = ctx.name(f"produce{label}")
    ctx.tools.create_topic(topic)
    b0 = ctx.broker_cpu()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_produce_only",
                           json.dumps({"path": str(path), "topic": topic, "bootstrap": ctx.bootstrap})],
                          capture_output=True, env=clean_env(), cwd=str(ROOT), timeout=ctx.args.run_timeout)
    b1 = ctx.broker_cpu()
    if proc.returncode != 0:
        raise BenchError(f"produce-only run failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    res = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    count, high, first, last = ctx.tools.consume(topic)
    ctx.tools.delete_topic(topic)
    return RunResult("produce-only", n, res["seconds"], res["cpu"], 0, b1 - b0, count, count == n,
                     "" if count == n else f"consumed {count} != {n}",
                     msg_bytes=len(first.value()) if first is not None else 0)


def log_run(r: RunResult) -> None:
    rss = f" rss {r.maxrss_kb / 1024:.0f} MB" if r.maxrss_kb else ""
    log(f"  {r.tool}: {r.wall:.2f}s {r.rate:,.0f} lines/s cpu {r.cpu:.2f}s{rss} {'ok' if r.ok else 'NOT OK ' + r.note}")


def scenario_throughput(ctx: Ctx) -> None:
    a = ctx.args
    if a.warmup_lines > 0:
        # The broker's JIT and page cache are cold right after start: one short run of each tool first.
        path = ctx.tmp / "lines-warmup.log"
        make_lines_file(path, a.warmup_lines, 100, seed=1)
        log(f"throughput: warm-up, {a.warmup_lines:,} lines through each tool (not counted)")
        agent_throughput_run(ctx, path, a.warmup_lines, "warmup")
        kcat_throughput_run(ctx, path, a.warmup_lines, "warmup")
        path.unlink()
    sizes = [(100, a.lines), (1024, a.lines_1k)]
    for size, n in sizes:
        if n <= 0:
            continue
        t_start = time.monotonic()
        label = f"{size}B"
        path = ctx.tmp / f"lines-{label}.log"
        log(f"throughput {label}: writing {n:,} lines of {size} bytes to {path}")
        nbytes = make_lines_file(path, n, size)
        runs: list[tuple[RunResult, RunResult]] = []
        bounds: list[tuple[RunResult, RunResult]] = []  # (produce-only, the kcat run just before it)
        for r in range(a.runs):
            log(f"throughput {label}: run {r + 1}/{a.runs}: agent")
            ar = agent_throughput_run(ctx, path, n, label)
            log_run(ar)
            time.sleep(1)
            log(f"throughput {label}: run {r + 1}/{a.runs}: kcat")
            kr = kcat_throughput_run(ctx, path, n, label)
            log_run(kr)
            runs.append((ar, kr))
            time.sleep(1)
            if size == 100:
                log(f"throughput {label}: run {r + 1}/{a.runs}: produce-only bound")
                pr = produce_only_run(ctx, path, n, label)
                log_run(pr)
                bounds.append((pr, kr))
                time.sleep(1)
        mb = nbytes / 1e6

        def summary(results: list[RunResult]) -> list[Any]:
            return [fmt_int(median(r.rate for r in results)),
                    fmt(median(mb / r.wall for r in results)),
                    fmt(median(r.cpu / r.lines * 1e6 for r in results), 2),
                    "n/a" if not any(r.maxrss_kb for r in results)
                    else fmt(median(r.maxrss_kb / 1024 for r in results), 0)
                    + f" (max {max(r.maxrss_kb for r in results) / 1024:.0f})",
                    fmt(median(r.wall for r in results), 2),
                    fmt(median(r.broker_cpu / r.lines * 1e6 for r in results), 2),
                    "yes" if all(r.ok for r in results) else "NO: " + "; ".join(r.note for r in results if not r.ok)]

        multiline: list[RunResult] = []
        if size == 100 and a.multiline:
            # issue 9: the same file with `"multiline": "java"` on (every line is its own event here,
            # so the count stays comparable): what joining costs per line.
            for r in range(a.runs):
                log(f"throughput {label}: run {r + 1}/{a.runs}: agent with multiline=java")
                # A short timeout: the file's last event waits for it before it is sent.
                mr = agent_throughput_run(ctx, path, n, label + "ml",
                                          entry_extra={"multiline": {"preset": "java", "timeout": 0.2}})
                log(f"  agent multiline: {mr.wall:.2f}s {mr.rate:,.0f} lines/s cpu {mr.cpu:.2f}s")
                multiline.append(mr)
        agents = [p[0] for p in runs]
        kcats = [p[1] for p in runs]
        pair_ratio = median(p[0].rate / p[1].rate for p in runs)
        ratio_of_medians = median(r.rate for r in agents) / median(r.rate for r in kcats)
        header = ["tool", "lines/s", "MB/s", "CPU s / M lines", "peak RSS MB", "wall s", "broker CPU s / M lines",
                  "count verified"]
        rows = [["agent"] + summary(agents), ["kcat -P -l"] + summary(kcats)]
        if multiline:
            rows.insert(1, ["agent, multiline java (timeout 0.2 s)"] + summary(multiline))
        if bounds:
            rows.append(["bound: the agent's messages produced from memory by Python (no reading)"]
                        + summary([b[0] for b in bounds]))
        rows.append(["**agent/kcat**", f"**{pair_ratio:.2f}**",
                     f"{median(p[0].rate / p[1].rate for p in runs):.2f}",
                     f"{median(p[0].cpu / p[1].cpu for p in runs):.2f}",
                     f"{median(p[0].maxrss_kb / p[1].maxrss_kb for p in runs):.2f}",
                     f"{median(p[0].wall / p[1].wall for p in runs):.2f}",
                     f"{median(p[0].broker_cpu / p[1].broker_cpu for p in runs if p[1].broker_cpu):.2f}", ""])
        if bounds:
            rows.append(["**bound/kcat**", f"**{median(b[0].rate / b[1].rate for b in bounds):.2f}**",
                         f"{median(b[0].rate / b[1].rate for b in bounds):.2f}",
                         f"{median(b[0].cpu / b[1].cpu for b in bounds):.2f}", "", "",
                         f"{median(b[0].broker_cpu / b[1].broker_cpu for b in bounds if b[1].broker_cpu):.2f}", ""])
        per_run = [[i + 1, r.tool, f"{r.wall:.2f}", fmt_int(r.rate), f"{mb / r.wall:.1f}", f"{r.cpu:.2f}",
                    f"{r.maxrss_kb / 1024:.0f}" if r.maxrss_kb else "n/a", f"{r.broker_cpu:.2f}", f"{r.verified:,}",
                    "" if r.t_up != r.t_up else f"{r.t_up:.2f} / {r.t_first:.2f}",
                    "" if r.t_first != r.t_first else fmt_int(r.lines / max(1e-3, r.wall - r.t_first))]
                   for i, p in enumerate(runs) for r in (*p, *(bounds[i][:1] if i < len(bounds) else ()))]
        body = (f"{n:,} lines of {size} bytes ({mb:,.1f} MB, newline included) written to a file up front; "
                f"medians of {a.runs} run(s), agent and kcat alternating (after one uncounted warm-up run "
                f"of each of {a.warmup_lines:,} lines), each into a fresh topic "
                f"(1 partition), acks=all, enable.idempotence=true, lz4. Wall time from spawn until the "
                f"last line is acknowledged (agent: `logagent_messages_delivered_total` reaches {n:,}, "
                f"polled every 50 ms; kcat: process exit after its flush). CPU = user+sys of the process "
                f"(os.wait4). Ratio row: median of the per-pair ratios agent/kcat (ratio of medians of "
                f"lines/s: {ratio_of_medians:.2f}). Kafka message for the first line: agent "
                f"{agents[0].msg_bytes} bytes (JSON), kcat {kcats[0].msg_bytes} bytes (raw line)."
                + (" The bound row is not a shipper: the agent's messages for the file, built in memory "
                   "beforehand, sent by one Python process through confluent-kafka with the agent's "
                   "producer settings and a delivery report per message, timed from Producer creation "
                   "to the last report (run after each kcat run; ratio to that run). It is what any "
                   "single-process Python agent could reach with these messages at zero reading cost."
                   if bounds else "")
                + "\n\n"
                + md_table(header, rows)
                + "\n\nPer run:\n\n"
                + md_table(["run", "tool", "wall s", "lines/s", "MB/s", "CPU s", "peak RSS MB", "broker CPU s",
                            "consumed", "agent: /metrics up / 1st ack s", "agent: lines/s after 1st ack"],
                           per_run)
                + "\n\n(The last two columns split the agent's wall time: start-up (interpreter, imports, "
                  "producer) until /metrics answers and until the first acknowledgement is seen, polled every "
                  "50 ms; and the rate from that first acknowledgement to the last.)")
        ctx.sections.append(Section(f"1. Throughput, {size}-byte lines", body, time.monotonic() - t_start))
        print("\n### " + ctx.sections[-1].title + "\n\n" + body + "\n", flush=True)
        if size == 100:
            rate = median(r.rate for r in agents)
            ctx.targets.append(Target(f">= 250,000 lines/s of 100-byte lines end to end ({n:,} lines)",
                                      f"{rate:,.0f} lines/s", rate >= 250_000 and all(r.ok for r in agents)))
            bound = (f"; bound for one Python producer (no reading): "
                     f"{median(b[0].rate / b[1].rate for b in bounds):.2f} x") if bounds else ""
            ctx.targets.append(Target(">= half of kcat's line rate in the same run (100-byte lines)",
                                      f"{pair_ratio:.2f} x kcat ({median(r.rate for r in kcats):,.0f} lines/s){bound}",
                                      pair_ratio >= 0.5))
            peak = max(r.maxrss_kb for r in agents) / 1024
            ctx.targets.append(Target("peak RSS <= 100 MB at full throughput (100-byte lines, max of runs)",
                                      f"{peak:.0f} MB", peak <= 100))
        else:
            peak = max(r.maxrss_kb for r in agents) / 1024
            ctx.targets.append(Target(f"peak RSS <= 100 MB at full throughput ({size}-byte lines, max of runs)",
                                      f"{peak:.0f} MB", peak <= 100))
        path.unlink()


# --------------------------------------------------------------------------- 2. latency

def latency_stats(ctx: Ctx, topic: str) -> dict[str, Any]:
    """Consume `topic`: broker append time (LogAppendTime) minus the write time in each line."""
    from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME

    assert ctx.tools is not None
    lat: list[float] = []
    read_lat: list[float] = []
    seen: set[int] = set()
    dups = 0
    wrong_ts = 0
    try:
        import orjson

        loads: Callable[[bytes], Any] = orjson.loads
    except ImportError:
        loads = json.loads

    def on_batch(msgs: list[Any]) -> None:
        nonlocal dups, wrong_ts
        for m in msgs:
            ts_type, ts_ms = m.timestamp()
            if ts_type != TIMESTAMP_LOG_APPEND_TIME:
                wrong_ts += 1
            doc = loads(m.value())
            data = doc["data"]
            sp = data.index(" ")
            wns = int(data[:sp])
            seq = int(data[sp + 1:sp + 11])
            if seq in seen:
                dups += 1
                continue
            seen.add(seq)
            lat.append(ts_ms - wns / 1e6)
            ts = doc.get("timestamp")
            if ts:  # the agent's read time, ISO 8601 UTC with microseconds
                t = dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
                read_lat.append(t.timestamp() * 1e3 - wns / 1e6)

    count, high, _, _ = ctx.tools.consume(topic, on_batch)
    lat.sort()
    read_lat.sort()
    return {"count": count, "unique": len(seen), "dups": dups, "wrong_ts": wrong_ts,
            "p50": pct(lat, 50), "p99": pct(lat, 99), "max": lat[-1] if lat else float("nan"),
            "read_p50": pct(read_lat, 50), "read_p99": pct(read_lat, 99)}


def wait_delivered(agent: AgentProc, topic: str, want: int, timeout: float,
                   interval: float = 0.1) -> tuple[float, float]:
    """Poll until `want` lines of `topic` are acknowledged; (delivered, seconds waited)."""
    t0 = time.monotonic()
    delivered = 0.0
    while True:
        delivered = metric(agent.scrape(), "logagent_messages_delivered_total", topic=topic)
        if delivered >= want or time.monotonic() - t0 > timeout:
            return delivered, time.monotonic() - t0
        time.sleep(interval)


def scenario_latency(ctx: Ctx) -> None:
    a = ctx.args
    assert ctx.tools is not None
    t_start = time.monotonic()
    name = ctx.name("latency")
    topic = name
    ctx.tools.create_topic(topic, {"message.timestamp.type": "LogAppendTime"})
    wd = ctx.workdir(name)
    d = ctx.tmp / name
    d.mkdir()
    nfiles = a.latency_files
    for i in range(nfiles):
        (d / ("app-%02d.log" % i)).touch()
    port = free_port()
    ini = agent_ini(ctx, wd / "data", port, [{"path": f"{d}/app-*.log", "topic": topic, "start": "beginning"}])
    agent = AgentProc(wd, ini, port, "agent")
    ctx.live.append(agent)
    try:
        agent.start()
        wait_files_open(agent, nfiles, 60)
        time.sleep(1)
        log(f"latency: writer {a.rate:,} lines/s over {nfiles} files for {a.latency_seconds}s")
        cpu0 = proc_cpu(agent.pid)
        t_w0 = time.monotonic()
        w = Writer(ctx, {"mode": "rate", "dir": str(d), "nfiles": nfiles, "pattern": "app-%02d.log",
                         "rate": a.rate, "seconds": a.latency_seconds, "period": 0.01})
        wres = w.result(a.latency_seconds + 60)
        cpu1 = proc_cpu(agent.pid)
        t_w1 = time.monotonic()
        written = wres["lines"]
        delivered, waited = wait_delivered(agent, topic, written, 5.0)
        kept_up = delivered >= written
        if not kept_up:
            delivered, waited2 = wait_delivered(agent, topic, written, 120.0, 0.5)
            waited += waited2
        agent.stop()
    finally:
        agent.kill()
        ctx.live.remove(agent)
    st = latency_stats(ctx, topic)
    ctx.tools.delete_topic(topic)
    cpu_pct = (cpu1 - cpu0) / (t_w1 - t_w0) * 100
    rate_real = written / wres["seconds"]
    rows = [[f"{rate_real:,.0f}", f"{written:,}", f"{st['count']:,}", fmt(st["p50"]), fmt(st["p99"]),
             fmt(st["max"]), "yes" if kept_up else f"NO (all in after {waited:.1f}s)" if delivered >= written
             else f"NO ({delivered:,.0f}/{written:,})", fmt(cpu_pct, 0),
             f"{fmt(st['read_p50'])} / {fmt(st['read_p99'])}", f"{wres['max_lag'] * 1000:.0f}"]]
    header = ["lines/s written", "lines", "consumed", "p50 ms", "p99 ms", "max ms", "kept up (<= 5 s after stop)",
              "agent CPU %", "write->read p50/p99 ms", "writer max lag ms"]
    body = (f"A writer process appends {a.rate:,} lines/s (~100 bytes, bursts every 10 ms, one write() per file "
            f"per burst) to {nfiles} files for {a.latency_seconds} s; the agent collects them with one glob entry. "
            f"Latency = the record's LogAppendTime (topic created with message.timestamp.type=LogAppendTime, "
            f"i.e. broker append, ~ acknowledgement; same host clock) minus the time.time_ns() the writer put in "
            f"the line. \"Kept up\" = every line acknowledged within 5 s after the writer stopped. "
            f"write->read = the agent's own `timestamp` field (when it read the line) minus the write time.\n\n"
            + md_table(header, rows))
    if st["dups"] or st["wrong_ts"] or st["unique"] != written:
        body += (f"\n\nWarning: {st['dups']} duplicate(s), {st['wrong_ts']} record(s) without LogAppendTime, "
                 f"{st['unique']:,} unique lines of {written:,} written.")
    ctx.sections.append(Section("2. Live latency", body, time.monotonic() - t_start))
    print("\n### 2. Live latency\n\n" + body + "\n", flush=True)
    ctx.targets.append(Target(f"p99 latency <= 250 ms at {a.rate:,} lines/s", f"p99 {fmt(st['p99'])} ms "
                              f"(p50 {fmt(st['p50'])}, max {fmt(st['max'])}), kept up: {'yes' if kept_up else 'no'}",
                              st["p99"] <= 250 and kept_up))


# --------------------------------------------------------------------------- 3. many files / idle

def proc_cpu(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def wait_files_open(agent: AgentProc, n: int, timeout: float, interval: float = 0.2) -> tuple[float, float]:
    """Wait until the agent has `n` files open (stalls are tolerated, reported): (open, seconds)."""
    t0 = time.monotonic()
    last, last_change = -1.0, t0
    while True:
        if not agent.alive():
            raise BenchError(f"agent exited ({agent.status}):\n{agent.log_tail()}")
        m = agent.scrape(timeout=30)
        opened = metric(m, "logagent_files_open")
        now = time.monotonic()
        if opened >= n:
            return opened, now - t0
        if opened != last:
            last, last_change = opened, now
        if now - t0 > timeout or (now - last_change > 30 and m is not None):
            log(f"only {opened:.0f}/{n} files open after {now - t0:.0f}s")
            return opened, now - t0
        time.sleep(interval)


def sample_window(pid: int, seconds: float) -> dict[str, float]:
    """CPU % (of one core) over the window; fds and RSS sampled every second (max)."""
    import psutil

    p = psutil.Process(pid)
    fds: list[int] = []
    rss: list[int] = []
    c0 = p.cpu_times()
    t0 = time.monotonic()
    while True:
        now = time.monotonic()
        if now - t0 >= seconds:
            break
        time.sleep(min(1.0, seconds - (now - t0)))
        fds.append(p.num_fds())
        rss.append(p.memory_info().rss)
    c1 = p.cpu_times()
    t1 = time.monotonic()
    return {"cpu_pct": ((c1.user + c1.system) - (c0.user + c0.system)) / (t1 - t0) * 100,
            "fds": max(fds) if fds else p.num_fds(), "rss_mb": (max(rss) if rss else p.memory_info().rss) / 2**20,
            "seconds": t1 - t0}


def many_files_run(ctx: Ctx, nfiles: int, write: bool) -> dict[str, Any]:
    a = ctx.args
    assert ctx.tools is not None
    name = ctx.name(f"files{nfiles}{'' if write else 'idle'}")
    topic = name
    ctx.tools.create_topic(topic, {"message.timestamp.type": "LogAppendTime"})
    wd = ctx.workdir(name)
    d = ctx.tmp / name
    d.mkdir()
    for i in range(nfiles):
        (d / ("f%05d.log" % i)).touch()
    nofile = nofile_for(nfiles + 1024)
    max_open = max(1024, nfiles * 2)
    port = free_port()
    ini = agent_ini(ctx, wd / "data", port, [{"path": f"{d}/f*.log", "topic": topic, "start": "beginning"}],
                    agent_extra={"max_open_files": max_open})
    agent = AgentProc(wd, ini, port, "agent", nofile=nofile)
    ctx.live.append(agent)
    res: dict[str, Any] = {"files": nfiles, "nofile": nofile, "max_open_files": max_open}
    window = a.files_seconds if write else a.idle_seconds
    try:
        agent.start()
        agent.wait_metrics()
        opened, t_open = wait_files_open(agent, nfiles, a.run_timeout, interval=1.0 if nfiles > 2000 else 0.2)
        res["open_before"], res["t_open"] = opened, t_open
        res["startup_cpu"] = proc_cpu(agent.pid)
        if write:
            secs = a.files_warmup + window + 1
            log(f"files {nfiles}: {opened:.0f} open after {t_open:.1f}s; writer: 1 line/s per file for {secs:.0f}s")
            w = Writer(ctx, {"mode": "slow", "dir": str(d), "nfiles": nfiles, "pattern": "f%05d.log",
                             "seconds": secs, "cycle": 1.0, "slices": 100}, nofile=nofile)
            time.sleep(a.files_warmup)
            res.update(sample_window(agent.pid, window))
            wres = w.result(secs + 60)
            res["written"] = wres["lines"]
            res["writer_seconds"] = wres["seconds"]
            res["writer_lag"] = wres["max_lag"]
            delivered, waited = wait_delivered(agent, topic, wres["lines"], 10.0, 0.5)
            res["delivered"], res["kept_up"] = delivered, delivered >= wres["lines"]
        else:
            log(f"idle {nfiles}: {opened:.0f} open after {t_open:.1f}s; {a.files_warmup:.0f}s warm-up, "
                f"{window:.0f}s window, no writes")
            time.sleep(a.files_warmup)
            res.update(sample_window(agent.pid, window))
        m = agent.scrape(timeout=30)
        res["open_after"] = metric(m, "logagent_files_open")
        res["emfile"] = metric(m, "logagent_file_errors_total", reason="too_many_open_files")
        res["file_errors"] = metric(m, "logagent_file_errors_total")
        res["crashes"] = metric(m, "logagent_task_crashes_total")
        agent.stop()
    finally:
        agent.kill()
        ctx.live.remove(agent)
    if write:
        st = latency_stats(ctx, topic)
        res["p50"], res["p99"], res["max"] = st["p50"], st["p99"], st["max"]
    ctx.tools.delete_topic(topic)
    shutil.rmtree(d, ignore_errors=True)
    return res


def scenario_files(ctx: Ctx) -> None:
    a = ctx.args
    t_start = time.monotonic()
    rows = []
    results = []
    for n in a.files:
        r = many_files_run(ctx, n, write=True)
        results.append(r)
        log(f"files {n}: cpu {r['cpu_pct']:.1f}% fds {r['fds']} rss {r['rss_mb']:.0f} MB open {r['open_after']:.0f} "
            f"delivered {r['delivered']:.0f}/{r['written']}")
        rows.append([f"{n:,}", f"{r['written'] / r['writer_seconds']:,.0f}",
                     fmt(r["cpu_pct"]), f"{r['fds']:,}", fmt(r["rss_mb"], 0),
                     f"{r['open_after']:,.0f}", f"{r['emfile']:.0f}",
                     f"{r['nofile'][0]} / {r['nofile'][1]}", f"{r['t_open']:.1f}",
                     "yes" if r["kept_up"] else f"NO ({r['delivered']:,.0f}/{r['written']:,})",
                     f"{fmt(r['p50'], 0)} / {fmt(r['p99'], 0)} / {fmt(r['max'], 0)}"])
    header = ["files", "lines/s", "agent CPU %", "open fds (max)", "RSS MB (max)", "files open (metric)",
              "EMFILE errors", "RLIMIT_NOFILE soft/hard", "s until all open", "kept up",
              "latency p50/p99/max ms"]
    body = (f"N empty files, one glob entry, `[agent] max_open_files` = max(1024, 2 N). A writer process "
            f"appends one ~100-byte line to every file each second, spread over 100 slices per second, "
            f"for {a.files_warmup:.0f} s of warm-up + {a.files_seconds:.0f} s; the agent process is sampled with "
            f"psutil during the window (CPU % of one core = Δ(user+sys)/Δwall; fds and RSS every second, max). "
            f"/metrics is not scraped during the window (its per-file series cost CPU to render). "
            f"\"Kept up\" = every line acknowledged within 10 s after the writer stopped. The agent's "
            f"RLIMIT_NOFILE is raised to N + 1024 when lower (the bench's own limit is "
            f"{'/'.join(str(x) for x in resource.getrlimit(resource.RLIMIT_NOFILE))}).\n\n"
            + md_table(header, rows))
    ctx.sections.append(Section("3. Many files", body, time.monotonic() - t_start))
    print("\n### 3. Many files\n\n" + body + "\n", flush=True)
    for r in results:
        if r["files"] >= 10000 or r["files"] == max(a.files):
            ok = (r["emfile"] == 0 and r["open_after"] >= r["files"] and r["kept_up"] and r["crashes"] == 0)
            ctx.targets.append(Target(f"{r['files']:,} files without running out of descriptors",
                                      f"{r['open_after']:,.0f} open, {r['fds']:,} fds, {r['emfile']:.0f} EMFILE "
                                      f"errors, kept up: {'yes' if r['kept_up'] else 'no'}", ok))


def scenario_idle(ctx: Ctx) -> None:
    a = ctx.args
    t_start = time.monotonic()
    rows = []
    vals = []
    for i in range(a.idle_runs):
        r = many_files_run(ctx, a.idle_files, write=False)
        vals.append(r["cpu_pct"])
        log(f"idle {a.idle_files}: cpu {r['cpu_pct']:.2f}% fds {r['fds']} rss {r['rss_mb']:.0f} MB")
        rows.append([i + 1, f"{a.idle_files:,}", fmt(r["cpu_pct"], 2), f"{r['fds']:,}", fmt(r["rss_mb"], 0),
                     f"{r['open_after']:,.0f}", f"{r['seconds']:.0f}"])
    body = (f"{a.idle_files:,} empty files collected by one glob entry, no writes; after all are open and "
            f"{a.files_warmup:.0f} s of warm-up, the agent's CPU over a {a.idle_seconds:.0f} s window "
            f"(psutil, % of one core). Median of {a.idle_runs} run(s): **{median(vals):.2f} %**.\n\n"
            + md_table(["run", "files", "agent CPU %", "open fds", "RSS MB", "files open", "window s"], rows))
    ctx.sections.append(Section("3b. Idle files", body, time.monotonic() - t_start))
    print("\n### 3b. Idle files\n\n" + body + "\n", flush=True)
    ctx.targets.append(Target(f"{a.idle_files:,} idle files <= 1 % of a core", f"{median(vals):.2f} %",
                              median(vals) <= 1.0))


# --------------------------------------------------------------------------- 4. sysinfo overhead

def scenario_sysinfo(ctx: Ctx) -> None:
    a = ctx.args
    assert ctx.tools is not None
    t_start = time.monotonic()
    rows = []
    on_vals, off_vals = [], []
    for r in range(a.sysinfo_runs):
        for enabled in (False, True):
            name = ctx.name("sysinfo-on" if enabled else "sysinfo-off")
            wd = ctx.workdir(name)
            port = free_port()
            si = {"enabled": enabled, "interval": 1, "topic": name, "format": "json"}
            agent = AgentProc(wd, agent_ini(ctx, wd / "data", port, [], sysinfo=si), port, "agent")
            ctx.live.append(agent)
            try:
                agent.start()
                agent.wait_metrics()
                time.sleep(a.sysinfo_warmup)
                s = sample_window(agent.pid, a.sysinfo_seconds)
                m = agent.scrape()
                samples = metric(m, "logagent_sysinfo_samples_total")
                delivered = metric(m, "logagent_messages_delivered_total", topic=name)
                agent.stop()
            finally:
                agent.kill()
                ctx.live.remove(agent)
            if enabled:
                ctx.tools.delete_topic(name)
            (on_vals if enabled else off_vals).append(s["cpu_pct"])
            log(f"sysinfo {'on ' if enabled else 'off'}: cpu {s['cpu_pct']:.2f}% samples {samples:.0f} "
                f"delivered {delivered:.0f}")
            rows.append([r + 1, "enabled, interval 1 s" if enabled else "disabled", fmt(s["cpu_pct"], 2),
                         fmt(s["rss_mb"], 0), f"{samples:,.0f}", f"{delivered:,.0f}"])
    diff = median(on_vals) - median(off_vals)
    body = (f"The agent with no files: `[sysinfo] enabled = true, interval = 1` vs `enabled = false`, "
            f"{a.sysinfo_warmup:.0f} s warm-up then a {a.sysinfo_seconds:.0f} s window (psutil, % of one core), "
            f"alternating, {a.sysinfo_runs} pair(s). Overhead of the reporter = median(on) - median(off) = "
            f"**{diff:.2f} % of a core** (on {median(on_vals):.2f} %, off {median(off_vals):.2f} %).\n\n"
            + md_table(["run", "sysinfo", "agent CPU %", "RSS MB", "messages queued (window+warm-up)",
                        "delivered"], rows))
    ctx.sections.append(Section("4. Metrics (sysinfo) overhead", body, time.monotonic() - t_start))
    print("\n### 4. Metrics (sysinfo) overhead\n\n" + body + "\n", flush=True)
    ctx.targets.append(Target("sysinfo reporter at 1 s: CPU % (no target; reported)", f"{diff:.2f} % of a core",
                              None))


# --------------------------------------------------------------------------- profile

def py_spy() -> str:
    """py-spy next to this interpreter or on PATH; pip-installs it into this venv when missing."""
    local = Path(sys.executable).parent / "py-spy"
    cand = str(local) if local.exists() else shutil.which("py-spy")
    if cand:
        return cand
    log(f"py-spy not found: {sys.executable} -m pip install py-spy")
    if subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"]).returncode != 0 or not local.exists():
        raise BenchError("py-spy is not installed and `pip install py-spy` failed: install it into this venv "
                         "(it is in the [dev] extra)")
    return str(local)


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def summarize_profile(raw: Path, top: int = 15) -> str:
    """Top functions by self time, logagent functions by total time, and samples per thread,
    from py-spy's raw (collapsed) output."""
    self_c: collections.Counter[str] = collections.Counter()
    total_c: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    n = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, cnt = line.rpartition(" ")
        if not stack or not cnt.isdigit():
            continue
        c = int(cnt)
        frames = stack.split(";")
        thread = "?"
        if frames and frames[0].startswith(("thread", "process")):
            thread = re.sub(r"\(\d+\)|0x[0-9a-f]+", "", frames[0]).replace("thread", "").strip(" :")
            frames = frames[1:]
        names = []
        for f in frames:
            m = _FRAME.match(f.strip())
            names.append(f"{m.group('func')} ({m.group('file')})" if m else f.strip())
        if not names:
            continue
        n += c
        threads[re.sub(r"[-_]\d+$", "-N", thread) or "?"] += c
        self_c[names[-1]] += c
        for nm in set(names):
            if "logagent/" in nm:
                total_c[nm] += c
    if n == 0:
        return "(no samples)"
    rows_self = [[f"`{k}`", v, f"{v / n * 100:.1f}"] for k, v in self_c.most_common(top)]
    rows_total = [[f"`{k}`", v, f"{v / n * 100:.1f}"] for k, v in total_c.most_common(top)]
    rows_thr = [[t, v, f"{v / n * 100:.1f}"] for t, v in threads.most_common(8)]
    return (f"{n} samples.\n\nTop {top} functions by self time (time in C calls such as `Producer.produce` "
            f"or `Producer.poll` counts as the calling Python function's self time):\n\n"
            + md_table(["function (file)", "samples", "%"], rows_self)
            + f"\n\nTop {top} logagent functions by total (inclusive) time:\n\n"
            + md_table(["function (file)", "samples", "%"], rows_total)
            + "\n\nSamples per thread (pool threads grouped):\n\n" + md_table(["thread", "samples", "%"], rows_thr))


def scenario_profile(ctx: Ctx) -> None:
    a = ctx.args
    t_start = time.monotonic()
    spy = py_spy()
    n = a.profile_lines
    path = ctx.tmp / "lines-profile.log"
    make_lines_file(path, n, 100)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    parts = []
    modes = [("gil", ("--gil",), "samples of the thread holding the GIL only: where Python time goes; "
              "the GIL is the agent's serial bottleneck"),
             ("all", (), "every thread that py-spy sees as not idle (its idle detection misses some "
              "blocking waits, e.g. `Condition.wait` in pool threads, inotify reads)")]
    for mode, extra, what in modes:
        raw = OUT_DIR / f"profile-throughput-100B-{mode}.txt"
        log(f"profile ({mode}): one agent run of {n:,} 100-byte lines under {spy} record "
            f"(not counted in the medians)")
        r = agent_throughput_run(ctx, path, n, f"prof{mode}", profile_out=raw, spy_args=extra)
        summary = summarize_profile(raw) if raw.exists() else "(py-spy wrote no output)"
        cmd = " ".join(["py-spy record -r 100 -f raw --threads", *extra])
        parts.append(f"### `{cmd}`: {what}\n\n{r.lines:,} lines in {r.wall:.1f} s ({r.rate:,.0f} lines/s "
                     f"under sampling), CPU {r.cpu:.1f} s. Raw stacks: `{raw.relative_to(ROOT)}` (git-ignored). "
                     f"{summary}")
    path.unlink()
    body = (f"Extra agent runs of the 100-byte throughput case ({n:,} lines) under py-spy at 100 Hz, "
            f"attached once /metrics answers; not counted in the tables above.\n\n" + "\n\n".join(parts))
    ctx.sections.append(Section("5. Profile of the agent at full throughput", body, time.monotonic() - t_start))
    print("\n### 5. Profile\n\n" + body + "\n", flush=True)


# --------------------------------------------------------------------------- RESULTS.md

def preserved_sections(path: Path) -> dict[str, str]:
    """Hand-written sections of an existing RESULTS.md: '## Notes' (if edited) and '## Optimisation log'."""
    out: dict[str, str] = {}
    if not path.exists():
        return out
    text = path.read_text()
    i = text.find("\n## Optimisation log")
    if text.startswith("## Optimisation log"):
        i = 0
    if i >= 0:
        out["## Optimisation log"] = text[i:].strip("\n")
        text = text[:i]
    m = re.search(r"^## Notes[^\n]*\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    if m and m.group(1).strip() and m.group(1).strip() != NOTES_PLACEHOLDER:
        out["## Notes"] = "## Notes\n\n" + m.group(1).strip()
    return out


def render(ctx: Ctx, info: dict[str, str], command: str, started: dt.datetime, total_s: float,
           kept: dict[str, str]) -> str:
    a = ctx.args
    parts = ["# logagent benchmark results", "",
             "Written by `bench/bench.py` (issue 7). Regenerate with `make bench` (about 6-7 minutes); "
             "`make bench BENCH_ARGS=--quick` is a smoke run, `BENCH_ARGS='--only latency'` runs one scenario.",
             "",
             f"- **Date:** {started.strftime('%Y-%m-%d %H:%M:%S %Z')}",
             f"- **Command:** `{command}`",
             f"- **Duration of the whole run:** {total_s / 60:.1f} min"
             + (" (quick/smoke sizes: not the reference numbers)" if a.quick else ""),
             f"- **Broker:** the dev stack's own (devstack/stack.py) on {ctx.bootstrap}, on the same 2 cores "
             f"as the agent, the writer and this script; loopback only.",
             "", "## Machine", "", md_table(["", ""], [[k, v] for k, v in info.items()]), ""]
    if ctx.targets:
        parts += ["## Targets", "", md_table(["target (issue 7)", "measured", "result"],
                                             [[t.what, t.measured, t.verdict] for t in ctx.targets]), ""]
    for s in ctx.sections:
        parts += [f"## {s.title}", "", s.body, "", f"_({s.seconds:.0f} s)_", ""]
    parts += ["## Method notes", "",
              "- The machine is shared and noisy: the broker (JVM), the agent, kcat, the writers and this script "
              "share 2 cores. Throughput runs alternate agent and kcat and report medians; ratios are taken "
              "per pair of back-to-back runs.",
              "- The agent ships each line as a JSON message (`ip`, `data`, `host`, `path`, `offset`, `timestamp`); "
              "kcat ships the raw line. Same broker, same topic config, same acks=all, enable.idempotence=true, "
              "compression lz4; other producer settings are each tool's defaults (the agent's: "
              f"{agent_producer_defaults()}; kcat's librdkafka 2.0.2: linger.ms=5, batch.num.messages=10000).",
              "- Counts are verified by consuming every topic from the beginning to its high watermark "
              "(throughput: first and last line compared with the file too). Topics are deleted afterwards.",
              "- CPU % is of one core (100 % = one core busy). Peak RSS = the kernel's high-water mark VmHWM (/proc/<pid>/status) of the process, read every 20 ms until it exits; not ru_maxrss, which for a child includes the forked benchmark process's memory from before exec.",
              ""]
    parts += [kept.get("## Notes", "## Notes\n\n" + NOTES_PLACEHOLDER), ""]
    if "## Optimisation log" in kept:
        parts += [kept["## Optimisation log"], ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--only", default=",".join(ALL_SCENARIOS),
                   help=f"comma-separated scenarios: {','.join(ALL_SCENARIOS + EXTRA_SCENARIOS)} "
                        "(default: all but profile)")
    p.add_argument("--quick", action="store_true", help="a small smoke run (sizes and windows cut down)")
    p.add_argument("--profile", action="store_true", help="also run the profile scenario (needs py-spy)")
    p.add_argument("--runs", type=int, default=3, help="throughput runs per tool (default 3)")
    p.add_argument("--no-multiline", dest="multiline", action="store_false",
                   help="skip the throughput runs with multiline=java")
    p.add_argument("--lines", type=int, default=1_000_000, help="100-byte lines per throughput run")
    p.add_argument("--lines-1k", type=int, default=1_000_000, help="1 KB lines per throughput run (0 = skip)")
    p.add_argument("--warmup-lines", type=int, default=200_000,
                   help="throughput: lines of the uncounted warm-up run of each tool (0 = none)")
    p.add_argument("--rate", type=int, default=20_000, help="latency: lines/s written")
    p.add_argument("--latency-seconds", type=float, default=30)
    p.add_argument("--latency-files", type=int, default=10)
    p.add_argument("--files", default="1000,10000", help="many-files: file counts")
    p.add_argument("--files-seconds", type=float, default=20, help="many-files: sampling window")
    p.add_argument("--files-warmup", type=float, default=5)
    p.add_argument("--idle-files", type=int, default=1000)
    p.add_argument("--idle-seconds", type=float, default=20)
    p.add_argument("--idle-runs", type=int, default=2)
    p.add_argument("--sysinfo-seconds", type=float, default=20)
    p.add_argument("--sysinfo-warmup", type=float, default=3)
    p.add_argument("--sysinfo-runs", type=int, default=2, help="pairs of off/on runs")
    p.add_argument("--profile-lines", type=int, default=3_000_000, help="100-byte lines of the profiled run")
    p.add_argument("--run-timeout", type=float, default=300, help="seconds before a single run is abandoned")
    p.add_argument("--results", help="where to write the markdown (default bench/RESULTS.md for a full run, "
                                     "bench/out/RESULTS-partial.md for --quick or --only)")
    p.add_argument("--kafka", help="use this running broker (host:port) instead of starting one")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary folder (agent logs, broker data)")
    p.add_argument("--_writer", help=argparse.SUPPRESS)
    p.add_argument("--_produce_only", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    explicit = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:]) if a.startswith("--")}
    if args.quick:
        quick = {"--runs": ("runs", 1), "--lines": ("lines", 100_000), "--lines-1k": ("lines_1k", 20_000),
                 "--latency-seconds": ("latency_seconds", 5), "--files": ("files", "200,1000"),
                 "--files-seconds": ("files_seconds", 5), "--files-warmup": ("files_warmup", 2),
                 "--idle-seconds": ("idle_seconds", 5), "--sysinfo-seconds": ("sysinfo_seconds", 5),
                 "--sysinfo-warmup": ("sysinfo_warmup", 1),
                 "--idle-runs": ("idle_runs", 1), "--sysinfo-runs": ("sysinfo_runs", 1),
                 "--profile-lines": ("profile_lines", 300_000),
                 "--warmup-lines": ("warmup_lines", 20_000)}
        for flag, (attr, val) in quick.items():
            if flag not in explicit:
                setattr(args, attr, val)
    args.only_list = [s.strip() for s in args.only.split(",") if s.strip()]
    if args.profile and "profile" not in args.only_list:
        args.only_list.append("profile")
    bad = [s for s in args.only_list if s not in ALL_SCENARIOS + EXTRA_SCENARIOS]
    if bad:
        p.error(f"unknown scenario(s) {','.join(bad)}; choose from {','.join(ALL_SCENARIOS + EXTRA_SCENARIOS)}")
    args.files = [int(x) for x in str(args.files).split(",") if x.strip()]
    args.partial = args.quick or set(ALL_SCENARIOS) - set(args.only_list) != set()
    return args


def command_line(argv: list[str] | None) -> str:
    raw = argv if argv is not None else sys.argv[1:]
    py = f"{os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable}"
    direct = " ".join([py, "bench/bench.py", *map(shlex.quote, raw)])
    if os.environ.get("MAKELEVEL"):
        bench_args = os.environ.get("BENCH_ARGS", " ".join(raw))
        return "make bench" + (f" BENCH_ARGS={shlex.quote(bench_args)}" if bench_args else "") + f"  # {direct}"
    return direct


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._writer:
        return writer_main(json.loads(args._writer))
    if args._produce_only:
        return produce_only_main(json.loads(args._produce_only))
    started = dt.datetime.now().astimezone()
    t0 = time.monotonic()
    command = command_line(argv)
    # Our own descriptor limit up to the hard limit: the writers inherit it (10,000 open files).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    kcat = ensure_kcat() if ("throughput" in args.only_list) else shutil.which("kcat")
    tmp = Path(tempfile.mkdtemp(prefix="logagent-bench-"))
    ctx = Ctx(args=args, tmp=tmp, kcat=kcat)
    server = None
    failed: BaseException | None = None

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        if args.kafka:
            for hp in args.kafka.split(","):
                host = hp.rsplit(":", 1)[0].strip("[]")
                if host not in ("localhost", "::1") and not host.startswith("127."):
                    raise BenchError(f"--kafka {hp}: the benchmark only sends traffic to loopback addresses")
            ctx.bootstrap = args.kafka
        else:
            from devstack.stack import KafkaServer

            server = KafkaServer(tmp / "kafka")
            log(f"starting Kafka (devstack) on {server.bootstrap}")
            server.start()
            ctx.bootstrap = server.bootstrap
            ctx.kafka = server
            log("Kafka is up")
        ctx.tools = KafkaTools(ctx.bootstrap)
        info = machine_info(kafka_version(), kcat_version(kcat))
        runners = {"throughput": scenario_throughput, "latency": scenario_latency, "files": scenario_files,
                   "idle": scenario_idle, "sysinfo": scenario_sysinfo, "profile": scenario_profile}
        for name in ALL_SCENARIOS + EXTRA_SCENARIOS:
            if name in args.only_list:
                log(f"=== {name}")
                try:
                    runners[name](ctx)
                except BenchError as exc:
                    log(f"scenario {name} failed: {exc}")
                    ctx.sections.append(Section(f"{name}: FAILED", f"```\n{exc}\n```"))
                    failed = exc
        info["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        total = time.monotonic() - t0
        results = Path(args.results) if args.results else (
            OUT_DIR / "RESULTS-partial.md" if args.partial else BENCH_DIR / "RESULTS.md")
        results.parent.mkdir(parents=True, exist_ok=True)
        kept = preserved_sections(results)
        results.write_text(render(ctx, info, command, started, total, kept))
        print("\n## Targets\n\n" + md_table(["target", "measured", "result"],
                                             [[t.what, t.measured, t.verdict] for t in ctx.targets]))
        print(f"\nwhole run: {total / 60:.1f} min; written to {results}", flush=True)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except BenchError as exc:
        log(f"failed: {exc}")
        return 1
    finally:
        for proc in list(ctx.live):
            proc.kill()
        if server is not None:
            log("stopping Kafka")
            server.stop()
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed is not None else 0


if __name__ == "__main__":
    sys.exit(main())
