"""A Kubernetes node's pods through logagent and through Fluent Bit, side by side: PODS pods with two
containers each writing QUIET lines/s, and one noisy pod writing NOISY lines/s, as containerd writes
them (CRI records under a /var/log/pods tree; the noisy container's 0.log renamed by the kubelet's rule
at 10 MiB, the older ones gzipped). Each shipper runs alone on a fresh tree of the same shape, against
the same broker (the devstack's, started here, or LOGAGENT_TEST_KAFKA on loopback), for SECONDS s:

- the shipper's CPU (% of one core, over the write window) and peak RSS (VmHWM);
- latency per line: the broker's append time (LogAppendTime) minus the write time in the line, p50,
  p99 and max, for the quiet pods' lines and for the noisy pod's apart (the noisy one must not delay
  the quiet ones by more than 1 s);
- every line delivered once (count, unique, duplicates).

    .venv/bin/python bench/k8s_node.py [--pods 200] [--quiet 10] [--noisy 5000] [--seconds 60]
        [--shippers logagent,fluentbit] [--fluent-bit /work/shared/peers/fluent-bit]
"""

from __future__ import annotations

import argparse
import gzip
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peers import FLUENT_BIT, broker, create_topic, fluent_bit_conf, measure, start_fluent_bit

from devstack.agentproc import AgentProcess, write_config

ROTATE_AT = 10 * 1024 * 1024  # the kubelet's containerLogMaxSize default
KEEP = 5  # containerLogMaxFiles
PAD = "x" * 60


def _writer(root: str, pods: int, quiet: float, noisy: float, seconds: float, done: Any) -> None:
    """The runtime: CRI F records `<ns since epoch> <seq> <pod>/<container> <pad>`, every 10 ms
    the lines each container is due; the kubelet's rotation of any file past ROTATE_AT."""
    files: dict[str, Any] = {}
    paths: list[tuple[str, str, float]] = []  # (key, path, rate)
    for i in range(pods):
        for c in ("app", "sidecar"):
            paths.append((f"quiet-{i}/{c}", f"{root}/default_quiet-{i}_{i:08d}-0000-4000-8000-000000000000/{c}/0.log",
                          quiet))
    paths.append(("noisy/app", f"{root}/default_noisy_ffffffff-0000-4000-8000-000000000000/app/0.log", noisy))
    for _, path, _ in paths:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        files[path] = open(path, "a", buffering=1 << 16)
    sent = {key: 0 for key, _, _ in paths}
    seq = 0
    stamp = 0
    t0 = time.monotonic()
    while True:
        now = time.monotonic()
        elapsed = now - t0
        if elapsed >= seconds:
            break
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000000Z"
        for key, path, rate in paths:
            due = int(elapsed * rate) - sent[key]
            if due <= 0:
                continue
            f = files[path]
            wns = time.time_ns()
            chunk = []
            for _ in range(due):
                seq += 1
                chunk.append(f"{ts} stdout F {wns} {seq:010d} {key} {PAD}\n")
            f.write("".join(chunk))
            f.flush()
            sent[key] += due
            if f.tell() >= ROTATE_AT:  # the kubelet: rename, reopen, gzip the older, keep KEEP files
                f.close()
                stamp += 1
                rotated = f"{path}.{time.strftime('%Y%m%d-%H%M%S', time.gmtime(1_780_000_000 + stamp))}"
                older = sorted(p for p in os.listdir(os.path.dirname(path))
                               if p.startswith("0.log.") and not p.endswith((".gz", ".tmp")))
                os.rename(path, rotated)
                files[path] = open(path, "a", buffering=1 << 16)
                for name in older:
                    plain = os.path.join(os.path.dirname(path), name)
                    with open(plain, "rb") as src, gzip.open(plain + ".gz.tmp", "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    os.rename(plain + ".gz.tmp", plain + ".gz")
                    os.unlink(plain)
                kept = sorted(p for p in os.listdir(os.path.dirname(path)) if p.startswith("0.log."))
                for name in kept[: max(0, len(kept) - (KEEP - 1))]:
                    os.unlink(os.path.join(os.path.dirname(path), name))
        time.sleep(max(0.0, 0.01 - (time.monotonic() - now)))
    for f in files.values():
        f.close()
    done.value = seq


def run(shipper: str, args: argparse.Namespace, bootstrap: str, tmp: Path) -> dict[str, Any]:
    work = tmp / shipper
    root = work / "pods"
    root.mkdir(parents=True)
    topic = f"k8s-node-{shipper}-{int(time.time())}"
    create_topic(bootstrap, topic)
    agent: AgentProcess | None = None
    proc: subprocess.Popen[bytes] | None = None
    if shipper == "logagent":
        cfg = write_config(work / "agent.ini", bootstrap, work / "data", f"{root}/**",
                           files=[{"path": f"{root}/*/*/*.log", "topic": topic, "format": "cri",
                                   "start": "beginning"}],
                           extra={"agent": {"log_level": "WARNING", "stat_interval": "1", "scan_interval": "2",
                                            "registry_flush_interval": "1"}})
        agent = AgentProcess(cfg, work / "agent.log").start()
        pid = agent.proc.pid if agent.proc else 0
    else:
        conf = fluent_bit_conf(work, f"{root}/*/*/*.log", bootstrap, topic, parser="cri")
        proc = start_fluent_bit(args.fluent_bit, conf, work)
        pid = proc.pid
        time.sleep(1)  # no readiness endpoint in this build; its first scan runs at start
    done = multiprocessing.Value("q", 0)
    writer = multiprocessing.Process(target=_writer, args=(str(root), args.pods, args.quiet, args.noisy,
                                                          args.seconds, done))
    return {"shipper": shipper, **measure(pid, writer, done, bootstrap, topic, agent, proc)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pods", type=int, default=200)
    p.add_argument("--quiet", type=float, default=10.0, help="lines/s of each quiet container")
    p.add_argument("--noisy", type=float, default=5000.0, help="lines/s of the noisy pod")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--shippers", default="logagent,fluentbit")
    p.add_argument("--fluent-bit", default=FLUENT_BIT)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="k8s-node-"))
    try:
        with broker(tmp) as bootstrap:
            results = [run(s, args, bootstrap, tmp) for s in args.shippers.split(",")]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rate = args.pods * 2 * args.quiet + args.noisy
    print(f"{args.pods} pods x 2 containers x {args.quiet:g} lines/s + 1 noisy pod x {args.noisy:g} lines/s "
          f"= {rate:,.0f} lines/s for {args.seconds:g} s; {os.cpu_count()} cores, {os.uname().release}")
    print("| shipper | lines written | delivered once | duplicates | CPU % of a core | peak RSS MB "
          "| quiet p50 / p99 / max ms | noisy p50 / p99 / max ms | quiet read p50 / p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['shipper']} | {r['written']:,} | {r['unique']:,} | {r['dups']:,} | {r['cpu_pct']:.0f} | "
              f"{r['rss_mb']:.0f} | {r['quiet_p50']:.0f} / {r['quiet_p99']:.0f} / {r['quiet_max']:.0f} | "
              f"{r['noisy_p50']:.0f} / {r['noisy_p99']:.0f} / {r['noisy_max']:.0f} | "
              f"{r['read_p50']:.0f} / {r['read_p99']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
