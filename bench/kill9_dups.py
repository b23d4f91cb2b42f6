"""Lines sent again per kill -9 (issue 13): a writer at RATE lines/s, the agent killed KILLS times at
random moments (GAP_MIN..GAP_MIN+GAP_SPAN s apart) and restarted, everything read back and counted.
The agent's defaults (registry_flush_interval 1 s, linger 20 ms). Runs the tree given:

    LOGAGENT_TEST_KAFKA=127.0.0.1:9092 GAP_MIN=0.2 GAP_SPAN=1.8 .venv/bin/python bench/kill9_dups.py . 3000 6
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

from tree import load_kit, scratch_logs


def main() -> int:
    root = Path(sys.argv[1]).resolve()
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 1000.0
    kills = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    kit = load_kit(root)
    kafka = os.environ["LOGAGENT_TEST_KAFKA"]
    tmp, logs = scratch_logs()
    log = logs / "app.log"
    log.touch()
    topic = kit.new_topic("dup")
    cfg = kit.write_config(tmp / "a.ini", kafka, tmp / "data", f"{logs}/**", files=[{"path": str(log), "topic": topic}],
                       extra={"kafka.producer": {"linger.ms": "20"},
                              "agent": {"registry_flush_interval": "1", "stat_interval": "1", "scan_interval": "2"}})
    agent = kit.AgentProcess(cfg, tmp / "agent.log").start()
    writer = kit.LineWriter(log, "dup", rate=rate).start()
    rng = random.Random(5)
    gap_min, gap_span = float(os.environ.get("GAP_MIN", "4")), float(os.environ.get("GAP_SPAN", "2"))
    for _ in range(kills):
        time.sleep(gap_min + rng.random() * gap_span)
        agent.kill()
        agent = kit.AgentProcess(cfg, tmp / "agent.log").start()
    time.sleep(3)
    writer.stop()
    with kit.KafkaReader(kafka, topic) as reader:
        kit.read_all(reader, writer.count, timeout=60, last=writer.line(writer.count - 1))
        got = [json.loads(m.value())["data"] for m in reader.messages]
    t = kit.tally(writer.expected(), got)
    print(f"{root} rate {rate:.0f} kills {kills}: {t.describe()}; "
          f"{t.duplicated / rate / kills:.2f} s of traffic sent again per kill")
    agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
