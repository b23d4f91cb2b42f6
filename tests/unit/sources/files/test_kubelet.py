"""Pods' labels from the node's kubelet, against a fake kubelet serving /pods over HTTP on loopback:
one list request per interval whatever the number of files, a pod deleted before its files are
read keeps its labels (cached under data_dir), a kubelet that refuses or cannot be reached is said
and counted."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path

import pytest

from logagent.config.settings import KubernetesSettings
from logagent.errors import SourceError
from logagent.runtime import metrics
from logagent.sources.files.kubelet import CACHE, PodMetadata, parse_pod_list
from tests.kit import KubeletServer, PodTree, eventually


def _settings(url: str, **kw: object) -> KubernetesSettings:
    return KubernetesSettings(kubelet_url=url, **kw)  # type: ignore[arg-type]


def _requests(outcome: str) -> float:
    return metrics.KUBELET_REQUESTS.labels(outcome)._value.get()


async def test_many_files_waiting_for_unknown_pods_cost_one_list_request(tmp_path: Path):
    tree = PodTree(tmp_path / "pods")
    pods = [tree.add_pod("shop", f"web-{i}", labels={"app": "web", "i": str(i)}) for i in range(50)]
    with KubeletServer(tree.pods) as kubelet:
        meta = PodMetadata(_settings(kubelet.url, metadata_interval=30), tmp_path / "data")
        await meta.start()
        try:
            got = await asyncio.gather(*(meta.wait_for(p.uid) for p in pods for _ in range(4)))
            assert [m.labels["i"] for m in got if m is not None] == [str(i) for i in range(50) for _ in range(4)]
            assert kubelet.requests == 1, "one list for 200 files of 50 pods, not one request per file"
            # A pod the kubelet does not list: its files wait for the next list, then no more.
            unlisted = "0a1b2c3d-0000-0000-0000-000000000000"
            waiting = asyncio.ensure_future(meta.wait_for(unlisted))
            await asyncio.sleep(0.05)
            assert not waiting.done(), "waits for the next list"
            await meta.refresh()
            assert await waiting is None and meta.known(unlisted)
            assert await asyncio.wait_for(meta.wait_for(unlisted), 0.1) is None
        finally:
            await meta.stop()
    assert kubelet.requests == 2



async def test_a_pod_made_while_a_list_is_under_way_waits_for_the_next_one(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    """A list is under way, answered before the pod was made; the pod's first file asks for it: it
    waited for the end of that list, which did not have it, and its first line went out without its
    labels (test_manager's first-line test failed so under load). It waits for a list begun after."""
    tree = PodTree(tmp_path / "pods")
    with KubeletServer(tree.pods) as kubelet:
        meta = PodMetadata(_settings(kubelet.url, metadata_interval=0.2), tmp_path / "data")
        real = meta._fetch
        answered, release = threading.Event(), threading.Event()

        def held_once() -> bytes:
            body = real()
            if not answered.is_set():
                answered.set()
                release.wait(5)
            return body

        monkeypatch.setattr(meta, "_fetch", held_once)
        await meta.start()
        try:
            await asyncio.to_thread(answered.wait, 5)  # the list is answered and still under way
            pod = tree.add_pod("shop", "new", labels={"app": "shop"})
            waiting = asyncio.ensure_future(meta.wait_for(pod.uid))
            await asyncio.sleep(0.05)
            release.set()
            got = await asyncio.wait_for(waiting, 5)
            assert got is not None and got.labels == {"app": "shop"}
            assert kubelet.requests >= 2
        finally:
            release.set()
            await meta.stop()


async def test_a_pod_deleted_before_its_files_are_read_keeps_its_labels(tmp_path: Path):
    """Listed once, then deleted: its labels stay, in memory and in data_dir for the next start."""
    tree = PodTree(tmp_path / "pods")
    job = tree.add_pod("batch", "job-1", labels={"job-name": "job-1"}, annotations={"note": "x"})
    with KubeletServer(tree.pods) as kubelet:
        meta = PodMetadata(_settings(kubelet.url, metadata_interval=0.05, annotations=True), tmp_path / "data")
        await meta.start()
        try:
            await eventually(lambda: meta.get(job.uid) is not None, what="the job listed")
            tree.delete(job)
            seen = kubelet.requests
            await eventually(lambda: kubelet.requests >= seen + 2, what="two more lists without the job")
            still = meta.get(job.uid)
            assert still is not None and still.labels == {"job-name": "job-1"} and still.annotations == {"note": "x"}
        finally:
            await meta.stop()
    saved = json.loads((tmp_path / "data" / CACHE).read_text())
    assert saved["pods"][job.uid]["labels"] == {"job-name": "job-1"}
    again = PodMetadata(_settings("http://127.0.0.1:9"), tmp_path / "data")
    again.load()
    assert again.get(job.uid) == still and again.known(job.uid)


async def test_labels_that_change_are_told_to_the_listeners(tmp_path: Path):
    tree = PodTree(tmp_path / "pods")
    pod = tree.add_pod("shop", "web", labels={"v": "1"})
    changed: list[set[str]] = []
    with KubeletServer(tree.pods) as kubelet:
        meta = PodMetadata(_settings(kubelet.url, metadata_interval=0.05), tmp_path / "data")
        meta.subscribe(changed.append)
        await meta.start()
        try:
            await eventually(lambda: changed == [{pod.uid}], what="the first list")
            pod.labels = {"v": "2"}
            await eventually(lambda: len(changed) == 2, what="the change told")
            assert changed[1] == {pod.uid} and meta.get(pod.uid).labels == {"v": "2"}  # type: ignore[union-attr]
        finally:
            await meta.stop()


async def test_the_token_is_sent_and_a_refusal_is_said_once_and_counted(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture):
    tree = PodTree(tmp_path / "pods")
    pod = tree.add_pod("shop", "web", labels={"app": "web"})
    token = tmp_path / "token"
    token.write_text("wrong\n")
    with KubeletServer(tree.pods, token="s3cret") as kubelet:
        meta = PodMetadata(_settings(kubelet.url, metadata_interval=0.05, token_file=str(token)), tmp_path / "data")
        errors = _requests("error")
        await meta.start()
        try:
            # The server counts a refusal when it answers; the agent counts it once the answer is in.
            await eventually(lambda: kubelet.refused >= 3 and _requests("error") >= errors + 3,
                             what="refused lists, counted")
            assert meta.get(pod.uid) is None
            assert await asyncio.wait_for(meta.wait_for(pod.uid), 1) is None, "no wait while the kubelet refuses"
            warnings = [r.getMessage() for r in caplog.records if r.name == "logagent.kubelet"]
            assert len(warnings) == 1 and "answered 401" in warnings[0] and "nodes/pods" in warnings[0], warnings
            token.write_text("s3cret\n")  # the token file is read again at each request
            await eventually(lambda: meta.get(pod.uid) is not None, what="listed once the token is right")
            assert "s3cret" not in caplog.text
        finally:
            await meta.stop()


async def test_an_unreachable_kubelet_leaves_the_files_going(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING)
    meta = PodMetadata(_settings("http://127.0.0.1:9", metadata_interval=30), tmp_path / "data")
    await meta.start()
    try:
        assert await asyncio.wait_for(meta.wait_for("some-uid"), 15) is None
        assert "cannot reach the kubelet at http://127.0.0.1:9" in caplog.text
    finally:
        await meta.stop()


@pytest.mark.parametrize("body, problem", [
    (b"<html>", "not JSON"), (b"[]", "not a pod list"), (b'{"items": 1}', "not a pod list")])
def test_bad_answers_are_refused(body: bytes, problem: str):
    with pytest.raises(SourceError, match=problem):
        parse_pod_list(body, False, 0.0)


def test_odd_items_are_skipped():
    body = json.dumps({"items": [1, {"metadata": {"uid": "u", "namespace": "n", "name": "p",
                                                  "labels": {"a": "b", "n": 1}}},
                                 {"metadata": {"uid": 2}}]}).encode()
    got = parse_pod_list(body, False, 5.0)
    assert list(got) == ["u"] and got["u"].labels == {"a": "b"} and got["u"].annotations == {}
