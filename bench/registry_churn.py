"""The registry under churn (issue 20 item 6): one glob folder where FILES files with new names are
created at RATE a second, each gets LINES lines and is deleted a second later (per-job logs, a
pod's log under Kubernetes). Every SAMPLE seconds: the registry's entries (registry.json as last
written, and the logagent_registry_entries gauge where the tree has it), registry.json's size, the
folders in the spool, the agent's RSS and CPU. At the end, how many files' lines all reached Kafka,
and the agent's ERROR lines. Runs the agent of the
tree given (a checkout of an older commit too, to compare), on the broker of LOGAGENT_TEST_KAFKA,
or on one it starts (devstack) and stops:

    .venv/bin/python bench/registry_churn.py . 100000 100
    LOGAGENT_TEST_KAFKA=127.0.0.1:9092 .venv/bin/python bench/registry_churn.py /tmp/base 20000 100
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from tree import load_kit, scratch_logs

LINES = 3
SAMPLE = 10.0
LIFETIME = 1.0


@contextlib.contextmanager
def broker(tmp: Path) -> Iterator[str]:
    """LOGAGENT_TEST_KAFKA, or a broker of our own (devstack) for the run."""
    if os.environ.get("LOGAGENT_TEST_KAFKA"):
        yield os.environ["LOGAGENT_TEST_KAFKA"]
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from devstack.stack import KafkaServer
    from tests.kit import running

    with running(KafkaServer(tmp / "kafka"), "kafka for the churn benchmark") as server:
        yield server.bootstrap


def registry_state(data_dir: Path) -> tuple[int, int]:
    """(entries, bytes) of registry.json as last written."""
    try:
        raw = (data_dir / "registry.json").read_bytes()
    except FileNotFoundError:
        return 0, 0
    return len(json.loads(raw)["files"]), len(raw)


def spool_folders(data_dir: Path) -> int:
    try:
        return sum(1 for _ in (data_dir / "spool").iterdir())
    except FileNotFoundError:
        return 0


def proc_sample(pid: int) -> tuple[float, int]:
    """(CPU seconds so far, VmRSS in KiB) of the agent."""
    fields = open(f"/proc/{pid}/stat").read().split(")")[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS"))
    return cpu, rss


def main() -> int:
    root = Path(sys.argv[1]).resolve()
    files = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    rate = float(sys.argv[3]) if len(sys.argv) > 3 else 100.0
    kit = load_kit(root)
    tmp, logs = scratch_logs()
    folder = logs / "jobs"
    folder.mkdir()
    data_dir = tmp / "data"
    with broker(tmp) as kafka:
        topic = kit.new_topic("churn")
        cfg = kit.write_config(tmp / "a.ini", kafka, data_dir, f"{logs}/**",
                               files=[{"path": f"{folder}/*.log", "topic": topic}],
                               extra={"kafka.producer": {"linger.ms": "20"},
                                      "agent": {"stat_interval": "1", "scan_interval": "2", "rotate_wait": "2",
                                                "registry_flush_interval": "1", "log_level": "WARNING"}})
        agent = kit.AgentProcess(cfg, tmp / "agent.log").start()
        assert agent.proc is not None
        pid = agent.proc.pid
        print(f"tree {root}, {files} files at {rate:.0f}/s, {LINES} lines each, deleted {LIFETIME:.0f} s after "
              f"creation; agent pid {pid}, scratch {tmp}")
        print(f"{'t (s)':>6} {'files':>7} {'entries':>7} {'gauge':>6} {'json KiB':>8} {'spool':>6} {'RSS MiB':>7} "
              f"{'CPU %':>6}")
        live: deque[tuple[float, Path]] = deque()
        samples: list[tuple[float, int, int, float, int, int, float, int]] = []
        t0 = time.monotonic()
        cpu0, _ = proc_sample(pid)
        last_t, last_cpu = t0, cpu0
        created = 0

        def sample(now: float) -> None:
            nonlocal last_t, last_cpu
            entries, size = registry_state(data_dir)
            scraped = agent.scrape()
            gauge = scraped.get("logagent_registry_entries", -1.0) if scraped else -1.0
            cpu, rss = proc_sample(pid)
            load = 100 * (cpu - last_cpu) / (now - last_t)
            last_t, last_cpu = now, cpu
            spooled = spool_folders(data_dir)
            samples.append((now - t0, created, entries, gauge, size, rss, load, spooled))
            print(f"{now - t0:6.0f} {created:7d} {entries:7d} {gauge:6.0f} {size / 1024:8.1f} {spooled:6d} "
                  f"{rss / 1024:7.1f} {load:6.1f}", flush=True)

        next_sample = t0 + SAMPLE
        while created < files or live:
            now = time.monotonic()
            while created < files and now >= t0 + created / rate:
                path = folder / f"job-{created:07d}.log"
                with open(path, "w") as f:
                    f.write("".join(f"job {created:07d} line {k}\n" for k in range(LINES)))
                live.append((now, path))
                created += 1
            while live and now - live[0][0] >= LIFETIME:
                live.popleft()[1].unlink()
            if now >= next_sample:
                sample(now)
                next_sample += SAMPLE
            time.sleep(0.002)
        settle_until = time.monotonic() + 30  # the last files finish, a sweep passes
        while time.monotonic() < settle_until:
            time.sleep(max(0.0, min(next_sample, settle_until) - time.monotonic()))
            if time.monotonic() >= next_sample:
                sample(time.monotonic())
                next_sample += SAMPLE
        elapsed = time.monotonic() - t0
        cpu_end, _ = proc_sample(pid)
        with kit.KafkaReader(kafka, topic) as reader:
            kit.read_all(reader, files * LINES, timeout=300)
            per_file: dict[str, int] = {}
            for m in reader.messages:
                path = json.loads(m.value())["path"]
                per_file[path] = per_file.get(path, 0) + 1
        whole = sum(1 for n in per_file.values() if n >= LINES)
        agent.stop(timeout=60)
        errors = sum(" ERROR " in line for line in agent.log_text().splitlines())
        peak = max(s[2] for s in samples)
        print(f"\n{files} files in {elapsed:.0f} s: {whole} delivered whole ({len(reader.messages)} messages for "
              f"{files * LINES} lines); registry entries peak {peak}, last {samples[-1][2]}; registry.json peak "
              f"{max(s[4] for s in samples) / 1024:.1f} KiB; RSS {samples[0][5] / 1024:.0f} MiB at the first sample, "
              f"{max(s[5] for s in samples) / 1024:.0f} peak, {samples[-1][5] / 1024:.0f} last; agent CPU "
              f"{100 * (cpu_end - cpu0) / elapsed:.0f} % of a core on average; spool folders peak "
              f"{max(s[7] for s in samples)}, last {samples[-1][7]}; {errors} ERROR lines in the agent's log")
    return 0


if __name__ == "__main__":
    sys.exit(main())
