"""Container logs end to end through the real broker: CRI and Docker json-file records read back
into the lines the application wrote."""

from __future__ import annotations

import json
from pathlib import Path

from tests.kit import KafkaReader, KubeletServer, PodTree, new_topic, wait_until

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
