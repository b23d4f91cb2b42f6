"""The cyclic garbage collector, set for a daemon that holds many long-lived objects.

An agent following 10,000 files holds about a million objects for as long as it runs (a tailer, its
splitter, its registry entry, its metric series per file), and makes a few short-lived ones per
line (a batch, a message, a delivery report). CPython's default thresholds (700, 10, 10) run a young
collection every 700 allocations and an older one every 7,000, and each older one walks objects
that will live for weeks: at 10,000 files x 1 line/s that was about a sixth of a core (issue 23:
69.5 % of a core with (100,000, 50, 10) against 90 % with the defaults, same run otherwise).

Nothing in the per-line path makes reference cycles (a batch's delivery callback is a small object
for that reason, sinks/kafka/sink.py), so collecting less often frees the same memory: the young
generation holds at most THRESHOLDS[0] objects (a few MB), and the full collection, which runs only
when the long-lived objects grew by a quarter since the last one, still catches what does form cycles.
"""

from __future__ import annotations

import gc

THRESHOLDS = (100_000, 50, 10)


def tune() -> None:
    """Set the collector's thresholds for the agent's process (see the module docstring)."""
    gc.set_threshold(*THRESHOLDS)
