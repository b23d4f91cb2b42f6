"""What was written against what Kafka holds: numbered lines from a writer thread, a line-by-line
tally, and the delivery check built on it (every line, in order, at most so many duplicates)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from devstack.kafkaread import KafkaReader, read_all


class LineWriter:
    """Appends numbered lines to a file from a thread, reopening the name for every burst
    (as an application that reopens its log after rotation would)."""

    def __init__(self, path: Path, name: str, rate: float = 2000.0, burst: int = 20) -> None:
        self.path = path
        self.name = name
        self.rate = rate
        self.burst = burst
        self.count = 0
        self._stop = threading.Event()
        self._pause = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"writer-{name}", daemon=True)

    def line(self, i: int) -> str:
        return f"{self.name} {i:08d}"

    def _run(self) -> None:
        interval = self.burst / self.rate
        while not self._stop.is_set():
            if not self._pause.is_set():
                with open(self.path, "a") as f:
                    f.write("".join(self.line(self.count + k) + "\n" for k in range(self.burst)))
                self.count += self.burst
            time.sleep(interval)

    def start(self) -> LineWriter:
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop writing; the lines written so far. Safe when never started (a test's `finally` stops
        every writer, and a failure before one started must show as itself)."""
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join()
        return self.count

    def pause(self) -> int:
        """Stop writing (the thread stays) once a burst in progress ended; how many lines were written."""
        self._pause.set()
        time.sleep(2 * self.burst / self.rate + 0.05)
        return self.count

    def resume(self) -> None:
        self._pause.clear()

    def expected(self) -> list[str]:
        return [self.line(i) for i in range(self.count)]


@dataclass
class Tally:
    """Line-by-line comparison of what was written with what Kafka holds."""

    written: int
    delivered: int  # messages that carry an expected line, duplicates included
    missing: list[str] = field(default_factory=list)
    duplicated: int = 0  # extra copies of expected lines
    unexpected: list[str] = field(default_factory=list)  # lines nobody wrote (garbled, cut), every copy
    dup_runs: list[int] = field(default_factory=list)  # lengths of runs of consecutive duplicated lines
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (first index, length) of missing runs

    def describe(self) -> str:
        s = (f"written {self.written}, delivered {self.delivered}, missing {len(self.missing)}, "
             f"duplicated {self.duplicated}")
        if self.missing:
            s += f", missing runs {self.gaps[:8]} first {self.missing[:3]}"
        if self.dup_runs:
            s += f", duplicate runs {self.dup_runs[:12]}"
        if self.unexpected:
            s += f", {len(self.unexpected)} unexpected lines e.g. {[u[:60] for u in self.unexpected[:3]]}"
        return s


def tally(expected: list[str], got: list[str]) -> Tally:
    counts = Counter(got)
    wanted = set(expected)
    t = Tally(written=len(expected), delivered=sum(c for line, c in counts.items() if line in wanted))
    run = 0
    gap_start = -1
    for i, line in enumerate(expected):
        c = counts.get(line, 0)
        if c == 0:
            t.missing.append(line)
            if gap_start < 0:
                gap_start = i
        elif gap_start >= 0:
            t.gaps.append((gap_start, i - gap_start))
            gap_start = -1
        if c > 1:
            t.duplicated += c - 1
            run += 1
        elif run:
            t.dup_runs.append(run)
            run = 0
    if run:
        t.dup_runs.append(run)
    if gap_start >= 0:
        t.gaps.append((gap_start, len(expected) - gap_start))
    t.unexpected = [line for line in got if line not in wanted]
    return t


def tally_delivered(bootstrap: str, topic: str, writer: LineWriter, timeout: float = 90.0,
                    isolation: str = "read_committed") -> Tally:
    """Read `topic` until the writer's last line arrived (or every line did; a missing one does not
    fail here), then tally what the writer wrote against it."""
    with KafkaReader(bootstrap, topic, isolation=isolation) as reader:
        read_all(reader, writer.count, timeout=timeout, last=writer.line(writer.count - 1))
        return tally(writer.expected(), reader.data())


def check_delivery(expected: list[str], got: list[str], max_dups: int | None = 0) -> None:
    """Every expected line arrived, in order of first arrival; at most max_dups duplicates (extra
    copies of any line, written or not)."""
    t = tally(expected, got)
    assert not t.missing, f"{len(t.missing)} of {len(expected)} lines missing, first: {t.missing[:5]}"
    dups = t.duplicated + len(t.unexpected) - len(set(t.unexpected))
    if max_dups is not None:
        assert dups <= max_dups, f"{dups} duplicated lines (allowed {max_dups})"
    wanted = set(expected)
    assert [line for line in dict.fromkeys(got) if line in wanted] == expected, "lines arrived out of order"
