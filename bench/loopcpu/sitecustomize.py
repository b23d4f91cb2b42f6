"""Where the agent's event loop spends its CPU, by callback: loaded into the agent by
`bench/many_files_peer.py --loop-cpu DIR` (this folder first on its PYTHONPATH), nowhere else.

Every callback the loop runs (an inotify burst, a batch of Kafka acknowledgements, a task's step,
named by its task) is timed with the thread's CPU clock; the counts and CPU seconds between the
moments the files `<out>.start` and `<out>.stop` appear are written to `<out>` as a table, with the
process's CPU over the same window (the rest is the Kafka poll thread, librdkafka's threads and
the loop's own select). Costs about a microsecond per callback; the loop runs a few hundred a second.
"""

from __future__ import annotations

import os
import sys
import threading
import time

OUT = os.environ.get("LOGAGENT_LOOP_CPU")


def _install(out: str) -> None:
    import asyncio.events

    totals: dict[str, list[float]] = {}
    clock = time.thread_time
    run = asyncio.events.Handle._run

    def timed(self: asyncio.events.Handle) -> None:
        callback = self._callback  # type: ignore[attr-defined]
        name = getattr(callback, "__qualname__", None) or type(callback).__name__
        owner = getattr(callback, "__self__", None)
        if isinstance(owner, asyncio.Task):
            name = "task " + owner.get_name()
        started = clock()
        try:
            run(self)
        finally:
            entry = totals.get(name)
            if entry is None:
                entry = totals[name] = [0, 0.0]
            entry[0] += 1
            entry[1] += clock() - started

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]

    def report() -> None:
        while not os.path.exists(out + ".start"):
            time.sleep(0.1)
        before = {k: list(v) for k, v in totals.items()}
        cpu0, wall0 = time.process_time(), time.monotonic()
        while not os.path.exists(out + ".stop"):
            time.sleep(0.1)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        rows = sorted(((k, v[0] - before.get(k, [0, 0.0])[0], v[1] - before.get(k, [0, 0.0])[1])
                       for k, v in list(totals.items())), key=lambda r: -r[2])
        loop = sum(r[2] for r in rows)
        with open(out, "w") as f:
            f.write(f"window {wall:.1f} s: process {100 * cpu / wall:.1f} % of a core, loop callbacks "
                    f"{100 * loop / wall:.1f} %\n")
            f.write("| callback | calls/s | % of a core | CPU us per call |\n|---|---|---|---|\n")
            for name, n, s in rows[:15]:
                f.write(f"| {name} | {n / wall:.0f} | {100 * s / wall:.2f} | {1e6 * s / max(1, n):.0f} |\n")

    threading.Thread(target=report, name="loop-cpu", daemon=True).start()


if OUT and "run" in sys.argv:  # `python -m logagent run -c ...`, the only process given LOGAGENT_LOOP_CPU
    _install(OUT)
