"""Rotation churn: many files rotated the way logrotate does it (numbered, compressed through .gz.tmp)
and many pods' logs rotated by the kubelet, written without waiting for the agent; alone, with kill -9
at random moments, with those inside a broker outage, and with the collect list changed through etcd
(also inside an outage). Every line must come out whole, under its own path; without kills once and
in order. The moments are random (a seed per run, in every failure message: LOGAGENT_TEST_SEED=<n>
replays one): each of these races was found this way, none by a fixed schedule (a new file given the
inode number of another name's empty file; a file rotated on between an open and a listing; a file
never seen ordered before an older one at a restart; a listing pass a rename ran through; an earlier
file left unread by an entry that etcd replaced; a file never seen, written just before the next
file was first seen, passed by at a restart; a spool copy deleted before the registry write that
said it was no longer needed; a transaction aborted for a full producer queue, whose rewinds cut
the lines carried across rotations; a new file that took over a finished entry seen only empty)."""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.faults.test_etcd_faults import collect_key, put, unique_ip
from tests.integration.faults.test_exactly_once_faults import eos
from tests.integration.test_kubernetes import _k8s_agent, _pod_lines, _rotate_between_records
from tests.kit import KafkaReader, PodTree, new_topic, tally_pods

FAST = {"shutdown_timeout": "3", "registry_flush_interval": "0.5"}


class Seeded(random.Random):
    """The run's random moments, from a seed said in every failure."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.seed_value = seed

    def replay(self) -> str:
        return f"(replay: LOGAGENT_TEST_SEED={self.seed_value})"


@pytest.fixture
def rnd() -> Seeded:
    return Seeded(int(os.environ.get("LOGAGENT_TEST_SEED") or time.time_ns() % 2**32))


def _read_until(reader: KafkaReader, done: Callable[[list[Any]], bool], timeout: float = 90) -> list[Any]:
    """Messages until `done` says all came (or the timeout: the caller says what is missing), then
    until nothing more comes for 2 s (lines sent twice after a kill come too)."""
    deadline = time.monotonic() + timeout
    while not done(reader.values()) and time.monotonic() < deadline:
        for _ in range(4):
            reader.poll(0.5)
    reader.settle(quiet=2)
    return reader.values()


def logrotate_once(log: Path, rnd: Seeded) -> None:
    """logrotate's `rotate` with `compress` and `delaycompress`, most of the time: app.log.k -> .k+1,
    app.log -> .1, a new app.log; .2 compressed through .2.gz.tmp (keeping its times, as gzip does)
    and then unlinked. One time in five .2 stays plain."""
    n = 1
    while any((log.parent / f"{log.name}.{n}{ext}").exists() for ext in ("", ".gz")):
        n += 1
    for k in range(n - 1, 0, -1):
        for ext in ("", ".gz"):
            if (log.parent / f"{log.name}.{k}{ext}").exists():
                os.rename(log.parent / f"{log.name}.{k}{ext}", log.parent / f"{log.name}.{k + 1}{ext}")
    os.rename(log, log.parent / f"{log.name}.1")
    log.touch()
    two = log.parent / f"{log.name}.2"
    if two.exists() and rnd.random() < 0.8:
        tmp = log.parent / f"{log.name}.2.gz.tmp"
        with open(two, "rb") as src, gzip.open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        st = two.stat()
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.rename(tmp, log.parent / f"{log.name}.2.gz")
        two.unlink()


def _kill_now(agent, rnd: Seeded, broker_up: bool = True) -> bool:  # type: ignore[no-untyped-def]
    """kill -9 now, then start again after up to 0.3 s, waiting for it to be ready or not (never while
    the broker is down: not ready then)."""
    agent.kill()
    time.sleep(rnd.random() * 0.3)
    agent.start(wait_ready=broker_up and rnd.random() < 0.5)
    return True


class Outage:
    """The broker stopped from step `down` (random in `first`) to step `up` (random in `last`)
    of a test's loop, for the "outage" variants; `at(step)` is called at each step."""

    def __init__(self, kafka_server, rnd: Seeded, first: tuple[int, int], last: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
        if kafka_server is None:
            pytest.fail("this variant stops the broker: run it against the suite's own (unset LOGAGENT_TEST_KAFKA)")
        self.server = kafka_server
        self.down, self.up = rnd.randrange(*first), rnd.randrange(*last)

    def at(self, step: int) -> None:
        if step == self.down:
            self.server.stop()
        elif step == self.up:
            self.server.start()

    @property
    def broker_up(self) -> bool:
        return bool(self.server.alive())

    def end(self) -> None:
        if not self.broker_up:
            self.server.start()

    def __str__(self) -> str:
        return f"broker down steps {self.down}-{self.up}"


def _collect(folder: Path, topics: list[str], k: int) -> str:
    """The k-th collect list of the "etcd" variant: one glob over the folder, or (k odd) two globs
    that split it; each time to other topics."""
    if k % 2:
        return json.dumps([{"path": f"{folder}/svc1*.log", "topic": topics[k % 3], "start": "beginning"},
                           {"path": f"{folder}/svc[02-9].log", "topic": topics[(k + 1) % 3], "start": "beginning"}])
    return json.dumps([{"path": f"{folder}/*.log", "topic": topics[k % 3], "start": "beginning"}])


@pytest.mark.parametrize("faults", ["running", "killed", "outage", "etcd", "etcd+outage", "killed+exactly_once"])
def test_many_files_rotated_by_logrotate(faults, make_agent, kafka, kafka_server, etcd, logdir, results, rnd):  # type: ignore[no-untyped-def]
    """20 files in one folder (empty when the agent starts), 8 rounds of 50 lines each, most rounds
    rotated: every line under its own path; without kills once and in order. "killed": kill -9 at
    random moments; "outage": those and the broker stopped for 2-5 rounds in the middle (restarts
    inside the outage too); "etcd": kills, and the collect list changed through etcd at random moments
    (the glob split in two entries and joined again, each time to other topics); "etcd+outage": all
    of them together; "killed+exactly_once": kills with delivery = exactly_once, every line exactly
    once and in order (read_committed)."""
    outage = Outage(kafka_server, rnd, (1, 3), (4, 7)) if "outage" in faults else None
    through_etcd = "etcd" in faults
    folder = logdir / "churn"
    folder.mkdir()
    files = [folder / f"svc{i}.log" for i in range(20)]
    for f in files:
        f.touch()
    topics = [new_topic(f"churn{i}") for i in range(3 if through_etcd else 1)]
    ip = unique_ip()
    key = collect_key(ip)
    if through_etcd:
        put(etcd, key, _collect(folder, topics, 0))
        agent = make_agent(etcd=etcd, ip=ip, extra={"agent": FAST})
    else:
        agent = make_agent(files=[{"path": f"{folder}/*.log", "topic": topics[0], "start": "beginning"}],
                           extra={"agent": FAST, **(eos() if "exactly_once" in faults else {})})
    written: dict[str, list[str]] = {str(f): [] for f in files}
    killed = changes = 0
    try:
        for r in range(8):
            if outage is not None:
                outage.at(r)
            for f in files:
                lines = [f"{f.name} gen {r} line {j:04d} " + "z" * rnd.randrange(60) for j in range(50)]
                with open(f, "a") as out:
                    out.write("".join(line + "\n" for line in lines))
                written[str(f)] += lines
                if rnd.random() < 0.7:
                    logrotate_once(f, rnd)
                if faults != "running" and rnd.random() < 0.03:
                    killed += _kill_now(agent, rnd, outage is None or outage.broker_up)
                if through_etcd and rnd.random() < 0.04:
                    changes += 1
                    put(etcd, key, _collect(folder, topics, changes))
    finally:
        if outage is not None:
            outage.end()
    total = sum(len(v) for v in written.values())
    unique = {line for lines in written.values() for line in lines}
    with KafkaReader(kafka, *topics) as reader:
        messages = _read_until(reader, lambda got: unique <= {m["data"] for m in got}, 90 if outage is None else 150)
    got: dict[str, list[str]] = {}
    for m in messages:
        got.setdefault(m["path"], []).append(m["data"])
    wrong = sorted(set(got) - set(written))
    missing = {os.path.basename(p): len(set(lines) - set(got.get(p, []))) for p, lines in written.items()}
    missing = {p: n for p, n in missing.items() if n}
    dups = sum(len(v) - len(set(v)) for v in got.values())
    how = "running" if faults == "running" else f"kill -9 {killed}x" + (f", {outage}" if outage else "") + \
        (f", {changes} collect list changes through etcd" if through_etcd else "") + \
        (", delivery = exactly_once (read_committed)" if "exactly_once" in faults else "")
    results.add(f"20 files x 8 logrotates, {how}",
                written=total, delivered=sum(len(v) for v in got.values()), missing=sum(missing.values()),
                duplicated=dups)
    assert not wrong and not missing, f"{rnd.replay()} {how}; missing per file {missing}; paths {wrong}"
    if faults in ("running", "killed+exactly_once"):
        assert dups == 0 and all(got[p] == lines for p, lines in written.items()), \
            f"{rnd.replay()} {how}: every line once, in the order written"


@pytest.mark.parametrize("faults", ["running", "killed", "outage", "killed+exactly_once"])
def test_many_pods_rotated_by_the_kubelet(faults, make_agent, kafka, kafka_server, tmp_path, results, rnd):  # type: ignore[no-untyped-def]
    """Pods made before the agent starts (their logs empty), then, group by group, four kubelet
    rotations each, a line split by each: every line whole; without kills once and in order.
    "killed": kill -9 at random moments; "outage": those and the broker stopped for some groups;
    "killed+exactly_once": kills with delivery = exactly_once, every line once and in order."""
    outage = Outage(kafka_server, rnd, (2, 6), (8, 12)) if faults == "outage" else None
    tree = PodTree(tmp_path / "pods")
    groups = [[tree.add_pod("shop", f"web{k}-{i}", ("app",)) for i in range(3)]
              for k in range(30 if faults == "running" else 16)]
    topic = new_topic("churn-k8s")
    agent = _k8s_agent(make_agent, tree, topic, tmp_path, eos()["kafka"] if "exactly_once" in faults else None, **FAST)
    killed = 0
    try:
        for g, pods in enumerate(groups):
            if outage is not None:
                outage.at(g)
            for r in range(4):
                for pod in pods:
                    tree.write(pod, "app", _pod_lines(pod, "app", 100 * r, 100))
                    _rotate_between_records(tree, pod, "app", r)
                    if faults != "running" and rnd.random() < 0.04:
                        killed += _kill_now(agent, rnd, outage is None or outage.broker_up)
            for pod in pods:
                tree.write(pod, "app", _pod_lines(pod, "app", 400, 100))
    finally:
        if outage is not None:
            outage.end()
    with KafkaReader(kafka, topic) as reader:
        t = tally_pods(tree, _read_until(reader, lambda got: tally_pods(tree, got).missing == 0,
                                         90 if outage is None else 150))
    how = "running" if faults == "running" else f"kill -9 {killed}x" + (f", {outage}" if outage else "") + \
        (", delivery = exactly_once (read_committed)" if "exactly_once" in faults else "")
    results.add(f"{3 * len(groups)} pods x 4 kubelet rotations, {how}",
                written=t.written, delivered=t.delivered, missing=t.missing, duplicated=t.duplicated)
    assert not (t.missing or t.unexpected or t.no_identity), f"{rnd.replay()} {how}: {t.describe()}"
    if faults in ("running", "killed+exactly_once"):
        assert t.ok, f"{rnd.replay()} {how}: {t.describe()}"
