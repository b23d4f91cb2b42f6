"""The benchmark's harness: the broker's admin and consumer, the agent, kcat and writer processes,
the data files and the samplers (issue 7).

The agent process is devstack.agentproc's AgentProcess, the one the tests run; BenchAgent adds
what only the benchmark needs: reaping with os.wait4 for the CPU the run used, a start-up wait
that raises BenchError (a failed scenario is reported and the others still run), setsid and a
raised RLIMIT_NOFILE, and an environment without the caller's LOGAGENT_* overrides.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
OUT_DIR = BENCH_DIR / "out"
BENCH_PY = BENCH_DIR / "bench.py"  # the entry point; writer children run it with --_writer / --_produce_only
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from report import Section, Target  # noqa: E402

from devstack.agentproc import AgentProcess, render_config  # noqa: E402
from devstack.promtext import metric_sum  # noqa: E402
from devstack.stack import listen_port  # noqa: E402 - needs ROOT on sys.path

PRODUCER = {"acks": "all", "enable.idempotence": "true", "compression.type": "lz4"}
metric = metric_sum  # metric(samples, name, **labels): the sum of a scrape's matching series


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


# --------------------------------------------------------------------------- small helpers

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


def compile_agent() -> str:
    """The agent's modules compiled to bytecode, as an installed package has them (pip compiles them at
    install; the sidecar image is the one exception, docs/deploy-container.md). The machine's shell sets
    PYTHONDONTWRITEBYTECODE=1, so without this every agent start compiled its ~95 modules again (about
    0.08 CPU s a start, a twentieth of a million-line run). Returns what the results say about it."""
    import logagent

    package = Path(logagent.__file__).parent
    done = subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], capture_output=True, text=True)
    if done.returncode != 0:
        return f"not compiled (compileall failed: {done.stdout[-200:]}{done.stderr[-200:]})"
    return f"compiled beforehand (compileall {package}), as pip leaves an installed package"


def clean_env() -> dict[str, str]:
    """The environment for children: no LOGAGENT_* overrides from the caller's shell."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LOGAGENT_")}


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
        self._watcher: Any = None  # a Consumer, made at the first high_watermark()

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

    def high_watermark(self, topic: str) -> int:
        """Partition 0's high watermark now (a request to the broker, not the agent: the throughput
        runs watch it instead of scraping the agent's /metrics, whose every scrape the agent pays for)."""
        from confluent_kafka import Consumer, TopicPartition

        if self._watcher is None:
            self._watcher = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "bench-watermarks",
                                      "enable.auto.commit": False, "log_level": 2})
        return int(self._watcher.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)[1])

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
                      "enable.auto.commit": False, "enable.partition.eof": True, "log_level": 2,
                      "fetch.max.bytes": 64 * 1024 * 1024, "max.partition.fetch.bytes": 16 * 1024 * 1024,
                      "queued.max.messages.kbytes": 256 * 1024})
        try:
            _low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
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
                # A transactional topic ends with a commit marker, which no consumer is given: the
                # end of the partition is then told by its EOF event.
                at_end = any(m.error() is not None and m.offset() >= high for m in msgs)
                if not good:
                    if at_end:
                        break
                    continue
                if first is None:
                    first = good[0]
                last = good[-1]
                last_off = last.offset()
                count += len(good)
                if on_batch is not None:
                    on_batch(good)
                if at_end:
                    break
            return count, high, first, last
        finally:
            c.close()


# --------------------------------------------------------------------------- the agent

class BenchAgent(AgentProcess):
    """One `python -m logagent run -c ini` child (tests.kit.AgentProcess), its /metrics and
    its rusage. Started without waiting: the throughput clock runs from the spawn."""

    def __init__(self, workdir: Path, ini_text: str, name: str = "agent",
                 nofile: tuple[int, int] | None = None) -> None:
        ini = workdir / f"{name}.ini"
        ini.write_text(ini_text)
        super().__init__(ini, workdir / f"{name}.log", base_env=clean_env(),
                         preexec_fn=preexec_nofile(nofile) if nofile else os.setsid)
        self.name = name
        self.rusage: Any = None  # of the exited process: user+sys CPU of the whole run

    def start(self, wait_ready: bool = False, timeout: float = 30.0) -> BenchAgent:
        super().start(wait_ready, timeout)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _wait(self, timeout: float | None) -> int | None:
        """Reap with os.wait4, for the child's rusage (Popen.wait drops it)."""
        assert self.proc is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.proc.returncode is None:
            pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
            if pid == self.proc.pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                self.rusage = ru
            elif deadline is not None and time.monotonic() >= deadline:
                return None
            else:
                time.sleep(0.02)
        return self.proc.returncode

    def stop_timed_out(self, timeout: float) -> None:
        log(f"agent {self.name} did not stop within {timeout:.0f}s of SIGTERM: SIGKILL")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, wait (SIGKILL after timeout); the exit code (rusage in self.rusage)."""
        if self.proc is None:
            raise BenchError("agent never started")
        return super().stop(timeout)

    def wait_metrics(self, timeout: float = 30) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.scrape()
            if m is not None:
                return m
            if not self.alive():
                raise BenchError(f"agent {self.name} exited ({self.returncode}) during start-up:\n{self.log_tail(30)}")
            time.sleep(0.05)
        raise BenchError(f"agent {self.name}: no /metrics after {timeout:.0f}s:\n{self.log_tail(30)}")

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None


def agent_ini(ctx: Ctx, data_dir: Path, files: list[dict[str, Any]],
              sysinfo: dict[str, Any] | None = None, agent_extra: dict[str, Any] | None = None,
              kafka_extra: dict[str, Any] | None = None) -> str:
    """The agent's config: no etcd, `[collect] files`, the throughput producer settings, the agent's
    default intervals (not the tests' fast ones), /metrics on a free loopback port."""
    agent = {"ip": "127.0.0.1", "hostname": "bench", "data_dir": str(data_dir),
             "allowed_paths": f"{ctx.tmp}/**", "http_listen": f"127.0.0.1:{listen_port()}",
             "log_level": "INFO"}
    agent.update(agent_extra or {})
    si = {"enabled": "false"}
    si.update({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (sysinfo or {}).items()})
    kafka = {"address": ctx.bootstrap, **(kafka_extra or {})}
    return render_config({"kafka": kafka, "kafka.producer": PRODUCER, "etcd": {"address": ""},
                          "agent": agent, "collect": {"files": json.dumps(files)}, "sysinfo": si})


def wait_delivered(agent: BenchAgent, topic: str, want: int, timeout: float,
                   interval: float = 0.1) -> tuple[float, float]:
    """Poll until `want` lines of `topic` are acknowledged; (delivered, seconds waited)."""
    t0 = time.monotonic()
    delivered = 0.0
    while True:
        delivered = metric(agent.scrape(), "logagent_messages_delivered_total", topic=topic)
        if delivered >= want or time.monotonic() - t0 > timeout:
            return delivered, time.monotonic() - t0
        time.sleep(interval)


def wait_files_open(agent: BenchAgent, n: int, timeout: float, interval: float = 0.2) -> tuple[float, float]:
    """Wait until the agent has `n` files open (stalls are tolerated, reported): (open, seconds)."""
    t0 = time.monotonic()
    last, last_change = -1.0, t0
    while True:
        if not agent.alive():
            raise BenchError(f"agent exited ({agent.returncode}):\n{agent.log_tail(30)}")
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


# --------------------------------------------------------------------------- context

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
            return proc_cpu(self.kafka.proc.pid)
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

def paced(t0: float, step: float, seconds: float) -> Iterator[tuple[int, float]]:
    """Ticks k = 0, 1, ... due at t0 + k * step (monotonic clock) until t0 + seconds: sleeps until
    each is due and yields (k, lateness in s, 0 when on time). A late tick is not skipped, so a
    writer that fell behind catches up and the lines per second stay what was asked."""
    k = 0
    while True:
        target = t0 + k * step
        now = time.monotonic()
        if target >= t0 + seconds:
            return
        lag = 0.0
        if target > now:
            time.sleep(target - now)
        else:
            lag = now - target
        yield k, lag
        k += 1


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
        rotate_every = spec.get("rotate_every", 0.0)  # rename rotation, as logrotate's create mode
        rotations, last_rotation = 0, t0
        for _burst, lag in paced(t0, period, seconds):
            max_lag = max(max_lag, lag)
            if rotate_every and time.monotonic() - last_rotation >= rotate_every:
                rotations += 1
                last_rotation = time.monotonic()
                for i in range(nfiles):
                    path = d / (pattern % i)
                    os.rename(path, f"{path}.{rotations}")
                    os.close(fds[i])
                    fds[i] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            for i, fd in enumerate(fds):
                ts = time.time_ns()
                buf = []
                for _ in range(per_file):
                    head = b"%d %010d f%02d " % (ts, written, i)
                    buf.append(head + pad[:size - 1 - len(head)] + b"\n")
                    written += 1
                os.write(fd, b"".join(buf))
    elif spec["mode"] == "slow":
        # One line per file per `cycle` seconds, the files spread over `slices` writes per cycle.
        cycle = spec.get("cycle", 1.0)
        slices = spec.get("slices", 100)
        per_slice = max(1, -(-nfiles // slices))
        for k, lag in paced(t0, cycle / slices, seconds):
            max_lag = max(max_lag, lag)
            lo = (k % slices) * per_slice
            for i in range(lo, min(nfiles, lo + per_slice)):
                head = b"%d %010d f%05d " % (time.time_ns(), written, i)
                os.write(fds[i], head + pad[:size - 1 - len(head)] + b"\n")
                written += 1
    else:
        raise SystemExit(f"unknown writer mode {spec['mode']}")
    elapsed = time.monotonic() - t0
    for fd in fds:
        os.close(fd)
    print(json.dumps({"lines": written, "seconds": elapsed, "max_lag": max_lag, "start": start_wall,
                      "end": time.time()}))
    return 0


def agent_messages(path: str) -> list[bytes]:
    """The agent's Kafka messages for the lines of the file at `path`, built as its reader builds them
    (plain lines, no msgid: the produce-only bound and kcat on the agent's JSON send these)."""
    from logagent.pipeline.message import MessageFormat, json_plain, utc_timestamp
    from logagent.sources.files.lines import LineSplitter

    data = Path(path).read_bytes()
    split = LineSplitter(1 << 20).feed_plain(data, 0)
    assert split is not None
    start, parts = split
    return MessageFormat("127.0.0.1", "bench", path).build_plain(start, parts, utc_timestamp(), json_plain(data))


def write_agent_messages(path: Path, out: Path) -> None:
    """The agent's messages for `path`, one per line into `out` (JSON has no raw newline): what
    `kcat -P -l` sends for the same-messages comparison of issue 23."""
    with open(out, "wb") as f:
        for value in agent_messages(str(path)):
            f.write(value + b"\n")


def produce_only_main(spec: dict[str, Any]) -> int:
    """Child of the throughput scenario: a bound, not a shipper. The agent's messages for the
    file are built in memory first (not timed); then a confluent-kafka Producer with the agent's
    settings sends them the way KafkaSink does (positional produce(), a delivery report per
    message counted in a poll thread), with no reading, splitting, queue or event loop.
    Prints seconds and CPU from Producer creation to the last delivery report."""
    from confluent_kafka import Producer

    from logagent.sinks.kafka.config import PRODUCER_DEFAULTS

    path = spec["path"]
    values = agent_messages(path)
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
        self.proc = subprocess.Popen([sys.executable, str(BENCH_PY), "--_writer", json.dumps(spec)],
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


# --------------------------------------------------------------------------- samplers

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


def proc_cpu(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


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


# --------------------------------------------------------------------------- profiler

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
