"""The entry runner: per-file state outside the registry must not outlive the files (a glob
folder where files with new names come and go leaves nothing behind per file), and its folders stay
watched."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

import pytest

from logagent.config.settings import KubernetesSettings
from logagent.pipeline.batch import Batch
from logagent.pipeline.buffer import BatchQueue
from logagent.runtime import metrics
from logagent.sources.files.budget import FdBudget
from logagent.sources.files.entry import CollectEntry
from logagent.sources.files.kubelet import PodMetadata
from logagent.sources.files.manager import EntryRunner, ManagerContext, TailerManager
from logagent.sources.files.registry import Registry
from logagent.sources.files.shipper import TailOptions
from logagent.sources.files.tailer import FileTailer
from logagent.sources.files.watcher import new_watcher
from tests.kit import KubeletServer, PodTree, eventually


async def test_problems_of_files_no_longer_matched_are_forgotten(tmp_path: Path):
    """Each match that could not be opened (here a dangling symlink: the same 'No such file' as a
    file deleted between the glob's walk and the open) was kept in the runner's problem map for
    ever: one entry per vanished file, 39,120 of them in a churn of 100,000 files under load."""
    logs = tmp_path / "logs"
    logs.mkdir()
    watcher = new_watcher()
    ctx = ManagerContext(opts=TailOptions(ip="127.0.0.1", host="h"), queue=BatchQueue(100),
                         registry=Registry(tmp_path / "data"), budget=FdBudget(64),
                         allowed_paths=(f"{tmp_path}/**",), watcher=watcher)
    runner = EntryRunner(CollectEntry(str(logs / "*.log"), "t"), ctx)
    try:
        for round_ in range(3):
            names = [logs / f"job-{round_}-{i}.log" for i in range(50)]
            for name in names:
                os.symlink(tmp_path / "nowhere", name)
            assert await runner.scan() == 0
            assert len(runner._errors) == 50, "each problem is reported (and kept while it lasts)"
            for name in names:
                name.unlink()
        await runner.scan()
        assert runner._errors == {}
    finally:
        await runner.stop()
        await watcher.stop()


async def test_a_match_gone_since_the_walk_is_no_error_when_its_own_tailer_saw_it_go(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """A walk lists job.log; its tailer sees it deleted (and drains it); the walk's result then
    starts a tailer for the name: 'cannot open: No such file' was an ERROR, kept in the problem map,
    for a file read to its end (a third of the files of the churn benchmark). A match that vanished
    before the agent ever saw it is still an ERROR."""
    caplog.set_level(logging.DEBUG, logger="logagent.manager")
    logs = tmp_path / "logs"
    logs.mkdir()
    watcher = new_watcher()
    registry = Registry(tmp_path / "data")
    ctx = ManagerContext(opts=TailOptions(ip="127.0.0.1", host="h"), queue=BatchQueue(100), registry=registry,
                         budget=FdBudget(64), allowed_paths=(f"{tmp_path}/**",), watcher=watcher)
    runner = EntryRunner(CollectEntry(str(logs / "*.log"), "t"), ctx)
    job = logs / "job.log"
    job.write_text("one line\n")
    try:
        assert await runner.scan() == 1
        tailer = runner.tailers[str(job)]
        await eventually(lambda: tailer.read_pos == 9, what="the line read")
        job.unlink()
        tailer.check_name()  # the deletion seen: the tailer drains the file
        assert str(job) not in runner.tailers and tailer in runner.draining
        assert runner._start_tailer(str(job), False) is False  # what a walk that listed it does now
        # Read before, finished since (its tailer ended): the registry knows the name.
        runner._last.clear()
        assert registry.entries_for(str(job))
        assert runner._start_tailer(str(job), False) is False
        assert runner._errors == {}
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        # Never seen: a file that came and went before the agent could open it is still said.
        assert runner._start_tailer(str(logs / "never-seen.log"), False) is False
        assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == \
            [f"{logs}/never-seen.log: cannot open: No such file or directory"]
    finally:
        await runner.stop()
        await watcher.stop()


async def test_a_folder_deleted_and_made_anew_is_watched_again(tmp_path: Path):
    """The runner remembered a folder as watched for ever: once it was deleted (its inotify watch
    went with it) and made anew, its files were only polled (every stat_interval), not woken."""
    folder = tmp_path / "logs" / "app"
    folder.mkdir(parents=True)
    watcher = new_watcher()
    await watcher.start()
    ctx = ManagerContext(opts=TailOptions(ip="127.0.0.1", host="h"), queue=BatchQueue(100),
                         registry=Registry(tmp_path / "data"), budget=FdBudget(64),
                         allowed_paths=(f"{tmp_path}/**",), watcher=watcher)
    runner = EntryRunner(CollectEntry(str(folder / "app.log"), "t"), ctx)
    try:
        await runner.scan()
        assert watcher.watching(str(folder))
        folder.rmdir()
        await eventually(lambda: not watcher.watching(str(folder)), what="the watch gone with its folder")
        folder.mkdir()
        await runner.scan()
        assert watcher.watching(str(folder))
    finally:
        await runner.stop()
        await watcher.stop()


# ---------------------------------------------------------------------------- container logs of pods

async def _messages(queue: BatchQueue, count: int) -> list[tuple[str, dict[str, object]]]:
    """(topic, message) of the next `count` messages on the queue."""
    out: list[tuple[str, dict[str, object]]] = []
    while len(out) < count:
        batch = await asyncio.wait_for(queue.get(), 5)
        out.extend((batch.topic, json.loads(v)) for v in batch.values)
    return out


async def test_a_pods_files_carry_its_identity_and_go_to_their_templated_topic(tmp_path: Path):
    """Topic by template from the path; a file whose topic Kafka would refuse is refused alone
    (said and counted under the entry), the others go on."""
    tree = PodTree(tmp_path / "pods")
    shop = tree.add_pod("shop", "web-1", ("nginx", "sidecar"))
    bad = tree.add_pod("x" * 100, "y" * 110)  # k8s.<100 x>.<110 y>.<uid>: beyond Kafka's 249 characters
    for pod in (shop, bad):
        for c in pod.containers:
            tree.write(pod, c, [("stdout", f"hello from {pod.name}/{c}")])
    watcher = new_watcher()
    queue = BatchQueue(1000)
    ctx = ManagerContext(opts=TailOptions(ip="127.0.0.1", host="node-1"), queue=queue,
                         registry=Registry(tmp_path / "data"), budget=FdBudget(64),
                         allowed_paths=(f"{tmp_path}/**",), watcher=watcher)
    entry = CollectEntry(str(tree.root / "*" / "*" / "*.log"), "k8s.{namespace}.{pod}.{pod_uid}",
                         fields={"env": "prod"}, format="cri")
    runner = EntryRunner(entry, ctx)
    errors = metrics.FILE_ERRORS.labels(metrics.path_label(entry.path), "bad_topic")._value.get()
    try:
        assert await runner.scan(start_at_end=False) == 2
        got = sorted(await _messages(queue, 2), key=lambda m: str(m[1]["data"]))
        assert [t for t, _ in got] == [f"k8s.shop.web-1.{shop.uid}"] * 2
        assert got[0][1]["data"] == "hello from web-1/nginx" and got[0][1]["env"] == "prod"
        assert got[0][1]["kubernetes"] == {"namespace": "shop", "pod": "web-1", "pod_uid": shop.uid,
                                           "container": "nginx", "restart_count": 0}
        assert got[1][1]["kubernetes"]["container"] == "sidecar"  # type: ignore[index]
        assert len(runner.problems) == 1 and "topic must be a valid Kafka topic name" in runner.problems[0]
        assert metrics.FILE_ERRORS.labels(metrics.path_label(entry.path), "bad_topic")._value.get() == errors + 1
        await runner.scan()  # looked at again: said and counted once
        assert metrics.FILE_ERRORS.labels(metrics.path_label(entry.path), "bad_topic")._value.get() == errors + 1
    finally:
        await runner.stop()
        await watcher.stop()


async def test_a_pods_first_line_waits_for_the_kubelets_list_and_carries_its_labels(tmp_path: Path):
    tree = PodTree(tmp_path / "pods")
    with KubeletServer(tree.pods) as kubelet:
        pods = PodMetadata(KubernetesSettings(kubelet_url=kubelet.url, metadata_interval=0.3), tmp_path / "data")
        watcher = new_watcher()
        queue = BatchQueue(1000)
        ctx = ManagerContext(opts=TailOptions(ip="127.0.0.1", host="node-1"), queue=queue,
                             registry=Registry(tmp_path / "data"), budget=FdBudget(64),
                             allowed_paths=(f"{tmp_path}/**",), watcher=watcher, pods=pods)
        runner = EntryRunner(CollectEntry(str(tree.root / "*" / "*" / "*.log"), "k8s", format="cri"), ctx)
        await watcher.start()  # inotify wakes the file for its second line
        await pods.start()
        try:
            await eventually(lambda: kubelet.requests == 1, what="the first list")
            pod = tree.add_pod("shop", "new", labels={"app": "shop"})  # after that list
            tree.write(pod, "app", [("stdout", "first line")])
            assert await runner.scan(start_at_end=False) == 1
            [(_, message)] = await _messages(queue, 1)
            assert message["kubernetes"]["labels"] == {"app": "shop"}  # type: ignore[index]
            assert kubelet.requests == 2
            pod.labels = {"app": "shop", "v": "2"}  # changed: the next lines carry the new labels
            await eventually(lambda: pods.get(pod.uid).labels.get("v") == "2", what="the change listed")  # type: ignore[union-attr]
            tree.write(pod, "app", [("stdout", "second line")])
            [(_, message)] = await _messages(queue, 1)
            assert message["kubernetes"]["labels"] == {"app": "shop", "v": "2"}  # type: ignore[index]
        finally:
            await runner.stop()
            await pods.stop()
            await watcher.stop()


def _series(path: str) -> list[tuple[str, ...]]:
    from logagent.runtime import metrics

    return [v for m in (metrics.LINES_READ, metrics.BYTES_READ) for v in list(m._metrics) if v[0] == path]


async def test_a_file_gone_for_good_and_a_removed_entry_leave_metrics(tmp_path: Path):
    """Per-file series stayed for every name ever read: in a folder where files with new names come
    and go, the first 1,000 names kept their series for ever and every later file shared (other)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    watcher = new_watcher()
    await watcher.start()
    ctx = ManagerContext(opts=TailOptions(ip="127.0.0.1", host="h", rotate_wait=0.05, stat_interval=0.05),
                         queue=BatchQueue(100), registry=Registry(tmp_path / "data"), budget=FdBudget(64),
                         allowed_paths=(f"{tmp_path}/**",), watcher=watcher)
    runner = EntryRunner(CollectEntry(str(logs / "*.log"), "t"), ctx)
    job, keep = logs / "job.log", logs / "keep.log"
    job.write_text("one\n")
    keep.write_text("two\n")
    try:
        assert await runner.scan() == 2
        await eventually(lambda: _series(str(job)) and _series(str(keep)), what="both files read")
        tailer = runner.tailers[str(job)]
        job.unlink()
        tailer.check_name()  # the deletion seen: read to its end, finished after rotate_wait
        tailer.wake()
        await eventually(lambda: tailer.finished and tailer not in runner.draining, what="its reader ended")
        assert _series(str(job)) == [] and _series(str(keep)) != []
        runner.forget_metrics()  # the entry is removed
        assert _series(str(keep)) == []
    finally:
        await runner.stop()
        await watcher.stop()


@pytest.mark.parametrize("fmt", ["cri", "plain"])
async def test_a_pods_log_renamed_before_the_agent_first_looked_is_read_first(tmp_path: Path, fmt: str):
    """The entry is collected; a pod starts and the kubelet renames its 0.log (a line cut by the
    rotation) before the agent's first look at the path (a pod made while the agent was down, or
    between two looks): the renamed file was never read (30 lines lost, the line's end sent alone),
    or read later after the newer file. Now it is read first, and the line joined; with the plain
    format too (its records as they are)."""
    tree = PodTree(tmp_path / "pods")
    watcher = new_watcher()
    queue = BatchQueue(1000)
    reg = Registry(tmp_path / "data")
    ctx = ManagerContext(opts=TailOptions(ip="127.0.0.1", host="node-1"), queue=queue, registry=reg,
                         budget=FdBudget(64), allowed_paths=(f"{tmp_path}/**",), watcher=watcher)
    entry = CollectEntry(str(tree.root / "*" / "*" / "*.log"), "k8s", format=fmt)
    assert not reg.entry_applied(entry.path)
    pod = tree.add_pod("shop", "web", ("app",))
    tree.write(pod, "app", [("stdout", f"line {i}") for i in range(30)])
    last = tree.write_partial(pod, "app", "stdout", "a line cut by the rotation")
    tree.rotate(pod, "app")
    tree.finish_partial(pod, "app", "stdout", "a line cut by the rotation", last)
    tree.write(pod, "app", [("stdout", "in the new file")])
    runner = EntryRunner(entry, ctx)
    try:
        assert await runner.scan(start_at_end=False) == 1
        if fmt == "cri":
            got = [str(m["data"]) for _, m in await _messages(queue, 32)]
            assert got == [f"line {i}" for i in range(30)] + ["a line cut by the rotation", "in the new file"]
        else:
            parts = len(tree.records("stdout", "a line cut by the rotation")) - 1
            got = [str(m["data"]) for _, m in await _messages(queue, 30 + parts + 2)]
            assert got[0].endswith(" F line 0") and got[29].endswith(" F line 29")
            assert all(" P " in g for g in got[30:30 + parts])
            assert got[-2].endswith(" F e rotation") and got[-1].endswith(" F in the new file")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(queue.get(), 0.5)
    finally:
        await runner.stop()
        await watcher.stop()


def _pod_runner(tmp_path: Path, rotate_wait: float) -> tuple[PodTree, EntryRunner, BatchQueue]:
    """A kubelet-style pod tree under tmp_path/pods, and a runner of its container logs (CRI) with a
    fast stat tick, its queue and a watcher of its own (runner.ctx.watcher)."""
    tree = PodTree(tmp_path / "pods")
    queue = BatchQueue(1000)
    ctx = ManagerContext(opts=TailOptions(ip="127.0.0.1", host="node-1", rotate_wait=rotate_wait, stat_interval=0.05),
                         queue=queue, registry=Registry(tmp_path / "data"), budget=FdBudget(64),
                         allowed_paths=(f"{tmp_path}/**",), watcher=new_watcher())
    return tree, EntryRunner(CollectEntry(str(tree.root / "*" / "*" / "*.log"), "k8s", format="cri"), ctx), queue


async def test_a_rename_seen_just_after_a_read_still_joins_the_line_it_split(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch):
    """The runtime writes a line's first records, the kubelet renames 0.log and the line ends in the
    new 0.log, all between the reader's last read and its look at the name: the reader took the
    rename for 'read to its end' and let the next file start, which sent the line's end alone; the
    first records came later and went out cut (one line as two, in 1 of ~10 full runs of the
    Kubernetes node test). It reads once more after seeing the rename, and the line is joined."""
    tree, runner, queue = _pod_runner(tmp_path, rotate_wait=1.0)
    watcher = runner.ctx.watcher
    pod = tree.add_pod("shop", "web", ("app",))
    tree.write(pod, "app", [("stdout", "line 0")])
    try:
        assert await runner.scan(start_at_end=False) == 1
        assert [m["data"] for _, m in await _messages(queue, 1)] == ["line 0"]
        tailer = runner.tailers[str(tree.log_path(pod, "app"))]
        read_to_end = FileTailer._read_to_end  # (a tailer has slots: its methods are patched on the class)
        raced = False

        async def read_then_rotate(self: FileTailer) -> None:  # the race made certain: a rename right after a read
            nonlocal raced
            await read_to_end(self)
            if self is tailer and not tailer.rotated and not raced:
                raced = True
                last = tree.write_partial(pod, "app", "stdout", "a line cut by the rotation")
                tree.rotate(pod, "app")
                tree.finish_partial(pod, "app", "stdout", "a line cut by the rotation", last)
                tree.write(pod, "app", [("stdout", "in the new file")])

        monkeypatch.setattr(FileTailer, "_read_to_end", read_then_rotate)
        tree.write(pod, "app", [("stdout", "line 1")])
        tailer.wake()
        await eventually(lambda: tailer.rotated, what="the rename seen")
        await runner.scan(start_at_end=False)  # the new 0.log, while the old one is still open
        got = [m["data"] for _, m in await _messages(queue, 3)]
        assert got == ["line 1", "a line cut by the rotation", "in the new file"]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(queue.get(), 0.3)
    finally:
        await runner.stop()
        await watcher.stop()


async def test_a_scan_of_many_new_files_lets_the_event_loop_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The first scan of a glob over 100,000 files held the event loop for its whole start (36-70 s:
    no /metrics, no /readyz, no other file read). A scan now gives the loop a turn every
    YIELD_EVERY files it starts: a task on the loop sees the scan part way through. (10 files a turn
    here: a scan of 1,500 files filled the per-file metric series' cap for the tests after it.)"""
    from logagent.sources.files import manager
    monkeypatch.setattr(manager, "YIELD_EVERY", 10)
    logs = tmp_path / "logs"
    logs.mkdir()
    files = 30
    for i in range(files):
        (logs / f"f{i:05d}.log").touch()
    watcher = new_watcher()
    ctx = ManagerContext(opts=TailOptions(ip="127.0.0.1", host="h"), queue=BatchQueue(100),
                         registry=Registry(tmp_path / "data"), budget=FdBudget(64),
                         allowed_paths=(f"{tmp_path}/**",), watcher=watcher, max_files_per_entry=files)
    runner = EntryRunner(CollectEntry(str(logs / "*.log"), "t"), ctx)
    seen: set[int] = set()  # how many files ran, at each turn of the loop during the scan
    scanning = True

    async def look() -> None:
        while scanning:
            seen.add(len(runner.tailers))
            await asyncio.sleep(0)

    try:
        watching = asyncio.create_task(look())
        started = await runner.scan()
        scanning = False
        await watching
        assert started == files
        part_way = sorted(n for n in seen if 0 < n < files)
        assert len(part_way) >= 2, f"the loop turned only before and after the {files} starts: {sorted(seen)}"
    finally:
        scanning = False
        await runner.stop()
        await watcher.stop()


def _rotated_twice(log: Path) -> list[tuple[int, int]]:
    """g0 (the file at the path) renamed to app.log.2, g1 written and renamed to app.log.1, g2 written:
    their (device, inode), oldest first."""
    files = []
    for gen, rotated in ((1, ".2"), (2, ".1")):
        st = os.stat(log)
        files.append((st.st_dev, st.st_ino))
        os.rename(log, log.with_name(log.name + rotated))
        log.write_text(f"g{gen} line 1\n")
    st = os.stat(log)
    return [*files, (st.st_dev, st.st_ino)]


def _assert_first_seen_in_order(registry: Registry, log: Path, files: list[tuple[int, int]]) -> None:
    """The path's registry entries, by first-seen time, are `files` in that order (a later recovery
    orders a path's known files so)."""
    since = {(e.dev, e.ino): e.since for _, e in registry.entries_for(str(log))}
    assert sorted(since, key=lambda k: since[k]) == files, since


async def test_an_earlier_file_first_seen_at_a_start_is_ordered_before_the_file_it_precedes(tmp_path: Path):
    """At a start the file now at the path is opened first, then the earlier files are looked for:
    one never seen (rotated while the agent was down) got its first-seen time after the current
    file's. Recovery orders a path's known files by first-seen time, so a restart before it was
    read sent the newer file first: lines out of order (exactly_once's kill -9 x20 test under
    stress-ng: 4 of 4 runs). Its first-seen time is now between the known file's and the current's."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_text("g0 line 1\ng0 line 2\n")

    def ctx_with(registry: Registry) -> ManagerContext:
        return ManagerContext(opts=TailOptions(ip="127.0.0.1", host="h"), queue=BatchQueue(100), registry=registry,
                              budget=FdBudget(64), allowed_paths=(f"{tmp_path}/**",), watcher=new_watcher())

    first = ctx_with(Registry(tmp_path / "data"))
    runner = EntryRunner(CollectEntry(str(log), "t"), first)
    await runner.scan()  # g0 is seen (nothing acknowledged: it owes its lines)
    await runner.stop()
    await first.registry.persist()
    await first.watcher.stop()
    await asyncio.sleep(0.01)
    files = _rotated_twice(log)  # while the agent is down
    registry = Registry(tmp_path / "data")
    registry.load()
    second = ctx_with(registry)
    runner = EntryRunner(CollectEntry(str(log), "t"), second)
    try:
        await runner.scan()
        _assert_first_seen_in_order(registry, log, files)
    finally:
        await runner.stop()
        await second.watcher.stop()


async def test_a_file_never_seen_found_beside_a_running_reader_is_ordered_after_its_file(tmp_path: Path):
    """app.log is read; before the rename is seen, it is renamed and the next file is written and
    renamed too: that one, never seen, got a first-seen time from the current file's alone (a second
    before it), earlier than the file still being read. A restart ordered it first, and joined the
    line it ends with to the older file's first line (kill -9 with kubelet rotation, 1 in 2 runs)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_text("g0 line 1\n")
    ctx = ManagerContext(opts=TailOptions(ip="127.0.0.1", host="h"), queue=BatchQueue(100),
                         registry=Registry(tmp_path / "data"), budget=FdBudget(64),
                         allowed_paths=(f"{tmp_path}/**",), watcher=new_watcher())
    runner = EntryRunner(CollectEntry(str(log), "t"), ctx)
    try:
        await runner.scan()
        await asyncio.sleep(0.01)
        files = _rotated_twice(log)  # before the rename is seen
        runner.tailers[str(log)].check_name()  # the rename seen: g2 opens, g1 is found
        await eventually(lambda: str(log) in runner.tailers, what="the next file opened")
        _assert_first_seen_in_order(ctx.registry, log, files)
    finally:
        await runner.stop()
        await ctx.watcher.stop()


async def test_files_rotated_on_while_the_next_file_is_opened_are_read_once_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The kubelet renames 0.log; the runner opens the new 0.log, and before it lists the folder for
    the files rotated before that one, the kubelet renames it too (compressing the one before), and
    the next one after it. The newer file was read before it (out of order) and its compressed copy
    as a file never seen (its lines twice), found by a run of 180 pods (1 in 10) and the running-rotation
    integration test (1 in 5 full runs under load). Every line once, in the order written."""
    from logagent.sources.files.recovery import FolderIndex

    tree, runner, queue = _pod_runner(tmp_path, rotate_wait=0.5)
    watcher = runner.ctx.watcher
    pod = tree.add_pod("shop", "web", ("app",))

    def lines(gen: int) -> list[tuple[str, str]]:
        return [("stdout", f"gen {gen} line {i}") for i in range(20)]

    tree.write(pod, "app", lines(0))
    listing = FolderIndex.files
    racing = {"on": True}

    def rotated_on(self: FolderIndex, folder: str) -> list[tuple[str, os.stat_result]]:
        if racing.pop("on", False):  # between the open of the new 0.log and this listing
            tree.rotate(pod, "app")
            tree.write(pod, "app", lines(2))
            tree.rotate(pod, "app")  # the one opened is compressed now: read through its descriptor
            tree.write(pod, "app", lines(3))
        return listing(self, folder)

    try:
        await watcher.start()
        assert await runner.scan(start_at_end=False) == 1
        assert [m["data"] for _, m in await _messages(queue, 20)] == [f"gen 0 line {i}" for i in range(20)]
        tree.rotate(pod, "app")
        tree.write(pod, "app", lines(1))
        monkeypatch.setattr(FolderIndex, "files", rotated_on)
        runner.tailers[str(tree.log_path(pod, "app"))].check_name()  # the rename seen: the next file opens
        got = [m["data"] for _, m in await _messages(queue, 60)]
        assert not racing, "the rotations raced the listing"
        assert any(p.name.endswith(".gz") for p in tree.root.rglob("*"))
        assert got == [f"gen {g} line {i}" for g in (1, 2, 3) for i in range(20)]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(queue.get(), 1.0)
    finally:
        await runner.stop()
        await watcher.stop()


@pytest.mark.parametrize("joined", [True, False], ids=["sent_whole", "sent_alone"])
async def test_a_line_sent_whole_before_a_restart_is_not_sent_again_cut(tmp_path: Path, joined: bool):
    """A line's first records end 0.log's earlier file, its last record begins the next; the agent
    sent it whole, the next file's offset was saved past it, the earlier file's not yet, and the agent
    was killed. At the restart the earlier file is read again, and its partial line, which the next
    file (resumed past its first records) could not take, went out cut: a piece of a line sent twice
    (kill -9 with kubelet rotation, 2 of 42 runs). It is not sent again; the earlier file's other
    lines are (at least once). But when the next file's first records went out on their own (it was
    read before the earlier file was known), the earlier file's part of the line is sent, cut: it was
    dropped as "sent whole", never sent at all (the registry now says which of the two it was)."""
    from tests.kit import file_fingerprint

    tree = PodTree(tmp_path / "pods")
    pod = tree.add_pod("shop", "web", ("app",))
    tree.write(pod, "app", [("stdout", "line 1"), ("stdout", "line 2")])
    last = tree.write_partial(pod, "app", "stdout", "a line cut by the rotation")
    earlier = tree.rotate(pod, "app")
    tree.finish_partial(pod, "app", "stdout", "a line cut by the rotation", last)
    tree.write(pod, "app", [("stdout", "line 3")])
    live = tree.log_path(pod, "app")
    reg = Registry(tmp_path / "data")
    past_first = live.read_bytes().index(b"\n") + 1  # acknowledged: the line's last record
    for f, offset in ((earlier, 0), (live, past_first)):
        st = f.stat()
        fp, fp_len = file_fingerprint(f)
        key = reg.update(st.st_dev, st.st_ino, str(live), offset, fp, fp_len, size=st.st_size)
    if joined:
        reg.mark_joined(key)
    reg.save()
    reg = Registry(tmp_path / "data")  # as a restart finds it
    reg.load()
    queue = BatchQueue(1000)
    ctx = ManagerContext(opts=TailOptions(ip="127.0.0.1", host="node-1"), queue=queue, registry=reg,
                         budget=FdBudget(64), allowed_paths=(f"{tmp_path}/**",), watcher=new_watcher())
    runner = EntryRunner(CollectEntry(str(tree.root / "*" / "*" / "*.log"), "k8s", format="cri"), ctx)
    try:
        assert await runner.scan() == 1
        if joined:
            got = [m["data"] for _, m in await _messages(queue, 3)]
            assert got == ["line 1", "line 2", "line 3"]
        else:
            got = [m["data"] for _, m in await _messages(queue, 4)]
            assert got[:2] == ["line 1", "line 2"] and got[3] == "line 3"
            assert "a line cut by the rotation".startswith(str(got[2])) and got[2] != "a line cut by the rotation"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(queue.get(), 0.5)
    finally:
        await runner.stop()
        await ctx.watcher.stop()


async def test_a_rename_in_the_tick_of_the_last_walk_still_opens_the_new_file(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch):
    """A glob's folder whose stamps have not moved since a walk that found every match running is
    not walked again. A rename in the tick of that walk left the stamps as they were: the rotated
    file's name was never opened again (its last round lost, 4 files in 1 of ~35 churn runs). A
    match that stops running (a rotation) makes the next scan walk."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_text("g0 line 1\n")
    frozen = os.stat(logs)
    real_stat = os.stat

    def same_tick(path: object, *args: object, **kw: object) -> os.stat_result:
        return frozen if str(path) == str(logs) else real_stat(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", same_tick)  # the folder's stamps never move
    monkeypatch.setattr(time, "time_ns", lambda: frozen.st_ctime_ns + 10**9)  # and look old
    ctx = ManagerContext(opts=TailOptions(ip="127.0.0.1", host="h"), queue=BatchQueue(100),
                         registry=Registry(tmp_path / "data"), budget=FdBudget(64),
                         allowed_paths=(f"{tmp_path}/**",), watcher=new_watcher())
    runner = EntryRunner(CollectEntry(str(logs / "*.log"), "t"), ctx)
    try:
        assert await runner.scan() == 1
        assert runner._quiet_stamp is not None
        first = runner.tailers[str(log)]
        os.rename(log, logs / "app.log.1")
        log.write_text("g1 line 1\n")
        first.check_name()  # the rename seen
        await eventually(lambda: str(log) in runner.tailers, what="the new app.log opened")
        assert runner.tailers[str(log)] is not first
    finally:
        await runner.stop()
        await ctx.watcher.stop()


# ---------------------------------------------------------------------------- an entry stopped midway

def _plain_ctx(tmp_path: Path, queue: BatchQueue) -> ManagerContext:
    return ManagerContext(opts=TailOptions(ip="127.0.0.1", host="h"), queue=queue,
                          registry=Registry(tmp_path / "data"), budget=FdBudget(64),
                          allowed_paths=(f"{tmp_path}/**",), watcher=new_watcher())


def _fill(queue: BatchQueue, capacity: int) -> Batch:
    """Take every place in the queue (the reader of a file then waits to put its lines)."""
    blocker = Batch("other", None, [b"x"] * capacity)
    queue.put_nowait(blocker)
    return blocker


async def _data(queue: BatchQueue, count: int) -> list[object]:
    return [m["data"] for _, m in await _messages(queue, count)]


def _hundred_lines(tmp_path: Path) -> tuple[Path, BatchQueue, ManagerContext, CollectEntry]:
    """logs/app.log with 100 lines, a queue of 1,000 places, a context and the glob logs/*.log."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("".join(f"first {i}\n" for i in range(100)))
    queue = BatchQueue(1000)
    return logs, queue, _plain_ctx(tmp_path, queue), CollectEntry(str(logs / "*.log"), "t")


def _rotate(logs: Path) -> None:
    os.rename(logs / "app.log", logs / "app.log.1")
    (logs / "app.log").write_text("second 0\n")


async def _next_entry_reads_it_all(ctx: ManagerContext, queue: BatchQueue, entry: CollectEntry) -> None:
    """The queue emptied of the blocker, an entry started anew reads app.log.1 whole, then app.log."""
    assert queue.get_nowait() is not None and queue.empty()
    runner = EntryRunner(entry, ctx)
    try:
        await runner.scan()
        assert await _data(queue, 101) == [f"first {i}" for i in range(100)] + ["second 0"]
    finally:
        await runner.stop()
        await ctx.watcher.stop()


async def test_an_earlier_file_an_entry_stopped_before_reading_is_read_by_the_next(tmp_path: Path):
    """etcd changed the collect list (one entry stopped, another started for the same files) while an
    earlier file of a path waited to be read: its reader kept the file as its own after it was
    stopped, so no later plan of this process read it (350 of a file's 400 lines never sent in the
    churn test with etcd changes, until a restart). The next entry reads it."""
    logs, queue, ctx, glob = _hundred_lines(tmp_path)
    first = EntryRunner(glob, ctx)
    try:
        await first.scan()
        assert len(await _data(queue, 100)) == 100  # read; no Kafka here: never acknowledged
    finally:
        await first.stop()
    _rotate(logs)
    _fill(queue, 1000)
    second = EntryRunner(CollectEntry(str(logs / "app*.log"), "t"), ctx)
    try:
        await second.scan()  # plans app.log.1 before app.log; its reader waits for room in the queue
        await eventually(lambda: len(second.draining) == 1, what="the earlier file's reader")
    finally:
        await second.stop()
    await _next_entry_reads_it_all(ctx, queue, glob)


async def test_a_rotated_file_an_entry_stopped_before_its_end_is_read_by_the_next(tmp_path: Path):
    """The same for a file rotated away while its tailer waited for room: stopped before its end, it
    stayed the stopped tailer's, and its lines were never read again in this process."""
    logs, queue, ctx, glob = _hundred_lines(tmp_path)
    first = EntryRunner(glob, ctx)
    _fill(queue, 1000)
    try:
        await first.scan()
        tailer = first.tailers[str(logs / "app.log")]
        await eventually(lambda: tailer.read_pos > 0, what="the file read (its lines wait for room)")
        _rotate(logs)
        tailer.check_name()
        assert tailer.rotated
    finally:
        await first.stop()
    await _next_entry_reads_it_all(ctx, queue, glob)


async def test_a_file_never_seen_is_ordered_after_the_known_ones_when_the_current_entry_is_stale(tmp_path: Path):
    """The file now at the path reused the inode number of a file first seen (empty) long before, so
    its registry entry's first-seen time was that old one's; a file never seen, found at its open, got
    a time from it: before a generation the agent had read since. A restart read the never-seen one
    first and dropped the partial line it ends with as "sent whole" (one line of 24,192 cut, pods
    with kill -9). Its time comes after every known generation of the path now."""
    from logagent.sources.files.recovery import Generation

    ctx = _plain_ctx(tmp_path, BatchQueue(10))
    registry, path = ctx.registry, str(tmp_path / "logs" / "0.log")
    registry.update(1, 10, path, 0, "", 0, since=100.0)  # the current file's inode: a stale entry, seen empty
    registry.update(1, 11, path, 500, "a" * 24, 1024, since=103.6)  # read since (its spool copy is owed)
    unseen = Generation("file", path + ".20260528-202802", 0, 104.0, 1, 12, "b" * 24, 1024, None)
    runner = EntryRunner(CollectEntry(path, "t"), ctx)
    times = runner._first_seen_before((1, 10), [unseen])
    assert times[id(unseen)] > 103.6, times


@pytest.mark.parametrize("start", ["beginning", "end"])
async def test_an_entry_read_from_the_beginning_is_on_disk_as_applied_before_its_files_are_opened(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: str):
    """A run killed right after it applied an entry and opened its files, before the registry's first
    write: the restart took the entry for new, and passed by the files rotated meanwhile (a round of
    a file lost in 1 of ~40 runs of the churn test with kill -9). Applying a new entry that reads its
    files from the beginning writes the registry first. Not one that starts at their end: known as
    applied, its files without entries would be read from their beginnings at the restart."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("")
    ctx = _plain_ctx(tmp_path, BatchQueue(100))
    opened: list[bool] = []
    real_start = EntryRunner.start

    async def start_runner(runner: EntryRunner, start_at_end: bool) -> int:
        saved = tmp_path / "data" / "registry.json"
        opened.append(saved.exists() and str(logs / "*.log") in json.loads(saved.read_bytes())["entries"])
        return await real_start(runner, start_at_end)

    monkeypatch.setattr(EntryRunner, "start", start_runner)
    manager = TailerManager(ctx)
    try:
        await manager.apply([CollectEntry(str(logs / "*.log"), "t", start=start)])
    finally:
        await manager.stop()
        await ctx.watcher.stop()
    assert opened == [start == "beginning"]


async def test_files_rotated_since_the_entry_was_applied_are_read_for_a_path_without_entries(tmp_path: Path):
    """The entry ran before, but the registry has no entry of app.log (that run was killed before it
    wrote one): app.log's files rotated since the entry was applied were written while it was
    collected, and are read before app.log, oldest first; an older rotation is history, not read."""
    logs = tmp_path / "logs"
    logs.mkdir()
    old = logs / "app.log.2"
    old.write_text("history\n")
    os.utime(old, (time.time() - 100, time.time() - 100))
    queue = BatchQueue(100)
    ctx = _plain_ctx(tmp_path, queue)
    pattern = str(logs / "*.log")
    assert not ctx.registry.entry_applied(pattern)
    time.sleep(0.01)
    (logs / "app.log.1").write_text("round 0\n")
    (logs / "app.log").write_text("round 1\n")
    runner = EntryRunner(CollectEntry(pattern, "t"), ctx)
    try:
        assert await runner.start(start_at_end=False) == 1
        assert [str(m["data"]) for _, m in await _messages(queue, 2)] == ["round 0", "round 1"]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(queue.get(), 0.5)
    finally:
        await runner.stop()
        await ctx.watcher.stop()


async def test_a_scan_asked_for_during_the_first_one_comes_after_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The first scan of a glob of 100,000 files takes seconds, yielding to the loop; the scan tick
    asked for a scan meanwhile, which ran beside it and started the files it reached first as files
    that appeared later: a start = end entry read them from their beginnings (their history shipped),
    and each was planned against the whole folder (minutes to be ready: 2 of the suite's tests timed
    out). A scan asked for during the first one is not started beside it, but after it."""
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(20):
        (logs / f"f{i:02d}.log").write_text(f"history of f{i}\n")
    queue = BatchQueue(100)
    ctx = _plain_ctx(tmp_path, queue)
    runner = EntryRunner(CollectEntry(str(logs / "*.log"), "t", start="end"), ctx)
    real = EntryRunner._start_tailer
    beside: list[bool] = []

    def start_tailer(self: EntryRunner, path: str, start_at_end: bool, announce: bool = True) -> bool:
        if not beside:
            self.request_scan()  # as the scan tick does, at any moment
            beside.append(self._scan_task is not None)
        return real(self, path, start_at_end, announce)

    monkeypatch.setattr(EntryRunner, "_start_tailer", start_tailer)
    try:
        assert await runner.start(start_at_end=True) == 20
        assert beside == [False], "a scan ran beside the first one"
        assert runner._scan_task is not None, "the scan asked for runs after the first one"
        await runner._scan_task
        await asyncio.sleep(0.3)
        assert queue.get_nowait() is None, "a file's history was read"
        assert len(runner.tailers) == 20
    finally:
        await runner.stop()
        await ctx.watcher.stop()


async def test_a_file_that_took_a_line_and_handed_on_its_own_joins_it_again_after_a_rewind(tmp_path: Path):
    """0.log rotated twice, a line split by each, all read at a start: the middle file takes the first
    line (its first record ends it) and hands the line it ends with to the current file. Kafka then
    refuses its batches (with exactly_once: its transaction aborted), and it reads again from 0: its
    first record went out as a line of its own (the line it takes was forgotten at the hand-over),
    the first line cut in two (113 lines in one churn run with kill -9 and exactly_once)."""
    tree = PodTree(tmp_path / "pods")
    entry = CollectEntry(str(tree.root / "*" / "*" / "*.log"), "k8s", format="cri")
    reg = Registry(tmp_path / "data")
    reg.entry_applied(entry.path)  # collected before the pod's files were written
    pod = tree.add_pod("shop", "web", ("app",))
    for n in (1, 2):
        tree.write(pod, "app", [("stdout", f"file {n} line")])
        text = f"a line cut by rotation {n}"
        last = tree.write_partial(pod, "app", "stdout", text)
        tree.rotate(pod, "app")
        tree.finish_partial(pod, "app", "stdout", text, last)
    tree.write(pod, "app", [("stdout", "file 3 line")])
    queue = BatchQueue(1000)
    ctx = ManagerContext(opts=TailOptions(ip="127.0.0.1", host="node-1"), queue=queue, registry=reg,
                         budget=FdBudget(64), allowed_paths=(f"{tmp_path}/**",), watcher=new_watcher())
    runner = EntryRunner(entry, ctx)
    batches = []
    try:
        assert await runner.scan() == 1
        while sum(len(b.values) for b in batches) < 5:
            batches.append(await asyncio.wait_for(queue.get(), 5))
        got = [json.loads(v)["data"] for b in batches for v in b.values]
        assert got == ["file 1 line", "a line cut by rotation 1", "file 2 line", "a line cut by rotation 2",
                       "file 3 line"]
        middle = [b for b in batches if any(json.loads(v)["data"] == "file 2 line" for v in b.values)]
        for b in middle:  # refused by Kafka: the middle file reads again from its acknowledged offset, 0
            b.error, b.remaining = "refused", 0
            assert b.owner is not None
            b.owner.batch_done(b)
        again: list[str] = []
        while len(again) < 2:
            again += [json.loads(v)["data"] for v in (await asyncio.wait_for(queue.get(), 5)).values]
        assert again == ["a line cut by rotation 1", "file 2 line"], "the line it took, whole, then its own"
    finally:
        await runner.stop()
        await ctx.watcher.stop()
