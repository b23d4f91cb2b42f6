"""What one line costs the agent on the path a write to one of many files takes, counted, not timed.

This machine's neighbours move a timed run by a fifth either way: a change worth 5 % is lost in the
noise of the many-files bench unless it is run for an hour. This counts instead, on the agent's own
classes (no inotify, no Kafka): FILES files, each with a reader (`FileTailer`) parked on it; each
round appends one line to every file, tells each reader of its write (`notify`, as the inotify
callback does: the read, split, message and batch in the callback), takes the batches off the queue
and acknowledges them (`batch_done`, as Kafka's report does: the offsets and the registry). Counted
over the rounds after WARMUP (the first lines grow each file's fingerprint; `--growing` counts those):

- `--opcodes`: Python bytecode instructions per line, per function (sys.settrace);
- `--instructions`: CPU instructions per line (valgrind's cachegrind, run twice with ROUNDS and
  2 x ROUNDS rounds: the difference is the rounds' own, start-up and set-up cancel out).

Both are the same on every run of the same code: compare two checkouts with them
(`cd <tree> && python bench/line_cost.py ...`, each tree's `logagent/` first on the path).

    .venv/bin/python bench/line_cost.py --opcodes [--files 1000] [--rounds 4] [--growing]
    .venv/bin/python bench/line_cost.py --instructions [--files 500] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from logagent.pipeline.buffer import BatchQueue
from logagent.runtime import collector
from logagent.sources.files.budget import FdBudget
from logagent.sources.files.registry import Registry
from logagent.sources.files.shipper import Claims, Route, TailContext, TailOptions
from logagent.sources.files.tailer import FileTailer

# The many-files bench's line: a timestamp, a sequence number, the file's name, 60 bytes of padding.
LINE = b"1796693377216000000 0000000001 f00001.log " + b"x" * 60 + b"\n"
WARMUP = 12  # lines per file before the count: past the fingerprint's 1 KiB


class Counter:
    """Python opcodes per function while `on` (sys.settrace with f_trace_opcodes)."""

    def __init__(self) -> None:
        self.on = False
        self.opcodes: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()

    def trace(self, frame: FrameType, event: str, arg: Any) -> Callable[..., Any] | None:
        if not self.on:
            return None
        frame.f_trace_opcodes = True
        code = frame.f_code
        key = f"{code.co_qualname} ({Path(code.co_filename).name}:{code.co_firstlineno})"
        self.calls[key] += 1
        opcodes = self.opcodes

        def local(frame: FrameType, event: str, arg: Any) -> Callable[..., Any]:
            if event == "opcode":
                opcodes[key] += 1
            return local

        return local


async def rounds(files: int, warmup: int, counted: int, counter: Counter | None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="line-cost-"))
    try:
        opts = TailOptions(ip="127.0.0.1", host="h", stat_interval=1.0, rotate_wait=2.0, close_inactive=3600)
        queue = BatchQueue(1 << 30)
        ctx = TailContext(opts=opts, queue=queue, registry=Registry(tmp / "data"), budget=FdBudget(2 * files + 16),
                          allowed_paths=(f"{tmp}/**",), claims=Claims(), spool=None)
        tailers, fds = [], []
        for i in range(files):
            path = tmp / f"f{i:05d}.log"
            path.write_bytes(b"")
            t = FileTailer(str(path), Route("t"), ctx, False, lambda _t: None, None)
            t.open()
            tailers.append(t)
            fds.append(os.open(path, os.O_WRONLY | os.O_APPEND))
        tasks = [asyncio.create_task(t.run()) for t in tailers]
        while not all(t._parked for t in tailers):  # every read loop asleep: writes are read in notify
            await asyncio.sleep(0.05)
        for n in range(warmup + counted):
            if counter is not None:
                counter.on = n >= warmup
            for fd in fds:
                os.write(fd, LINE)
            for t in tailers:
                t.notify(False)
            while (batch := queue.get_nowait()) is not None:
                batch.remaining = 0
                assert batch.owner is not None
                batch.owner.batch_done(batch)
        if counter is not None:
            counter.on = False
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for t in tailers:
            t.close()
        for fd in fds:
            os.close(fd)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def opcodes(args: argparse.Namespace) -> None:
    counter = Counter()
    sys.settrace(counter.trace)
    try:
        asyncio.run(rounds(args.files, 1 if args.growing else WARMUP, args.rounds, counter))
    finally:
        sys.settrace(None)
    lines = args.files * args.rounds
    total = sum(counter.opcodes.values())
    print(f"{total / lines:.0f} Python opcodes per line ({args.files} files x {args.rounds} lines, "
          f"{'growing' if args.growing else 'past 1 KiB'}); per function, with calls per line:")
    for key, n in counter.opcodes.most_common(args.top):
        print(f"{n / lines:7.1f} {counter.calls[key] / lines:5.2f}  {key}")


def instructions(args: argparse.Namespace) -> None:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        sys.exit("--instructions needs valgrind (apt-get install valgrind)")
    counts = []
    for n in (args.rounds, 2 * args.rounds):
        cmd = [valgrind, "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null", sys.executable,
               __file__, "--files", str(args.files), "--rounds", str(n), "--run"]
        cmd += ["--growing"] if args.growing else []
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
        m = re.search(r"I\s+refs:\s+([\d,]+)", out)
        if m is None:
            sys.exit(f"no instruction count in valgrind's output:\n{out[-2000:]}")
        counts.append(int(m.group(1).replace(",", "")))
    per_line = (counts[1] - counts[0]) / (args.files * args.rounds)
    print(f"{per_line:.0f} CPU instructions per line ({args.files} files, {args.rounds} and {2 * args.rounds} "
          f"lines each under cachegrind; {'growing' if args.growing else 'past 1 KiB'})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=4, help="lines per file counted")
    p.add_argument("--growing", action="store_true", help="count the first lines (the fingerprint grows)")
    p.add_argument("--opcodes", action="store_true")
    p.add_argument("--instructions", action="store_true")
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--run", action="store_true", help=argparse.SUPPRESS)  # one run, nothing counted (valgrind's)
    args = p.parse_args()
    collector.tune()  # the agent's collector thresholds
    if args.run:
        asyncio.run(rounds(args.files, 1 if args.growing else WARMUP, args.rounds, None))
    elif args.instructions:
        instructions(args)
    else:
        opcodes(args)


if __name__ == "__main__":
    main()
