"""Many files through logagent and through Fluent Bit, side by side (issue 23): FILES plain files under
one folder, each appended RATE lines/s (spread evenly over each second), for SECONDS s; each shipper
alone on a fresh folder of the same shape, one glob over it, against the same broker (the devstack's,
started here, or LOGAGENT_TEST_KAFKA on loopback):

- the shipper's CPU (% of one core over the write window, and microseconds of CPU per line) and peak
  RSS (VmHWM);
- latency per line: the broker's append time (LogAppendTime) minus the write time in the line, p50,
  p99 and max;
- every line delivered once (count, unique, duplicates).

    .venv/bin/python bench/many_files_peer.py [--files 1000,10000] [--rate 1] [--seconds 30]
        [--shippers logagent,fluentbit] [--rounds 1]
    .venv/bin/python bench/many_files_peer.py --files 100 --rate 100     # issue 23 item 2
    .venv/bin/python bench/many_files_peer.py --files 2000 --max-open 512 --shippers logagent   # item 3
    .venv/bin/python bench/many_files_peer.py --files 10000 --shippers logagent --loop-cpu /tmp/lc  # where
    .venv/bin/python bench/many_files_peer.py --files 10000 --shippers logagent,logagent-system  # the OS's python3
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import compile_agent
from peers import FLUENT_BIT, broker, create_topic, fluent_bit_conf, measure, start_fluent_bit

from devstack.agentproc import AgentProcess, write_config

PAD = "x" * 60
# The agent as config.ini ships it, not the test suite's fast intervals (devstack.agentproc.write_config:
# 0.5 s stat, scan and registry writes, linger.ms 5), but the scan each second as Fluent Bit's
# Refresh_Interval 1 here (its default is 60 s, the agent's scan_interval 2 s).
AGENT_AS_SHIPPED = {"stat_interval": "1", "scan_interval": "1", "registry_flush_interval": "1", "rotate_wait": "2"}
SLICES = 100  # the writer wakes this many times a second and writes the files due in each slice


def _writer(folder: str, files: int, rate: float, seconds: float, done: Any) -> None:
    """Lines `<ns since epoch> <seq> f<i> <pad>`, open-write-close each time (a logger that reopens its
    file). At 1 line/s each file has its own phase in the second; faster, every file gets its share of
    each of the SLICES ticks of a second."""
    _raise_nofile()
    paths = [os.path.join(folder, f"f{i:05d}.log") for i in range(files)]
    per_slice = [paths[s::SLICES] for s in range(SLICES)]
    seq = 0
    t0 = time.monotonic()
    next_tick = 0
    while True:
        elapsed = time.monotonic() - t0
        if elapsed >= seconds:
            break
        tick = int(elapsed * SLICES)
        while next_tick <= tick:
            due = 1 if rate <= 1 else int((next_tick + 1) * rate / SLICES) - int(next_tick * rate / SLICES)
            for path in (per_slice[next_tick % SLICES] if rate <= 1 else paths if due else ()):
                lines = []
                for _ in range(due):
                    seq += 1
                    lines.append(f"{time.time_ns()} {seq:010d} {os.path.basename(path)} {PAD}\n")
                with open(path, "a") as f:
                    f.write("".join(lines))
            next_tick += 1
        time.sleep(max(0.0, t0 + (tick + 1) / SLICES - time.monotonic()))
    done.value = seq


def _raise_nofile() -> None:
    """The soft descriptor limit up to the hard one (10,000 files open at once for Fluent Bit)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(shipper: str, files: int, args: argparse.Namespace, bootstrap: str, tmp: Path) -> dict[str, Any]:
    work = tmp / f"{shipper}-{files}-{int(time.time() * 1000)}"
    folder = work / "logs"
    folder.mkdir(parents=True)
    for i in range(files):
        (folder / f"f{i:05d}.log").touch()
    topic = f"many-files-{work.name}"
    create_topic(bootstrap, topic)
    agent: AgentProcess | None = None
    proc: subprocess.Popen[bytes] | None = None
    window: Path | None = None  # with --loop-cpu: where the agent writes its table (bench/loopcpu)
    if shipper.startswith("logagent"):
        cfg = write_config(work / "agent.ini", bootstrap, work / "data", f"{folder}/**",
                           files=[{"path": f"{folder}/*.log", "topic": topic, "start": "beginning"}],
                           extra={"agent": {**AGENT_AS_SHIPPED, "log_level": "WARNING",
                                            "max_open_files": str(args.max_open or max(1024, 2 * files))},
                                  "kafka.producer": {"linger.ms": "20"}})
        loop_cpu = _loop_cpu_env(args, f"{shipper}-{files}")
        window = Path(loop_cpu["LOGAGENT_LOOP_CPU"]) if loop_cpu else None
        python = _system_venv(args, tmp) if shipper == "logagent-system" else None
        agent = AgentProcess(cfg, work / "agent.log", loop_cpu, python=python)
        old = resource.getrlimit(resource.RLIMIT_NOFILE)
        _raise_nofile()  # the agent inherits it
        try:
            agent.start()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, old)
        pid = agent.proc.pid if agent.proc else 0
    else:
        conf = fluent_bit_conf(work, f"{folder}/*.log", bootstrap, topic)
        proc = start_fluent_bit(args.fluent_bit, conf, work, preexec_fn=_raise_nofile)
        pid = proc.pid
    time.sleep(args.settle)  # both take their first look at every file before the writer starts
    done = multiprocessing.Value("q", 0)
    writer = multiprocessing.Process(target=_writer, args=(str(folder), files, args.rate, args.seconds, done))
    spy = _py_spy(pid, args, f"{shipper}-{files}") if agent is not None and args.profile else None
    r = measure(pid, writer, done, bootstrap, topic, agent, proc, window)
    if window is not None:
        _show_loop_cpu(window)
    if spy is not None:
        spy.wait()
    # logagent's log (level WARNING): errors it logged, and descriptor exhaustion (EMFILE) above all.
    logged = (work / "agent.log").read_text(errors="replace") if agent is not None else ""
    errors = sum(" ERROR " in line or " CRITICAL " in line for line in logged.splitlines())
    emfile = logged.count("Too many open files") + logged.count("too_many_open_files")
    shutil.rmtree(work, ignore_errors=True)
    return {"shipper": shipper, "files": files, **r, "us_per_line": r["cpu_s"] / max(1, r["written"]) * 1e6,
            "errors": errors if agent is not None else "-", "emfile": emfile if agent is not None else "-"}


def _loop_cpu_env(args: argparse.Namespace, name: str) -> dict[str, str]:
    """With --loop-cpu: the agent loads bench/loopcpu/sitecustomize.py, which times each callback of its
    event loop over the write window (the table goes to DIR)."""
    if not args.loop_cpu:
        return {}
    out = Path(args.loop_cpu).resolve() / f"loop-cpu-{name}-{args.rate:g}-{int(time.time())}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    here = str(Path(__file__).resolve().parent / "loopcpu")
    path = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    return {"LOGAGENT_LOOP_CPU": str(out), "PYTHONPATH": path}


def _system_venv(args: argparse.Namespace, tmp: Path) -> str:
    """The interpreter for the shipper `logagent-system`: --system-python (Debian's python3, built with
    PGO and LTO, which the systemd unit and the image run the agent with; this venv's may be built
    without them, as pyenv's is here) in a venv of its own under `tmp` that sees this venv's packages
    (the same Python minor version: the same compiled wheels)."""
    venv = tmp / "system-venv"
    python = venv / "bin" / "python"
    if python.exists():
        return str(python)
    ours = f"{sys.version_info[0]}.{sys.version_info[1]}"
    theirs = subprocess.run([args.system_python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    if theirs != ours:
        raise SystemExit(f"--system-python {args.system_python} is Python {theirs}, this venv's is {ours}")
    subprocess.run([args.system_python, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "logagent-bench.pth").write_text(
        f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    return str(python)


def _show_loop_cpu(out: Path) -> None:
    """The agent's table, once it has written it (to stderr, beside the progress lines)."""
    for _ in range(50):
        if out.exists() and out.read_text().count("\n") > 3:
            print(out.read_text(), file=sys.stderr, flush=True)
            return
        time.sleep(0.1)
    print(f"no loop CPU table in {out}", file=sys.stderr)


def _py_spy(pid: int, args: argparse.Namespace, name: str) -> subprocess.Popen[bytes]:
    """py-spy records the thread holding the GIL during the write window: raw stacks, one line each
    with its sample count (a flame graph tool reads them)."""
    out = Path(args.profile) / f"profile-{name}-{int(args.rate)}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen([str(spy), "record", "-p", str(pid), "-d", str(int(args.seconds)), "-r", "100", "--gil",
                             "-f", "raw", "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", default="1000,10000", help="file counts, one run of each shipper per count")
    p.add_argument("--rate", type=float, default=1.0, help="lines/s per file")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--settle", type=float, default=10.0, help="seconds between the shipper's start and the writes")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--shippers", default="logagent,fluentbit",
                   help="logagent (run by this venv's python), logagent-system (by --system-python), fluentbit")
    p.add_argument("--system-python", default="/usr/bin/python3",
                   help="the interpreter of the shipper logagent-system (the OS's, as the systemd unit runs it)")
    p.add_argument("--fluent-bit", default=FLUENT_BIT)
    p.add_argument("--max-open", type=int, default=0, help="logagent's [agent] max_open_files (default max(1024, "
                   "2 x files)); e.g. --files 2000 --max-open 512: files closed and reopened as they change")
    p.add_argument("--profile", metavar="DIR", help="record logagent with py-spy into DIR during each window")
    p.add_argument("--loop-cpu", metavar="DIR", help="time each callback of logagent's event loop over each "
                   "window (bench/loopcpu), a table per run into DIR")
    args = p.parse_args()
    print(f"agent's bytecode: {compile_agent()}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="many-files-"))
    results = []
    try:
        with broker(tmp) as bootstrap:
            for _ in range(args.rounds):
                for n in (int(x) for x in args.files.split(",")):
                    for s in args.shippers.split(","):
                        r = run(s, n, args, bootstrap, tmp)
                        print(f"[many-files {time.strftime('%H:%M:%S')}] {r}", file=sys.stderr, flush=True)
                        results.append(r)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"files x {args.rate:g} lines/s each for {args.seconds:g} s; {os.cpu_count()} cores, {os.uname().release}, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("| files | shipper | lines written | delivered once | duplicates | CPU % of a core | CPU us per line "
          "| peak RSS MB | latency p50 / p99 / max ms | errors logged (EMFILE) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['files']:,} | {r['shipper']} | {r['written']:,} | {r['unique']:,} | {r['dups']:,} | "
              f"{r['cpu_pct']:.1f} | {r['us_per_line']:.0f} | {r['rss_mb']:.0f} | "
              f"{r['quiet_p50']:.0f} / {r['quiet_p99']:.0f} / {r['quiet_max']:.0f} | {r['errors']} ({r['emfile']}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
