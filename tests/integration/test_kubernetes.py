"""Container logs end to end through the real broker: CRI and Docker json-file records read back
into the lines the application wrote."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from devstack.kubelet import Pod, cri_records
from tests.kit import KafkaReader, KubeletServer, PodTally, PodTree, new_topic, tally_pods, wait_until

T0 = "2026-12-06T10:00:00.000000001Z"
T1 = "2026-12-06T10:00:01.5Z"


def _cri(stream: str, tag: str, text: str, time: str = T0) -> str:
    return f"{time} {stream} {tag} {text}\n"


def _docker(stream: str, log: str, time: str = T0) -> str:
    return json.dumps({"log": log, "stream": stream, "time": time}) + "\n"


def _append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def test_cri_and_docker_records_become_the_lines_with_their_time_and_stream(make_agent, kafka, logdir):
    topic = new_topic("formats")
    cri, docker, auto = logdir / "cri.log", logdir / "docker.log", logdir / "auto.log"
    for path in (cri, docker, auto):
        path.write_text("")
    make_agent(files=[{"path": str(cri), "topic": topic, "format": "cri"},
                      {"path": str(docker), "topic": topic, "format": "docker"},
                      {"path": str(auto), "topic": topic, "format": "auto"}])
    _append(cri, _cri("stdout", "P", "a long ", T1) + _cri("stderr", "F", "an error") + _cri("stdout", "P", "line ")
            + "not a CRI record\n" + _cri("stdout", "F", "in three records") + _cri("stdout", "F", ""))
    _append(docker, _docker("stdout", "json ", T1) + _docker("stdout", "joined\n") + _docker("stderr", "e\n"))
    _append(auto, _cri("stdout", "F", "from cri") + _docker("stderr", "from docker\n"))
    with KafkaReader(kafka, topic) as reader:
        reader.read(8, timeout=30)
        reader.settle(quiet=1)
        got = reader.values()
    by_path: dict[str, list[tuple[str, str | None, str | None]]] = {}
    for m in got:
        by_path.setdefault(Path(m["path"]).name, []).append((m["data"], m.get("stream"), m.get("time")))
    assert by_path["cri.log"] == [("an error", "stderr", T0), ("not a CRI record", None, None),
                                  ("a long line in three records", "stdout", T1), ("", "stdout", T0)]
    assert by_path["docker.log"] == [("json joined", "stdout", T1), ("e", "stderr", T0)]
    assert by_path["auto.log"] == [("from cri", "stdout", T0), ("from docker", "stderr", T0)]
    joined = next(m for m in got if m["data"] == "a long line in three records")
    assert joined["offset"] == 0 and "timestamp" in joined and "truncated" not in joined


def _saved_offset(data_dir: Path, path: Path) -> int | None:
    """The offset registry.json holds for the file now at `path` (what a restart resumes from)."""
    try:
        files = json.loads((data_dir / "registry.json").read_text())["files"]
    except (OSError, ValueError):
        return None
    st = path.stat()
    entry = files.get(f"{st.st_dev}:{st.st_ino}")
    return None if entry is None else int(entry["offset"])


def test_a_kill9_in_the_middle_of_a_partial_line_sends_it_once_and_whole(make_agent, kafka, logdir, tmp_path):
    topic = new_topic("partial-kill")
    log = logdir / "0.log"
    log.write_text("")
    agent = make_agent(files=[{"path": str(log), "topic": topic, "format": "cri"}])
    _append(log, _cri("stdout", "F", "before") + _cri("stdout", "P", "first half, "))
    with KafkaReader(kafka, topic) as reader:
        reader.read(1, timeout=30)
        # 'before' acknowledged and on disk: the registry stops at the partial line's start.
        wait_until(lambda: _saved_offset(tmp_path / "data", log) == len(_cri("stdout", "F", "before")),
                   timeout=10, what="the registry at the start of the partial line")
        agent.kill()
        _append(log, _cri("stdout", "F", "second half") + _cri("stdout", "F", "after"))
        agent.start()
        reader.read(3, timeout=30)
        reader.settle(quiet=1.5)
        assert reader.data() == ["before", "first half, second half", "after"]


def test_every_message_carries_its_pods_identity_and_labels_with_one_kubelet_list_per_interval(
        make_agent, kafka, tmp_path):
    """40 files of 20 pods, topics by namespace, labels from a fake kubelet: each message carries its
    pod's identity and labels; the kubelet is asked once per metadata_interval, not once per file."""
    tree = PodTree(tmp_path / "pods")
    prefix = new_topic("k8s")
    pods = [tree.add_pod(f"ns{i % 2}", f"web-{i}", ("app", "sidecar"), labels={"app": f"web-{i}"}) for i in range(20)]
    for pod in pods:
        for c in pod.containers:
            tree.write(pod, c, [("stdout", f"{pod.name}/{c} first line, long enough to be cut in records"),
                                ("stderr", f"{pod.name}/{c} second")])
    with KubeletServer(tree.pods) as kubelet:
        agent = make_agent(files=[{"path": f"{tree.root}/*/*/*.log", "topic": prefix + ".{namespace}",
                                   "format": "cri", "start": "beginning"}],
                           extra={"agent": {"allowed_paths": f"{tmp_path}/**"},
                                  "kubernetes": {"kubelet_url": kubelet.url, "metadata_interval": "2"}})
        with KafkaReader(kafka, f"{prefix}.ns0", f"{prefix}.ns1") as reader:
            reader.read(80, timeout=60)
            reader.settle(quiet=1)
            got = reader.values()
        requests = kubelet.requests
        lists = agent.metric("logagent_kubelet_requests_total", outcome="ok")
    assert len(got) == 80
    for m in got:
        pod_name, container = m["data"].split(" ")[0].split("/")
        pod = next(p for p in pods if p.name == pod_name)
        assert m["kubernetes"] == {"namespace": pod.namespace, "pod": pod.name, "pod_uid": pod.uid,
                                   "container": container, "restart_count": 0, "labels": {"app": pod.name}}, m
    assert {m["data"] for m in got} == {f"{p.name}/{c} {t}" for p in pods for c in p.containers
                                        for t in ("first line, long enough to be cut in records", "second")}
    assert 1 <= requests == lists <= 10, f"{requests} list requests for 40 files"


# ---------------------------------------------------------------------------- the kubelet's rotation

def _pod_lines(pod: Pod, container: str, start: int, count: int) -> list[tuple[str, str]]:
    """Numbered lines, both streams, each long enough for the runtime to cut it into records."""
    return [("stderr" if i % 3 == 2 else "stdout", f"{pod.name}/{container} line {i:06d} " + "x" * (i % 40))
            for i in range(start, start + count)]


def _k8s_agent(make_agent, tree: PodTree, topic: str, tmp_path: Path, kafka: dict[str, str] | None = None,  # type: ignore[no-untyped-def]
               **agent: str):
    extra = {"agent": {"allowed_paths": f"{tmp_path}/**", **agent}, **({"kafka": kafka} if kafka else {})}
    return make_agent(files=[{"path": f"{tree.root}/*/*/*.log", "topic": topic, "format": "cri",
                              "start": "beginning"}], extra=extra)


def _delivered(kafka: str, topic: str, tree: PodTree, timeout: float = 90) -> PodTally:
    with KafkaReader(kafka, topic) as reader:
        reader.read(tree.count(), timeout=timeout)
        reader.settle(quiet=2)
        return tally_pods(tree, reader.values())


def _rotate_between_records(tree: PodTree, pod: Pod, container: str, n: int) -> None:
    """A line whose partial records are in the file the kubelet renames and whose end is in the next."""
    text = f"{pod.name}/{container} split by rotation {n} " + "y" * 50
    last = tree.write_partial(pod, container, "stdout", text)
    tree.rotate(pod, container)
    tree.finish_partial(pod, container, "stdout", text, last)


def test_kubelet_rotation_while_running_loses_nothing_and_joins_the_lines_it_splits(make_agent, kafka, tmp_path):
    """0.log renamed to 0.log.<time> between a line's partial records and its end, the older ones
    gzipped (through .gz.tmp) and deleted by the kubelet, four times, the writes going on without
    waiting for the agent: every line once, whole, in order per stream."""
    tree = PodTree(tmp_path / "pods")
    pods = [tree.add_pod("shop", f"web-{i}", ("app",)) for i in range(3)]
    topic = new_topic("k8s-rot")
    _k8s_agent(make_agent, tree, topic, tmp_path)
    n = 0
    for r in range(4):
        for pod in pods:
            tree.write(pod, "app", _pod_lines(pod, "app", n, 100))
            _rotate_between_records(tree, pod, "app", r)
        n += 100
    for pod in pods:
        tree.write(pod, "app", _pod_lines(pod, "app", n, 100))
    assert any(p.name.endswith(".gz") for p in (tree.root).rglob("*")), "the kubelet gzipped older files"
    t = _delivered(kafka, topic, tree)
    assert t.ok, t.describe()


def test_kubelet_rotation_while_the_agent_is_stopped_is_recovered(make_agent, kafka, tmp_path):
    """Stopped; the kubelet renames 0.log three times (gzipping the older ones), a line split by each
    rotation: at the next start the renamed file is found by inode, the gzipped ones by their first
    bytes, and the split lines are joined."""
    tree = PodTree(tmp_path / "pods")
    pod = tree.add_pod("shop", "web", ("app", "sidecar"))
    topic = new_topic("k8s-down")
    agent = _k8s_agent(make_agent, tree, topic, tmp_path)
    for c in pod.containers:
        tree.write(pod, c, _pod_lines(pod, c, 0, 50))
    with KafkaReader(kafka, topic) as reader:
        reader.read(100, timeout=30)
    assert agent.stop() == 0
    for r in range(3):
        for c in pod.containers:
            tree.write(pod, c, _pod_lines(pod, c, 50 + 100 * r, 100))
            _rotate_between_records(tree, pod, c, r)
    for c in pod.containers:
        tree.write(pod, c, _pod_lines(pod, c, 400, 10))
    assert len(list(tree.root.rglob("*.gz"))) == 4
    agent.start()
    t = _delivered(kafka, topic, tree)
    assert t.ok, t.describe()
    assert agent.metric("logagent_rotated_files_recovered_total", source="compressed") == 4


@pytest.mark.parametrize("killed", [False, True], ids=["running", "killed"])
def test_a_pod_folder_deleted_during_a_kafka_outage_is_finished_from_the_descriptor_or_the_spool(
        make_agent, kafka, kafka_server, tmp_path, killed):
    """Kafka is down; a pod's lines are read, then its folder is deleted (the pod ended): what Kafka
    does not have is kept from the open descriptor, and in the spool; killed with -9 then, the spool
    is all there is, and it is read at the next start."""
    if kafka_server is None:
        pytest.fail("this test stops the broker: run it against the suite's own (unset LOGAGENT_TEST_KAFKA)")
    tree = PodTree(tmp_path / "pods")
    gone, stays = tree.add_pod("batch", "job-1", ("main",)), tree.add_pod("shop", "web", ("app",))
    topic = new_topic("k8s-del")
    agent = _k8s_agent(make_agent, tree, topic, tmp_path)
    tree.write(gone, "main", _pod_lines(gone, "main", 0, 10))
    with KafkaReader(kafka, topic) as reader:
        reader.read(10, timeout=30)
    kafka_server.stop()
    try:
        tree.write(gone, "main", _pod_lines(gone, "main", 10, 500))
        tree.write(stays, "app", _pod_lines(stays, "app", 0, 100))
        wait_until(lambda: agent.metric("logagent_lines_read_total") >= 610, timeout=20, what="the lines read")
        tree.delete(gone)
        wait_until(lambda: agent.metric("logagent_spool_bytes") > 0, timeout=20,
                   what="the deleted pod's unacknowledged bytes in the spool")
        if killed:
            agent.kill()
    finally:
        kafka_server.start()
    if killed:
        agent.start()
    tree.write(stays, "app", _pod_lines(stays, "app", 100, 10))
    t = _delivered(kafka, topic, tree)
    assert t.ok, t.describe()
    wait_until(lambda: agent.metric("logagent_spool_bytes") == 0, timeout=20, what="the spool emptied")


def _inotify_watches(pid: int) -> int:
    """inotify watches the process holds (each `inotify wd:` line of its descriptors' fdinfo)."""
    total = 0
    for fdinfo in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            total += fdinfo.read_text().count("inotify wd:")
        except OSError:
            pass
    return total


def test_a_new_pod_and_a_container_restart_are_picked_up_at_once(make_agent, kafka, tmp_path):
    """With scans a minute apart, a pod created after the start (its folders first, its log a moment
    later) and a container restart (1.log beside 0.log) are read within seconds: inotify watches the
    pods' and containers' folders."""
    tree = PodTree(tmp_path / "pods")
    first = tree.add_pod("shop", "web", ("app",))
    topic = new_topic("k8s-new")
    agent = _k8s_agent(make_agent, tree, topic, tmp_path, scan_interval="60")
    tree.write(first, "app", [("stdout", "from 0.log")])
    with KafkaReader(kafka, topic) as reader:
        reader.read(1, timeout=30)
        assert agent.proc is not None
        watches = _inotify_watches(agent.proc.pid)
        folder = tree.root / f"shop_late_{'0' * 8}-0000-0000-0000-{'0' * 12}" / "app"
        folder.mkdir(parents=True)
        wait_until(lambda: _inotify_watches(agent.proc.pid) >= watches + 2, timeout=10,  # type: ignore[union-attr]
                   what="the new pod's folders watched")
        (folder / "0.log").write_text(cri_records("stdout", "the new pod's first line", chunk=1000)[0])
        tree.restart(first, "app")
        tree.write(first, "app", [("stdout", "from 1.log")])
        t0 = time.monotonic()
        reader.read(3, timeout=10)
        took = time.monotonic() - t0
        assert sorted(reader.data()) == ["from 0.log", "from 1.log", "the new pod's first line"]
    assert took < 5, f"{took:.1f}s: not at once"


# ---------------------------------------------------------------------------- a node through a crash and an outage

def _registry_covers(data_dir: Path, sizes: dict[tuple[int, int], int]) -> bool:
    """registry.json on disk holds, for every file (device, inode), at least the offset given: every
    acknowledgement so far is written, so a kill -9 now re-sends nothing."""
    try:
        files = json.loads((data_dir / "registry.json").read_text())["files"]
    except (OSError, ValueError, KeyError):
        return False
    saved = {(int(e["dev"]), int(e["ino"])): int(e["offset"]) for e in files.values()}
    return all(saved.get(ids, -1) >= size for ids, size in sizes.items())


def _spooled_to(data_dir: Path, path: Path) -> int:
    """How far the spool on disk holds the file collected as `path` (the end of its last segment)."""
    end = 0
    for meta in (data_dir / "spool").glob("*/meta.json"):
        try:
            if json.loads(meta.read_text()).get("path") != str(path):
                continue
        except (OSError, ValueError):
            continue
        for seg in meta.parent.glob("*.seg"):
            end = max(end, int(seg.stem.split("-")[1]))
    return end


def _live_sizes(trees: list[PodTree]) -> dict[tuple[int, int], int]:
    out = {}
    for tree in trees:
        for path in tree.root.rglob("*.log"):
            st = path.stat()
            out[(st.st_dev, st.st_ino)] = st.st_size
    return out


class _Node:
    """The pods of one node in two trees (containerd's CRI records, Docker's json-file records), each
    line numbered per container, written as the runtimes write them (partial records, the two streams
    interleaved) and rotated as the kubelet rotates them (between a line's records, older files gzipped)."""

    def __init__(self, root: Path) -> None:
        self.trees = [PodTree(root / "cri", "cri", keep=8), PodTree(root / "docker", "docker", keep=8)]
        self.next: dict[tuple[str, str], int] = {}
        self.pods: list[tuple[PodTree, Pod]] = []

    def add(self, namespace: str, name: str, containers: tuple[str, ...] = ("app", "proxy")) -> Pod:
        tree = self.trees[len(self.pods) % 2]
        pod = tree.add_pod(namespace, name, containers)
        self.pods.append((tree, pod))
        return pod

    def tree_of(self, pod: Pod) -> PodTree:
        return next(t for t, p in self.pods if p is pod)

    def write(self, count: int, rotate_every: int = 0, only: list[Pod] | None = None) -> None:
        for i, (tree, pod) in enumerate(self.pods):
            if pod.deleted or (only is not None and pod not in only):
                continue
            for c in pod.containers:
                n = self.next.get((pod.uid, c), 0)
                tree.write(pod, c, _pod_lines(pod, c, n, count))
                self.next[(pod.uid, c)] = n + count
                if rotate_every and (i + len(c)) % rotate_every == 0:
                    _rotate_between_records(tree, pod, c, n)

    def count(self) -> int:
        return sum(t.count() for t in self.trees)

    def tally(self, messages: list[dict[str, object]]) -> list[PodTally]:
        return [tally_pods(t, [m for m in messages if str(m.get("path", "")).startswith(f"{t.root}/")])
                for t in self.trees]


def test_a_node_through_a_kill9_and_a_kafka_outage_loses_nothing_and_sends_nothing_twice(
        make_agent, kafka, kafka_server, tmp_path):
    """Pods in CRI and Docker formats, lines cut into partial records, two streams. Kafka stops; the
    kubelet rotates (a line split across each rotation), a pod ends (its folder deleted once read), a
    container restarts; the agent is killed with -9 in the middle; while it is down the kubelet rotates
    again, gzipping the older files, more lines come and a new pod starts; the agent starts again with
    Kafka still down, then Kafka comes back. Every line once, whole, in order per container and
    stream, with its pod's identity, read back from the broker."""
    if kafka_server is None:
        pytest.fail("this test stops the broker: run it against the suite's own (unset LOGAGENT_TEST_KAFKA)")
    node = _Node(tmp_path / "pods")
    for i in range(6):
        node.add(f"ns{i % 3}", f"web-{i}")
    ending = node.add("batch", "job-1", ("main",))
    topic = new_topic("k8s-node")
    agent = make_agent(files=[{"path": f"{node.trees[0].root}/*/*/*.log", "topic": topic, "format": "cri",
                               "start": "beginning"},
                              {"path": f"{node.trees[1].root}/*/*/*.log", "topic": topic, "format": "docker",
                               "start": "beginning"}],
                       extra={"agent": {"allowed_paths": f"{tmp_path}/**"}})
    data_dir = tmp_path / "data"
    node.write(40, rotate_every=2)
    with KafkaReader(kafka, topic) as reader:
        reader.read(node.count(), timeout=60)
    # Every line so far acknowledged and on disk before the broker stops: a batch in flight at the
    # stop may be written without its ack coming back, and is sent again (at least once).
    wait_until(lambda: agent.metric("logagent_unacked_bytes") == 0, timeout=20, what="every ack in")
    sizes = _live_sizes(node.trees)
    wait_until(lambda: _registry_covers(data_dir, sizes), timeout=10, what="the registry on disk")
    kafka_server.stop()
    try:
        node.write(60, rotate_every=3)
        web0 = node.pods[0][1]
        node.tree_of(web0).restart(web0, "app")
        node.write(20)
        wait_until(lambda: agent.metric("logagent_lines_read_total") >= node.count(), timeout=30,
                   what="the lines read during the outage")
        ended = node.tree_of(ending).log_path(ending, "main")
        size = ended.stat().st_size
        node.tree_of(ending).delete(ending)
        # Spooled once its reader sees it gone (after SPOOL_GRACE): a kill before that loses it, as
        # docs/delivery.md says; the kill comes after.
        wait_until(lambda: _spooled_to(data_dir, ended) >= size, timeout=20,
                   what="the ended pod's unacknowledged bytes in the spool")
        agent.kill()
        # While the agent is down: the kubelet rotates twice more (the older files gzipped), a new pod.
        node.write(30, rotate_every=1)
        node.add("ns9", "late")
        node.write(30, rotate_every=2)
        assert list(node.trees[0].root.rglob("*.gz")) and list(node.trees[1].root.rglob("*.gz"))
        agent.start(wait_ready=False)
        node.write(10)
        wait_until(lambda: agent.scrape() is not None and agent.metric("logagent_lines_read_total") > 0,
                   timeout=30, what="lines read again with Kafka still down")
    finally:
        kafka_server.start()
    node.write(10)
    with KafkaReader(kafka, topic) as reader:
        try:
            reader.read(node.count(), timeout=90)
        except AssertionError:
            pass  # fewer: the tally below says which
        reader.settle(quiet=3)
        got = reader.values()
    tallies = node.tally(got)
    for t in tallies:
        assert t.ok, t.describe()
    assert sum(t.written for t in tallies) == node.count() == len(got)
    assert agent.metric("logagent_rotated_files_recovered_total") > 0
    assert agent.metric("logagent_files_lost_total") == 0
