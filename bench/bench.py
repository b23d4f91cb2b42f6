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
  eos         [kafka] delivery = exactly_once against at_least_once, alternating on the same
              1,000,000 lines: lines/s and CPU per line side by side (targets: >= 80 %, <= 1.3 x);
              latency to a read_committed consumer p50/p99 in both modes; what the msgid costs.
  profile     (not in the default set; also --profile) one extra 100-byte throughput run of
              the agent under `py-spy record`; prints the top functions by self time.

Only loopback traffic. Test files live in a temporary folder, removed at the end
(--keep-tmp keeps it). A default run takes about 9-10 minutes; --quick is a smoke run (1 minute).

Code: bench/harness.py (processes, writers, samplers; the agent process is tests.kit's),
bench/scenarios.py (one function a scenario), bench/report.py (tables and RESULTS.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import (
    BENCH_DIR,
    OUT_DIR,
    ROOT,
    BenchError,
    Ctx,
    KafkaTools,
    compile_agent,
    ensure_kcat,
    log,
    produce_only_main,
    writer_main,
)
from report import Section, kafka_version, kcat_version, machine_info, targets_table, write_results
from scenarios import ALL_SCENARIOS, EXTRA_SCENARIOS, RUNNERS


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
    p.add_argument("--no-rotation", dest="rotation", action="store_false",
                   help="latency: skip the second run, in which every file is renamed every second")
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
        info["agent's bytecode"] = compile_agent()
        for name in ALL_SCENARIOS + EXTRA_SCENARIOS:
            if name in args.only_list:
                log(f"=== {name}")
                try:
                    RUNNERS[name](ctx)
                except BenchError as exc:
                    log(f"scenario {name} failed: {exc}")
                    ctx.sections.append(Section(f"{name}: FAILED", f"```\n{exc}\n```"))
                    failed = exc
        info["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        total = time.monotonic() - t0
        results = Path(args.results) if args.results else (
            OUT_DIR / "RESULTS-partial.md" if args.partial else BENCH_DIR / "RESULTS.md")
        write_results(results, ctx, info, command, started, total)
        print("\n## Targets\n\n" + targets_table(ctx.targets))
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
