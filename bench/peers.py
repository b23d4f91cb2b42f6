"""What the side-by-side scripts share (k8s_node.py, many_files_peer.py): the broker, a LogAppendTime
topic, Fluent Bit's configuration (tail -> kafka, the README's output: acks=all, lz4) and its start, and
one measured run: a shipper's CPU and peak RSS from /proc while a writer runs, every line read back
with its latency. (The scripts put the repository root on sys.path before importing this.)

Lines are written as `<ns since epoch> <seq> <key> <pad>` (inside CRI records for k8s_node.py); the
latency of a line is the broker's append time minus the time in it. Keys starting with "noisy" are
counted apart.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from devstack.agentproc import AgentProcess
from devstack.stack import KafkaServer

FLUENT_BIT = "/work/shared/peers/fluent-bit"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def create_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config={"message.timestamp.type": "LogAppendTime"})])[topic].result(30)


def pct(v: list[float], p: float) -> float:
    return sorted(v)[min(len(v) - 1, int(len(v) * p / 100))] if v else float("nan")


def consume(bootstrap: str, topic: str, expected: int, timeout: float) -> dict[str, Any]:
    """Every message of `topic` until `expected` unique lines or `timeout` s of nothing new."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{topic}", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    quiet_lat: list[float] = []
    noisy_lat: list[float] = []
    quiet_read: list[float] = []  # logagent's `timestamp` (when it read the line) minus the write time
    seen: set[int] = set()
    dups = 0
    last_new = time.monotonic()
    try:
        while len(seen) < expected and time.monotonic() - last_new < timeout:
            for m in consumer.consume(10000, 0.5):
                if m.error():
                    continue
                doc = json.loads(m.value())
                text = doc.get("data", doc.get("log", ""))
                wns, seq, key = text.split(" ", 3)[:3]
                if int(seq) in seen:
                    dups += 1
                    continue
                seen.add(int(seq))
                last_new = time.monotonic()
                lat = m.timestamp()[1] - int(wns) / 1e6
                (noisy_lat if key.startswith("noisy") else quiet_lat).append(lat)
                read_at = doc.get("timestamp") if "data" in doc else None
                if read_at and not key.startswith("noisy"):
                    t = dt.datetime.strptime(read_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
                    quiet_read.append(t.timestamp() * 1e3 - int(wns) / 1e6)
    finally:
        consumer.close()
    return {"unique": len(seen), "dups": dups,
            "quiet_p50": pct(quiet_lat, 50), "quiet_p99": pct(quiet_lat, 99), "quiet_max": max(quiet_lat, default=0),
            "noisy_p50": pct(noisy_lat, 50), "noisy_p99": pct(noisy_lat, 99), "noisy_max": max(noisy_lat, default=0),
            "read_p50": pct(quiet_read, 50), "read_p99": pct(quiet_read, 99)}


def fluent_bit_conf(work: Path, path_glob: str, bootstrap: str, topic: str, parser: str | None = None) -> Path:
    """tail over `path_glob` (with `multiline.parser` when given) -> kafka `topic`."""
    conf = work / "fluent-bit.conf"
    multiline = f"    multiline.parser  {parser}\n" if parser else ""
    conf.write_text(f"""[SERVICE]
    Flush             1
    Daemon            Off
    Log_Level         warn
    HTTP_Server       Off

[INPUT]
    Name              tail
    Path              {path_glob}
{multiline}    Read_from_Head    On
    Refresh_Interval  1
    Path_Key          path
    Offset_Key        offset
    DB                {work}/tail.db

[FILTER]
    Name              record_modifier
    Match             *
    Record            ip 127.0.0.1
    Record            host bench-host

[OUTPUT]
    Name              kafka
    Match             *
    Brokers           {bootstrap}
    Topics            {topic}
    Format            json
    Timestamp_Key     timestamp
    Timestamp_Format  iso8601
    rdkafka.request.required.acks  -1
    rdkafka.compression.codec      lz4
""")
    return conf


def start_fluent_bit(binary: str, conf: Path, work: Path,
                     preexec_fn: Callable[[], None] | None = None) -> subprocess.Popen[bytes]:
    """Fluent Bit on `conf`, its output in `work`/fluent-bit.log."""
    log = open(work / "fluent-bit.log", "ab")
    return subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec_fn)


def measure(pid: int, writer: Any, done: Any, bootstrap: str, topic: str, agent: AgentProcess | None,
            proc: subprocess.Popen[bytes] | None, marks: Path | None = None) -> dict[str, Any]:
    """Run `writer` (a multiprocessing.Process that sets `done.value` to the lines it wrote) to its end;
    the shipper `pid`'s CPU seconds over it, every line read back from `topic` with its latency, the
    shipper's peak RSS; then the shipper (`agent` or Fluent Bit's `proc`) is stopped. `marks`: the
    files `<marks>.start` and `<marks>.stop` are created as the window opens and closes (bench/loopcpu)."""
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    if marks is not None:
        Path(f"{marks}.start").touch()
    writer.start()
    writer.join()
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    if marks is not None:
        Path(f"{marks}.stop").touch()
    written = int(done.value)
    st = consume(bootstrap, topic, written, timeout=30)
    hwm = hwm_mb(pid)
    if agent is not None:
        agent.stop()
    if proc is not None:
        proc.terminate()
        proc.wait(30)
    return {"written": written, "cpu_s": cpu1 - cpu0, "cpu_pct": (cpu1 - cpu0) / (t1 - t0) * 100, "rss_mb": hwm,
            **st}


@contextlib.contextmanager
def broker(tmp: Path) -> Iterator[str]:
    """The broker's bootstrap address: LOGAGENT_TEST_KAFKA, or the devstack's, started in `tmp`."""
    bootstrap = os.environ.get("LOGAGENT_TEST_KAFKA", "")
    if bootstrap:
        yield bootstrap
        return
    server = KafkaServer(tmp / "kafka")
    server.start()
    try:
        yield server.bootstrap
    finally:
        server.stop()
