"""Idle cost of many collect entries (issue 14 item 16): N single-file entries (or one glob over the
same N files), each file with one line already shipped; after a settle time, the agent's CPU over
30 s and its memory. Runs the agent of the tree given (so that two trees can be compared side by side
on the same broker):

    LOGAGENT_TEST_KAFKA=127.0.0.1:9092 .venv/bin/python bench/entries_idle.py . 10000 [glob]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from tree import load_kit, scratch_logs


def main() -> int:
    root = Path(sys.argv[1]).resolve()
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    glob_mode = len(sys.argv) > 3 and sys.argv[3] == "glob"
    kit = load_kit(root)
    kafka = os.environ["LOGAGENT_TEST_KAFKA"]
    tmp, logs = scratch_logs()
    files = []
    for i in range(n):
        p = logs / f"f{i:05d}.log"
        p.write_text("x\n")
        files.append({"path": str(p), "topic": "idle-entries"})
    if glob_mode:
        files = [{"path": f"{logs}/*.log", "topic": "idle-entries"}]
    cfg = kit.write_config(tmp / "a.ini", kafka, tmp / "data", f"{logs}/**", files=files,
                       extra={"agent": {"stat_interval": "1", "scan_interval": "2", "max_open_files": str(n + 100),
                                        "registry_flush_interval": "1"}})
    agent = kit.AgentProcess(cfg, tmp / "agent.log")
    agent.start(timeout=300)
    assert agent.proc is not None
    pid = agent.proc.pid

    def cpu() -> float:
        fields = open(f"/proc/{pid}/stat").read().split(")")[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    time.sleep(15)  # settle
    c0, t0 = cpu(), time.monotonic()
    time.sleep(30)
    c1, t1 = cpu(), time.monotonic()
    mem = {line.split(":")[0]: line.split()[1] for line in open(f"/proc/{pid}/status")
           if line.startswith(("VmRSS", "VmHWM"))}
    print(f"{root} {n} {'files, one glob' if glob_mode else 'single-file entries'}: idle CPU "
          f"{100 * (c1 - c0) / (t1 - t0):.1f} % of a core; VmRSS {int(mem['VmRSS']) // 1024} MB, "
          f"VmHWM {int(mem['VmHWM']) // 1024} MB")
    agent.stop(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
