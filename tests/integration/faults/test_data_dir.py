"""data_dir full (a tiny tmpfs filled up) or read-only (the agent runs as nobody): the agent says so,
keeps shipping, and loses nothing on a clean stop."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.faults.helpers import RSS_LIMIT_MB, PeakTracker, nobody_runtime, unmount_after
from tests.kit import (
    KafkaReader,
    LineWriter,
    new_topic,
    read_all,
    tally,
    tally_delivered,
    wait_delivered,
    wait_until,
    write_config,
)

RATE = 1000


def _mount_tmpfs(path: Path, size: str) -> str:
    """'' when a tmpfs of `size` is mounted on path, else why not."""
    if os.geteuid() != 0:
        return "not root"
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)
    return "" if proc.returncode == 0 else (proc.stderr.strip() or f"mount exited {proc.returncode}")


@pytest.fixture
def small_fs(tmp_path: Path, agents: list) -> Iterator[Path]:  # type: ignore[type-arg]
    """A 1 MiB tmpfs, unmounted at the end (after the test's agents are gone)."""
    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    why = _mount_tmpfs(mnt, "1m")
    if why:
        pytest.fail(f"cannot mount a tmpfs for the full-disk test ({why}); this test needs root and "
                    "CAP_SYS_ADMIN (mount -t tmpfs)", pytrace=False)
    try:
        yield mnt
    finally:
        unmount_after(mnt, agents)


def fill(fs: Path) -> Path:
    """Fill the file system up: the next write of any file gets ENOSPC."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def registry_offset(data_dir: Path) -> int:
    try:
        saved = json.loads((data_dir / "registry.json").read_text())
    except (OSError, ValueError):
        return -1
    return max((f["offset"] for f in saved.get("files", {}).values()), default=-1)


def test_data_dir_fills_up_under_load(make_agent, kafka, logdir, small_fs, results):
    topic = new_topic("full")
    log = logdir / "app.log"
    log.touch()
    data = small_fs / "data"
    agent = make_agent(files=[{"path": str(log), "topic": topic}], data_dir=data)
    peak = PeakTracker()
    writer = LineWriter(log, "full", rate=RATE).start()
    notes = []
    try:
        with KafkaReader(kafka, topic) as reader:
            reader.read(500, timeout=30)
            wait_until(lambda: registry_offset(data) > 0, timeout=10, what="a first registry write")
            filler = fill(small_fs)
            filled_at = writer.count
            # The agent says so (a log line and a metric) and keeps shipping.
            wait_until(lambda: agent.metric("logagent_registry_errors_total") > 0, timeout=15,
                       what="logagent_registry_errors_total to count the full disk")
            assert "No space left on device" in agent.log_text(), agent.log_tail(20)
            time.sleep(2.0)
            wait_delivered(reader, writer.line(writer.count - 1), timeout=15, what="lines shipped with data_dir full")
            errors_logged = agent.log_text().count("No space left on device")
            notes.append(f"full: {errors_logged} log line(s) 'No space left on device', "
                         f"registry_errors {agent.metric('logagent_registry_errors_total'):.0f}")
            # A clean stop with the disk still full: every line written before it is in Kafka.
            peak.sample(agent)
            stopped_at = writer.pause()
            time.sleep(1.0)  # the agent reads what was written
            assert agent.stop() == 0, agent.log_tail(20)
            read_all(reader, stopped_at, timeout=60, last=writer.line(stopped_at - 1))
            t_stop = tally(writer.expected()[:stopped_at], reader.data())
            assert not t_stop.missing, "lost at the clean stop with data_dir full: " + t_stop.describe()
            writer.resume()
            # Restart, still full: the saved offset is old, so lines are read again (duplicates), none lost.
            agent.start()
            time.sleep(2.0)
            # Space comes back: the agent says so and saves its offsets again.
            filler.unlink()
            wait_until(lambda: "writable again" in agent.log_text(), timeout=15, what="'writable again' logged")
            wait_until(lambda: registry_offset(data) > 0, timeout=10, what="a registry write after the disk freed")
            time.sleep(1.0)
            # From here on clean stops give no duplicates.
            peak.restart(agent)
            time.sleep(2.0)
    finally:
        writer.stop()
    t = tally_delivered(kafka, topic, writer, timeout=60)
    peak.sample(agent)
    lines_while_full = stopped_at - filled_at
    results.add_tally(f"data_dir full (1 MiB tmpfs filled) under load, {RATE} lines/s; clean stop, restart full, "
                      "space freed, clean stop, restart", t, peak.peak,
                      notes="; ".join(notes) + f"; {lines_while_full} lines shipped while full (the registry could "
                      "not record them: re-sent after the restart)")
    assert not t.missing, t.describe()
    assert not t.unexpected, t.describe()
    # Only what was shipped while the registry could not be written is sent twice.
    assert t.duplicated <= lines_while_full + 2 * RATE, t.describe()
    assert peak.peak < RSS_LIMIT_MB
    assert agent.stop() == 0


def test_data_dir_read_only_agent_as_nobody(kafka, world_tmp, start_as_nobody, results):
    nobody_runtime()  # skips with the reason when this machine cannot run a process as nobody
    logs = world_tmp / "logs"
    logs.mkdir(mode=0o755)
    data = world_tmp / "data"  # owned by root, 0755: nobody cannot write there
    data.mkdir(mode=0o755)
    log = logs / "app.log"
    log.touch()
    os.chmod(log, 0o644)
    topic = new_topic("ro")
    cfg = write_config(world_tmp / "agent.ini", kafka, data, f"{logs}/**", files=[{"path": str(log), "topic": topic}])
    agent = start_as_nobody(cfg)
    peak = PeakTracker()
    writer = LineWriter(log, "ro", rate=RATE).start()
    try:
        with KafkaReader(kafka, topic) as reader:
            reader.read(500, timeout=30)
            wait_until(lambda: agent.metric("logagent_registry_errors_total") > 0, timeout=15,
                       what="logagent_registry_errors_total to count the read-only data_dir")
            assert "Permission denied" in agent.log_text() and str(data) in agent.log_text(), agent.log_tail(20)
            time.sleep(2.0)
            wait_delivered(reader, writer.line(writer.count - 1), timeout=15,
                           what="lines shipped with data_dir read-only")
            peak.sample(agent)
            writer.pause()
            time.sleep(1.0)  # the agent reads what was written
            assert agent.stop() == 0, agent.log_tail(20)
    finally:
        writer.stop()
    t = tally_delivered(kafka, topic, writer, timeout=60)
    errors_logged = sum(1 for line in agent.log_text().splitlines() if "cannot write registry" in line)
    results.add_tally(f"data_dir read-only (agent as nobody) under load, {RATE} lines/s; clean stop", t, peak.peak,
                      notes=f"{errors_logged} 'cannot write registry ... Permission denied' log line(s), "
                            f"registry_errors counted")
    assert not t.missing, t.describe()
    assert t.duplicated == 0, t.describe()
    assert peak.peak < RSS_LIMIT_MB
