"""Issue 20 item 6: a glob folder where files with new names appear, get a few lines and are deleted
(per-job logs, a pod's log under Kubernetes). Every file's lines reach Kafka, and the registry does
not keep an entry per file ever seen: a finished file that nothing on disk can be taken for is
forgotten, so the registry stays bounded however many files come and go."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from pathlib import Path

from tests.kit import KafkaReader, check_delivery, new_topic, read_all, wait_until

LINES_PER_FILE = 3


class Churner:
    """Creates `job-NNNNNN.log` files at `rate` per second, each with a few lines, and deletes each
    one a second later, but never before the agent holds it open (a file deleted before any reader
    opened it is lost for every tailer: that is not what this test is about)."""

    def __init__(self, folder: Path, pid: int, files: int, rate: float) -> None:
        self.folder, self.pid, self.files, self.rate = folder, pid, files, rate
        self.created = 0
        self.deleted = 0
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="churner", daemon=True)

    def path(self, i: int) -> Path:
        return self.folder / f"job-{i:06d}.log"

    def lines(self, i: int) -> list[str]:
        return [f"job {i:06d} line {k}" for k in range(LINES_PER_FILE)]

    def _held(self) -> set[str]:
        """Names of the files the agent has open now (from /proc/<pid>/fd)."""
        out = set()
        fd_dir = f"/proc/{self.pid}/fd"
        for fd in os.listdir(fd_dir):
            try:
                out.add(os.readlink(f"{fd_dir}/{fd}"))
            except OSError:
                continue
        return out

    def _run(self) -> None:
        try:
            live: deque[tuple[int, float]] = deque()  # (file number, created at)
            stuck_since = time.monotonic()
            while self.created < self.files or live:
                now = time.monotonic()
                if self.created < self.files and now >= self.created / self.rate + self._t0:
                    i = self.created
                    with open(self.path(i), "w") as f:
                        f.write("".join(line + "\n" for line in self.lines(i)))
                    live.append((i, now))
                    self.created += 1
                if live and now - live[0][1] >= 1.0:
                    if str(self.path(live[0][0])) in self._held():
                        self.path(live[0][0]).unlink()
                        live.popleft()
                        self.deleted += 1
                        stuck_since = now
                    elif now - stuck_since > 60:
                        raise AssertionError(f"the agent did not open {self.path(live[0][0])} within 60 s")
                time.sleep(0.005)
        except (OSError, AssertionError) as exc:  # reported by join()
            self.error = exc

    def start(self) -> Churner:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self) -> None:
        self._thread.join()
        if self.error is not None:
            raise self.error


def _saved(data_dir: Path) -> tuple[int, int]:
    """(entries, finished entries) in registry.json as last written (it is replaced atomically)."""
    try:
        files = json.loads((data_dir / "registry.json").read_bytes())["files"]
    except FileNotFoundError:
        return 0, 0
    return len(files), sum(1 for item in files.values() if item.get("done"))


def _leftovers(data_dir: Path) -> str:
    """The entries registry.json still holds, for a failure's message."""
    try:
        files = json.loads((data_dir / "registry.json").read_bytes())["files"]
    except FileNotFoundError:
        return "none"
    return "; ".join(f"{key} {os.path.basename(item['path'])} offset {item['offset']} "
                     f"{'done' if item.get('done') else 'live'} fp_len {item['fp_len']}"
                     for key, item in list(files.items())[:10])


def test_a_churning_glob_delivers_every_file_and_keeps_the_registry_bounded(make_agent, kafka, logdir, tmp_path):
    topic = new_topic("churn")
    folder = logdir / "jobs"
    folder.mkdir()
    data_dir = tmp_path / "data"
    files, rate = 600, 20.0
    agent = make_agent(files=[{"path": str(folder / "*.log"), "topic": topic}], data_dir=data_dir)
    assert agent.proc is not None
    churner = Churner(folder, agent.proc.pid, files, rate).start()
    peak_finished = peak_gauge = 0.0
    while churner.alive():
        peak_finished = max(peak_finished, _saved(data_dir)[1])
        peak_gauge = max(peak_gauge, agent.metric("logagent_registry_entries"))
        time.sleep(0.5)
    churner.join()
    assert churner.deleted == files

    with KafkaReader(kafka, topic) as reader:
        read_all(reader, files * LINES_PER_FILE, timeout=90)
        by_path: dict[str, list[str]] = {}
        for value in reader.values():
            by_path.setdefault(value["path"], []).append(value["data"])
    missing = [i for i in range(files) if by_path.get(str(churner.path(i))) != churner.lines(i)]
    for i in missing[:3]:
        check_delivery(churner.lines(i), by_path.get(str(churner.path(i)), []))
    assert not missing, f"{len(missing)} of {files} files not delivered exactly once, e.g. {missing[:5]}"

    print(f"registry: up to {peak_finished:.0f} finished entries in registry.json, up to {peak_gauge:.0f} entries "
          f"in the gauge; {_saved(data_dir)[0]} entries after the churn, for {files} files")
    # Every file is gone: once a sweep ran, the registry holds none of them.
    try:
        wait_until(lambda: _saved(data_dir)[0] == 0 and agent.metric("logagent_registry_entries") == 0,
                   timeout=30, what="an empty registry")
    except AssertionError as exc:  # what is left then, not at the start of the wait
        raise AssertionError(f"{exc}: registry.json holds {_saved(data_dir)[0]} entries of {files} files "
                             f"({_leftovers(data_dir)}), the gauge says "
                             f"{agent.metric('logagent_registry_entries'):.0f}") from None
    # (Others left when a new file reused their inode.)
    assert agent.metric("logagent_registry_pruned_total", reason="gone") > 0
    # Bounded while it ran: the files finished since the last sweep (a few seconds of them), not all.
    assert peak_finished <= files / 3, f"registry.json held up to {peak_finished} finished entries for {files} files"
    assert peak_gauge > 0
    assert agent.stop() == 0


def test_registry_max_entries_keeps_live_files_warns_once_and_reloads_live(make_agent, kafka, logdir):
    """The cap never drops a file with unacknowledged bytes: 150 live files over a cap of 100 are all
    shipped and kept, with one WARNING; a SIGHUP applies a new cap without a restart."""
    import signal

    topic = new_topic("cap")
    folder = logdir / "many"
    folder.mkdir()
    for i in range(150):
        (folder / f"f{i:03d}.log").write_text(f"file {i}\n")
    agent = make_agent(files=[{"path": str(folder / "*.log"), "topic": topic, "start": "beginning"}],
                       extra={"agent": {"registry_max_entries": "100"}})
    with KafkaReader(kafka, topic) as reader:
        reader.read(150, timeout=60)
        reader.settle(quiet=1.0)
        assert sorted(reader.data()) == sorted(f"file {i}" for i in range(150))
    wait_until(lambda: agent.metric("logagent_registry_entries") == 150, timeout=10, what="150 entries")
    assert agent.log_text().count("more than [agent] registry_max_entries = 100") == 1
    agent.config.write_text(agent.config.read_text().replace("registry_max_entries = 100",
                                                             "registry_max_entries = 1000"))
    agent.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in agent.log_text(), timeout=10, what="reload")
    reloaded = next(line for line in agent.log_text().splitlines() if "configuration reloaded" in line)
    assert "[agent] registry_max_entries" in reloaded and "next restart" not in agent.log_text()
    assert agent.metric("logagent_registry_pruned_total", reason="cap") == 0
    assert agent.stop() == 0
