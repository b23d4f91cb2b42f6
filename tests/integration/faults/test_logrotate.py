"""Debian's logrotate forced every second under load, in `create` and in `copytruncate` mode.

Both with `compress` and `delaycompress`. `create` (rename, then a new file) must lose
nothing: the agent reads the renamed file to its end. `copytruncate` (copy, then
truncate in place) loses by design what is written between logrotate's copy and
its truncate (in no file); what the agent had not read yet when the file was truncated
is read from the copy (app.log.1), so every missing line must be one that is in no
file, and nothing may be garbled or duplicated.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.integration.faults.helpers import RSS_LIMIT_MB, PeakTracker
from tests.kit import LineWriter, new_topic, tally_delivered

RATE = 2000
ROTATIONS = 12

MISSING_LOGROTATE = ("logrotate is not installed: the CI image must install it "
                     "(.ci/run or the Makefile: `apt-get install -y logrotate`)")


def logrotate_binary() -> str:
    found = shutil.which("logrotate") or next((p for p in ("/usr/sbin/logrotate", "/sbin/logrotate")
                                               if os.access(p, os.X_OK)), None)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(MISSING_LOGROTATE, pytrace=False)
    pytest.skip(MISSING_LOGROTATE)


# logrotate's `create` found the file re-created by the writer between its rename and its create,
# and kept that file as <name>-YYYYMMDDHH.backup (3.21 createOutputFile; exit status 0). The race is
# the application's, not a failure: the .backup file is one more generation the agent delivers.
CREATE_RACE = re.compile(r"^error: destination (.+) already exists, renaming to \1-\d{10}\.backup$")


class Rotator:
    """Runs `logrotate -f` every `interval` seconds from a thread (what cron would run, only faster).
    `errors`: runs that failed; `races`: runs whose create lost the race to the writer (CREATE_RACE)."""

    def __init__(self, binary: str, conf: Path, state: Path, interval: float = 1.0) -> None:
        self.cmd = [binary, "-f", "-s", str(state), str(conf)]
        self.interval = interval
        self.runs = 0
        self.errors: list[str] = []
        self.races: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="logrotate", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            proc = subprocess.run(self.cmd, capture_output=True, text=True, check=False)
            self.runs += 1
            said = proc.stderr.strip().splitlines()
            races = [line for line in said if CREATE_RACE.match(line)]
            self.races += races
            if proc.returncode != 0 or len(races) < len(said):
                self.errors.append(proc.stderr.strip()[-500:])
            self._stop.wait(self.interval)

    def start(self) -> Rotator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def rotated_lines(log: Path) -> set[str]:
    """Every line in the rotated copies (app.log.N and app.log.N.gz) and the live file."""
    out: set[str] = set()
    for p in log.parent.glob(log.name + "*"):
        raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        out.update(raw.decode(errors="replace").splitlines())
    return out


@pytest.mark.parametrize("mode", ["create", "copytruncate"])
def test_logrotate_every_second_under_load(mode, make_agent, kafka, logdir, tmp_path, results):
    binary = logrotate_binary()
    topic = new_topic(f"lr-{mode}")
    log = logdir / "app.log"
    log.touch()
    conf = tmp_path / "logrotate.conf"
    conf.write_text(f"""{log} {{
    {mode}
    rotate {ROTATIONS * 3}
    compress
    delaycompress
    missingok
}}
""")
    agent = make_agent(files=[{"path": str(log), "topic": topic}])
    peak = PeakTracker()
    writer = LineWriter(log, f"lr-{mode}", rate=RATE).start()
    rotator = Rotator(binary, conf, tmp_path / "logrotate.state")
    try:
        time.sleep(1.0)
        rotator.start()
        deadline = time.monotonic() + ROTATIONS * 3
        while rotator.runs < ROTATIONS and time.monotonic() < deadline:
            time.sleep(0.2)
            peak.sample(agent)
        rotator.stop()
        time.sleep(1.0)
    finally:
        rotator.stop()
        writer.stop()
    assert not rotator.errors, f"logrotate failed: {rotator.errors[:3]}"
    t = tally_delivered(kafka, topic, writer, timeout=60)
    peak.sample(agent)
    truncations = agent.metric("logagent_rotations_total", kind="truncate")
    renames = agent.metric("logagent_rotations_total", kind="rename_or_delete")
    notes = f"{rotator.runs} rotations; agent counted {renames:.0f} renames, {truncations:.0f} truncations"
    if rotator.races:
        notes += f"; {len(rotator.races)} create(s) raced by the writer (app.log-<date>.backup)"
    if mode == "create":
        results.add_tally(f"logrotate create + compress + delaycompress, forced every 1 s, {RATE} lines/s", t,
                          peak.peak, notes=notes)
        assert not t.missing, t.describe()
        assert t.duplicated == 0, t.describe()
        assert not t.unexpected, t.describe()
    else:
        on_disk = rotated_lines(log)
        lost_in_window = [line for line in t.missing if line not in on_disk]  # in no file at all
        only_in_copy = [line for line in t.missing if line in on_disk]
        notes += (f"; missing: {len(lost_in_window)} written between logrotate's copy and truncate (in no file), "
                  f"{len(only_in_copy)} in a rotated copy only; "
                  f"{len(t.gaps)} gaps, largest {max((g[1] for g in t.gaps), default=0)}")
        if t.unexpected:
            notes += f"; {len(t.unexpected)} garbled lines"
        results.add_tally(f"logrotate copytruncate + compress + delaycompress, forced every 1 s, {RATE} lines/s",
                          t, peak.peak, notes=notes)
        assert not t.unexpected, "lines that nobody wrote (read from a stale offset after a truncate): " + \
            t.describe()
        assert t.duplicated == 0, t.describe()
        assert not only_in_copy, f"{len(only_in_copy)} lines were in the copy and not read from it: {notes}"
        # Losses come only from truncations: at most one gap per rotation.
        assert len(t.gaps) <= rotator.runs, t.describe()
        assert truncations >= rotator.runs - 1, notes
    assert peak.peak < RSS_LIMIT_MB
    assert agent.stop() == 0
