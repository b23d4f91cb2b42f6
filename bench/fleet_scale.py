"""The fleet control plane at scale: N simulated hosts against one real etcd.

Each simulated host is the agent's real control plane (logagent.control.etcd.EtcdControl with its
FleetHost and StatusPublisher): its own etcd connection, its own watch (the host keys and the
fleet's config prefix), its own status lease and keep-alive, its own saved file. What it drives is a
stand-in for the tailers (it records the entries and reports one file found per entry). The hosts
run in a few worker processes (asyncio, one loop each). The etcd is started here (devstack's
EtcdServer, loopback) unless --etcd names one.

Measured:
- idle: status writes per second (every PUT under <prefix>/status/ and seen/, seen through a watch;
  and etcd's own etcd_mvcc_put_total), lease keep-alives per second (etcd_debugging_lease_renewed_total);
- a group write: from the put to each host's status showing the new configuration hash (through
  one watch of the status prefix): p50 / p99 / max over hosts, and the time until all showed it;
- etcd's CPU (% of one core) and RSS, and the workers' CPU, over each window.

    .venv/bin/python bench/fleet_scale.py                       # 1,000 hosts, 4 processes, ~3 min
    .venv/bin/python bench/fleet_scale.py --hosts 200 --idle 20  # a smoke run

Results go to bench/RESULTS.md, section "Fleet control plane" (replaced on each full run;
--no-results prints only). Data dirs of the simulated hosts are on /dev/shm when it exists: a real
host fsyncs its own disk, 1,000 of them sharing this machine's one disk would measure the disk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from devstack.stack import EtcdServer  # noqa: E402
from logagent.config.settings import AgentSettings, EtcdSettings, FleetSettings, Settings  # noqa: E402
from logagent.config.sysinfo import SysinfoSettings  # noqa: E402
from logagent.control.base import EntryHealth, Health  # noqa: E402
from logagent.control.etcd import EtcdControl  # noqa: E402
from logagent.control.etcd_client import WatchBatch, connect  # noqa: E402
from logagent.control.fleet.keys import FleetKeys  # noqa: E402
from logagent.control.fleet.layers import config_hash, parse_collect_layer  # noqa: E402
from logagent.sources.files.entry import CollectEntry  # noqa: E402

GROUP = "bench"
SECTION = "## Fleet control plane"


def log(msg: str) -> None:
    print(f"[fleet-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def group_value(n: int) -> str:
    return json.dumps([{"path": f"/var/log/app{i}.log", "topic": f"app-{i}"} for i in range(n)])


def expected_hash(value: str) -> str:
    layer = parse_collect_layer(value, "k", ("/var/log/**",))
    return config_hash(list(layer.entries), None)


# --------------------------------------------------------------------------- the simulated hosts

class SimHost:
    """What a control plane drives (the agent), without tailers: entries recorded, one file each."""

    def __init__(self) -> None:
        self.entries: list[CollectEntry] = []

    async def apply_collect(self, entries: list[CollectEntry]) -> None:
        self.entries = list(entries)

    def apply_sysinfo(self, settings: SysinfoSettings) -> None:
        pass

    def entry_health(self, behind: bool = False) -> dict[str, EntryHealth]:
        return {e.path: EntryHealth(files=1) for e in self.entries}

    def health(self) -> Health:
        return Health(kafka_reachable=True)

    async def topic_problem(self, topic: str) -> str | None:
        return None


async def run_worker(args: argparse.Namespace) -> None:
    """One worker process: hosts first..first+count-1 until stdin closes."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=64))
    controls = []
    for i in range(args.first, args.first + args.count):
        settings = Settings(etcd=EtcdSettings(address=(args.etcd,), timeout=10),
                            agent=AgentSettings(id=f"sim-{i:05d}", ip="127.0.0.1", hostname=f"sim-{i:05d}",
                                                data_dir=Path(args.data) / f"sim-{i:05d}",
                                                allowed_paths=("/var/log/**",), groups=(GROUP,)),
                            fleet=FleetSettings(prefix=args.prefix, status_ttl=args.ttl, status_interval=10))
        host = SimHost()
        controls.append(EtcdControl(settings, host, observer=host))
    for start in range(0, len(controls), 50):  # a connection storm of 50 at a time, as a rolling start
        await asyncio.gather(*(c.start() for c in controls[start:start + 50]))
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the driver closes our stdin
    await asyncio.gather(*(c.stop() for c in controls))


# --------------------------------------------------------------------------- the driver

class StatusWatch:
    """One watch on the status prefix: per host, the first time its status showed each hash; and
    how many writes (PUT events) happened under the status and seen prefixes."""

    def __init__(self, etcd: str, keys: FleetKeys) -> None:
        self.keys = keys
        self.client = connect(EtcdSettings(address=(etcd,), timeout=10))
        self.first_seen: dict[str, dict[str, float]] = {}  # hash -> host -> monotonic time
        self.status_puts = 0
        self.seen_puts = 0
        self.lock = threading.Lock()
        rev, _ = self.client.read_prefix(keys.status_prefix)
        self.client.watch([], rev + 1, self._on, prefixes=[keys.status_prefix, keys.seen_prefix])

    def _on(self, item: Any) -> None:
        now = time.monotonic()
        if not isinstance(item, WatchBatch):
            return
        with self.lock:
            for ev in item.events:
                if ev.value is None:
                    continue
                if ev.key.startswith(self.keys.seen_prefix):
                    self.seen_puts += 1
                    continue
                self.status_puts += 1
                try:
                    doc = json.loads(ev.value)
                except ValueError:
                    continue
                host = ev.key[len(self.keys.status_prefix):]
                self.first_seen.setdefault(doc["config"]["hash"], {}).setdefault(host, now)

    def hosts_with(self, h: str) -> dict[str, float]:
        with self.lock:
            return dict(self.first_seen.get(h, {}))

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return self.status_puts, self.seen_puts

    def close(self) -> None:
        self.client.close()


def etcd_metrics(etcd: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://{etcd}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("etcd_mvcc_put_total ", "etcd_debugging_lease_renewed_total ",
                            "etcd_debugging_mvcc_watcher_total ", "etcd_server_proposals_committed_total ")):
            name, value = line.split()
            out[name] = float(value)
    return out


class Cpu:
    """CPU seconds of a set of processes between start() and stop()."""

    def __init__(self, procs: list[psutil.Process]) -> None:
        self.procs = procs
        self.t0 = 0.0
        self.c0 = 0.0

    def _cpu(self) -> float:
        total = 0.0
        for p in self.procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def start(self) -> Cpu:
        self.t0, self.c0 = time.monotonic(), self._cpu()
        return self

    def percent(self) -> float:
        return 100.0 * (self._cpu() - self.c0) / max(1e-6, time.monotonic() - self.t0)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def rss_mb(p: psutil.Process) -> float:
    return p.memory_info().rss / 1e6


def drive(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    server = None
    etcd = args.etcd
    if not etcd:
        server = EtcdServer(tmp / "etcd")
        server.start()
        etcd = server.endpoint
    keys = FleetKeys(args.prefix)
    workers: list[subprocess.Popen[bytes]] = []
    watch = None
    try:
        with connect(EtcdSettings(address=(etcd,), timeout=10)) as kv:
            kv.put(keys.group_collect(GROUP), group_value(3))
        first_hash = expected_hash(group_value(3))
        watch = StatusWatch(etcd, keys)
        per = -(-args.hosts // args.procs)
        t_start = time.monotonic()
        for w in range(args.procs):
            count = min(per, args.hosts - w * per)
            if count <= 0:
                break
            workers.append(subprocess.Popen(
                [sys.executable, __file__, "--_worker", "--etcd", etcd, "--prefix", args.prefix, "--first",
                 str(w * per), "--count", str(count), "--data", str(tmp / "hosts"), "--ttl", str(args.ttl)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT))
        for w in workers:
            assert w.stdout is not None
            line = w.stdout.readline()
            if b"ready" not in line:
                raise RuntimeError(f"a worker did not start: {line!r}")
        wait_for(lambda: len(watch.hosts_with(first_hash)) >= args.hosts, 300, "every host's first status")
        started_in = time.monotonic() - t_start
        log(f"{args.hosts} hosts up in {started_in:.1f} s")
        etcd_proc = psutil.Process(server.proc.pid) if server is not None and server.proc else None
        worker_procs = [psutil.Process(w.pid) for w in workers]
        time.sleep(12)  # the start's writes settle (counters written once after status_interval)

        # Idle.
        m0, (s0, e0) = etcd_metrics(etcd), watch.counts()
        cpu_etcd = Cpu([etcd_proc] if etcd_proc else []).start()
        cpu_workers = Cpu(worker_procs).start()
        time.sleep(args.idle)
        m1, (s1, e1) = etcd_metrics(etcd), watch.counts()
        idle = {"seconds": args.idle, "status_puts": s1 - s0, "seen_puts": e1 - e0,
                "etcd_puts": m1.get("etcd_mvcc_put_total", 0) - m0.get("etcd_mvcc_put_total", 0),
                "renewals": m1.get("etcd_debugging_lease_renewed_total", 0)
                - m0.get("etcd_debugging_lease_renewed_total", 0),
                "etcd_cpu": cpu_etcd.percent(), "workers_cpu": cpu_workers.percent(),
                "etcd_rss": rss_mb(etcd_proc) if etcd_proc else 0.0,
                "watchers": m1.get("etcd_debugging_mvcc_watcher_total", 0)}
        log(f"idle: {idle}")

        # Group writes.
        changes = []
        for n in range(args.changes):
            value = group_value(4 + n)
            want = expected_hash(value)
            cpu_etcd, cpu_workers = Cpu([etcd_proc] if etcd_proc else []).start(), Cpu(worker_procs).start()
            with connect(EtcdSettings(address=(etcd,), timeout=10)) as kv:
                t0 = time.monotonic()
                kv.put(keys.group_collect(GROUP), value)
            wait_for(lambda w=want: len(watch.hosts_with(w)) >= args.hosts, 120, f"change {n}: all hosts")
            lat = [t - t0 for t in watch.hosts_with(want).values()]
            change = {"min": min(lat), "p10": pct(lat, 10), "p50": pct(lat, 50), "p99": pct(lat, 99), "max": max(lat),
                      "etcd_cpu": cpu_etcd.percent(), "workers_cpu": cpu_workers.percent(),
                      "etcd_rss": rss_mb(etcd_proc) if etcd_proc else 0.0}
            changes.append(change)
            log(f"change {n}: {change}")
            time.sleep(args.pause)
        all_lat = []
        return {"hosts": args.hosts, "procs": args.procs, "ttl": args.ttl, "started_in": started_in,
                "idle": idle, "changes": changes, "all_lat": all_lat,
                "workers_rss": sum(rss_mb(p) for p in worker_procs), "etcd": etcd,
                "etcd_version": etcd_version(server)}
    finally:
        for w in workers:
            try:
                assert w.stdin is not None
                w.stdin.close()
            except OSError:
                pass
        for w in workers:
            try:
                w.wait(timeout=60)
            except subprocess.TimeoutExpired:
                w.kill()
        if watch is not None:
            watch.close()
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def etcd_version(server: EtcdServer | None) -> str:
    from devstack.stack import etcd_binary

    try:
        out = subprocess.run([etcd_binary(), "--version"], capture_output=True, text=True, timeout=10).stdout
        return out.splitlines()[0].split(":", 1)[1].strip()
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def wait_for(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


# --------------------------------------------------------------------------- the report

def report(r: dict[str, Any], command: str) -> str:
    idle, changes = r["idle"], r["changes"]
    hosts = r["hosts"]
    writes_per_s = idle["status_puts"] / idle["seconds"]
    per_host_10s = writes_per_s * 10 / hosts
    p50s, p99s, maxes = [c["p50"] for c in changes], [c["p99"] for c in changes], [c["max"] for c in changes]
    worst_p99 = max(p99s)
    load = os.getloadavg()
    mem = psutil.virtual_memory().total / 2**30
    lines = [
        SECTION, "",
        "Measured by `bench/fleet_scale.py` (the real control-plane code per simulated host: its own etcd",
        "connection, watch and lease; no tailers), not by `bench.py`; this section sits after the optimisation",
        "log so that `make bench` keeps it, and `fleet_scale.py` replaces it.", "",
        f"- **Date:** {datetime.now(UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}",
        f"- **Command:** `{command}`",
        f"- **Machine:** {os.cpu_count()} cores ({platform.processor() or platform.machine()}), {mem:.1f} GiB, "
        f"kernel {platform.release()}, load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"shared with other work. etcd {r['etcd_version']} (one member, loopback), the {r['procs']} worker "
        "processes and this script on the same 2 cores.",
        f"- **Set-up:** {hosts} hosts in {r['procs']} processes (one asyncio loop each), one group of "
        f"{hosts}, status lease TTL {r['ttl']:g} s (keep-alive every {r['ttl'] / 3:g} s), status_interval 10 s; "
        f"all {hosts} connected, watching and with a first status in {r['started_in']:.1f} s.", "",
        "| target (issue 22, 7a) | measured | result |", "|---|---|---|",
        f"| p99 < 3 s from one group write to all {hosts} statuses showing the new hash | p99 {worst_p99:.2f} s "
        f"(worst of {len(changes)} writes; p50 {statistics.median(p50s):.2f} s, max {max(maxes):.2f} s) | "
        f"{'PASS' if worst_p99 < 3 else 'FAIL'} |",
        f"| status traffic <= 1 write per host per 10 s when nothing changes | {per_host_10s:.3f} writes per host "
        f"per 10 s ({idle['status_puts']} status writes in {idle['seconds']:g} s) | "
        f"{'PASS' if per_host_10s <= 1 else 'FAIL'} |", "",
        "| group write | p50 | p99 | max (all hosts) | etcd CPU | workers' CPU | etcd RSS |",
        "|---|---|---|---|---|---|---|"]
    for i, c in enumerate(changes, 1):
        lines.append(f"| {i} | {c['p50']:.2f} s | {c['p99']:.2f} s | {c['max']:.2f} s | {c['etcd_cpu']:.0f} % | "
                     f"{c['workers_cpu']:.0f} % | {c['etcd_rss']:.0f} MB |")
    lines += ["", "| idle, over %g s | value |" % idle["seconds"], "|---|---|",
              f"| status writes | {writes_per_s:.2f}/s ({idle['status_puts']}), seen records {idle['seen_puts']} |",
              f"| all etcd puts (etcd_mvcc_put_total) | {idle['etcd_puts'] / idle['seconds']:.2f}/s |",
              f"| lease keep-alives (etcd_debugging_lease_renewed_total) | {idle['renewals'] / idle['seconds']:.0f}/s "
              f"(expected {hosts / (r['ttl'] / 3):.0f}/s: one per host every TTL/3) |",
              f"| etcd CPU | {idle['etcd_cpu']:.1f} % of a core |",
              f"| etcd RSS | {idle['etcd_rss']:.0f} MB |",
              f"| etcd watchers (etcd_debugging_mvcc_watcher_total) | {idle['watchers']:.0f} |",
              f"| the {r['procs']} worker processes: CPU, RSS | {idle['workers_cpu']:.0f} % of a core, "
              f"{r['workers_rss']:.0f} MB |", ""]
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace the section in RESULTS.md where it is (or append it at the end, where bench.py keeps it)."""
    old = path.read_text() if path.exists() else ""
    i = old.find("\n" + SECTION + "\n")
    if i < 0:
        path.write_text(old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n")
        return
    j = old.find("\n## ", i + len(SECTION) + 1)
    path.write_text(old[:i + 1] + text.rstrip("\n") + "\n" + ("\n" + old[j + 1:] if j >= 0 else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of the idle window")
    parser.add_argument("--changes", type=int, default=5, help="group writes measured")
    parser.add_argument("--pause", type=float, default=12.0, help="seconds between two group writes")
    parser.add_argument("--ttl", type=float, default=15.0)
    parser.add_argument("--etcd", default="", help="host:port of an etcd to use (default: start one)")
    parser.add_argument("--prefix", default="/logagent-bench/fleet")
    parser.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    parser.add_argument("--no-results", action="store_true")
    parser.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--data", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker:
        asyncio.run(run_worker(args))
        return 0
    command = " ".join([".venv/bin/python", "bench/fleet_scale.py", *sys.argv[1:]])
    result = drive(args)
    text = report(result, command)
    print(text)
    if not args.no_results:
        write_section(Path(args.results), text)
        log(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
