"""The registry's bound (issue 20 item 6): finished entries that nothing on disk can be taken for are
forgotten (logagent/prune.py's rule, on real files), the total is capped by registry_max_entries
(oldest finished first, never a live entry), and every pruned entry is counted."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import time
from pathlib import Path

import pytest

from logagent.config.settings import load
from logagent.errors import ConfigError
from logagent.runtime import metrics
from logagent.sources.files.prune import obsolete, sweep, sweep_forever
from logagent.sources.files.registry import Registry, identity_key
from tests.kit import file_fingerprint


def pruned(reason: str) -> float:
    return float(metrics.REGISTRY_PRUNED.labels(reason)._value.get())


def finished_file(reg: Registry, path: Path, content: bytes = b"one\ntwo\n") -> str:
    """A file the agent read to its end, then saw leave its name: its finished entry's key."""
    path.write_bytes(content)
    st = path.stat()
    fp, fp_len = file_fingerprint(path)
    key = reg.update(st.st_dev, st.st_ino, str(path), len(content), fp, fp_len, size=len(content))
    reg.mark_done(key)
    return key


def no_one_busy(key: str) -> bool:
    return False


async def test_a_deleted_file_with_no_copy_in_its_folder_is_forgotten_and_counted(tmp_path: Path):
    reg = Registry(tmp_path / "data")
    before = pruned("gone")
    keys = [finished_file(reg, tmp_path / f"job-{i}.log") for i in range(5)]
    for i in range(5):
        (tmp_path / f"job-{i}.log").unlink()
    assert await sweep(reg, reg.take_fresh(), no_one_busy) == 5
    assert all(reg.get(k) is None for k in keys) and reg.entries() == {}
    assert pruned("gone") == before + 5
    reg.save()
    assert json.loads((tmp_path / "data" / "registry.json").read_bytes())["files"] == {}
    assert metrics.REGISTRY_ENTRIES._value.get() == 0


async def test_a_finished_file_still_in_its_folder_is_kept(tmp_path: Path):
    """Renamed app.log -> app.log.1: a glob that matches app.log.1 must find it by inode and resume
    at its end, not read it again."""
    reg = Registry(tmp_path / "data")
    key = finished_file(reg, tmp_path / "app.log")
    os.rename(tmp_path / "app.log", tmp_path / "rotated-away")  # not even a copy name: found by inode
    assert await sweep(reg, reg.take_fresh(), no_one_busy) == 0
    assert reg.get(key) is not None


@pytest.mark.parametrize("copy", ["app.log.1", "app.log.2.gz", "app.log-20261206", "app.log-20261206.xz"])
async def test_a_deleted_file_is_kept_while_a_copy_name_of_its_path_is_in_its_folder(tmp_path: Path, copy: str):
    """Its copy (compressed, or made by copytruncate) is told from a file never seen by the entry's
    fingerprint at the next start."""
    reg = Registry(tmp_path / "data")
    key = finished_file(reg, tmp_path / "app.log")
    if copy.endswith(".gz"):
        with gzip.open(tmp_path / copy, "wb") as f:
            f.write((tmp_path / "app.log").read_bytes())
    else:
        (tmp_path / copy).write_bytes((tmp_path / "app.log").read_bytes())
    (tmp_path / "app.log").unlink()
    (tmp_path / "app.log.bak").write_text("not a copy name\n")
    assert await sweep(reg, reg.take_fresh(), no_one_busy) == 0
    assert reg.get(key) is not None
    (tmp_path / copy).unlink()  # logrotate deleted its last copy: the next full sweep forgets it
    assert await sweep(reg, None, no_one_busy) == 1
    assert reg.get(key) is None


async def test_an_inode_that_now_holds_another_file_keeps_nothing(tmp_path: Path):
    """The deleted file's inode reused by a file the agent does not collect (its first bytes differ)."""
    reg = Registry(tmp_path / "data")
    other = tmp_path / "other.txt"
    other.write_text("some other content\n")
    st = other.stat()
    key = reg.update(st.st_dev, st.st_ino, str(tmp_path / "job.log"), 4, "f" * 24, 4, size=4)
    reg.mark_done(key)
    assert await sweep(reg, reg.take_fresh(), no_one_busy) == 1
    assert reg.get(key) is None


async def test_a_folder_that_cannot_be_listed_keeps_its_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    reg = Registry(tmp_path / "data")
    key = finished_file(reg, tmp_path / "job.log")
    (tmp_path / "job.log").unlink()
    real = os.scandir

    def refused(path):  # type: ignore[no-untyped-def]
        if str(path) == str(tmp_path):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", refused)
    assert await sweep(reg, reg.take_fresh(), no_one_busy) == 0
    assert reg.get(key) is not None


async def test_a_gone_folder_forgets_its_entries(tmp_path: Path):
    """A pod's log folder deleted with the pod."""
    pod = tmp_path / "pod-1234"
    pod.mkdir()
    reg = Registry(tmp_path / "data")
    key = finished_file(reg, pod / "0.log")
    (pod / "0.log").unlink()
    pod.rmdir()
    assert await sweep(reg, reg.take_fresh(), no_one_busy) == 1 and reg.get(key) is None


async def test_entries_a_tailer_answers_for_or_that_changed_meanwhile_stay(tmp_path: Path):
    reg = Registry(tmp_path / "data")
    busy = finished_file(reg, tmp_path / "a.log")
    changed = finished_file(reg, tmp_path / "b.log")
    (tmp_path / "a.log").unlink()
    (tmp_path / "b.log").unlink()
    from logagent.sources.files.prune import Finished

    items = [Finished.of(k, e) for k, e in reg.finished({changed})]
    found, undecided = obsolete(items)
    assert [f.key for f in found] == [changed] and undecided == []
    entry = reg.get(changed)
    assert entry is not None
    entry.updated += 1  # changed between the sweep's look and its verdict
    assert reg.prune([(f.key, f.uid, f.updated) for f in found], "gone") == 0
    assert await sweep(reg, {busy}, lambda key: key == busy) == 0
    assert reg.get(busy) is not None and reg.get(changed) is not None
    assert busy in reg.take_fresh(), "a busy entry is looked at again by the next sweep"


async def test_an_entry_whose_inode_holder_vanished_during_the_sweep_is_looked_at_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A churning folder: the listing shows a new file at a finished entry's inode number, which is
    deleted before the sweep reads its first bytes. Undecided then; that entry was dropped from the
    sweep's list and left for the full sweep 10 minutes later (2 entries left 30 s after a churn of
    600 files in a CI run). The next sweep decides: forgotten."""
    from logagent.sources.files import prune

    reg = Registry(tmp_path / "data")
    key = finished_file(reg, tmp_path / "job-1.log")
    entry = reg.get(key)
    assert entry is not None
    (tmp_path / "job-1.log").unlink()
    holder = tmp_path / "job-2.log"
    holder.write_text("another file\n")
    real_list = prune._list

    def listing_then_gone(folder: str) -> prune._Listing | None:
        listing = real_list(folder)
        assert listing is not None
        listing.ids[(entry.dev, entry.ino)] = str(holder)  # the listing saw it at the entry's inode...
        holder.unlink(missing_ok=True)  # ... and it went before its first bytes were read
        return listing

    monkeypatch.setattr(prune, "_list", listing_then_gone)
    assert await sweep(reg, reg.take_fresh(), no_one_busy) == 0
    assert reg.get(key) is not None
    monkeypatch.setattr(prune, "_list", real_list)
    assert await sweep(reg, reg.take_fresh(), no_one_busy) == 1
    assert reg.entries() == {}


async def test_the_sweep_loop_looks_at_what_finished_since_its_last_pass(tmp_path: Path):
    reg = Registry(tmp_path / "data")
    task = asyncio.create_task(sweep_forever(reg, no_one_busy, interval=0.05, full_every=3600))
    try:
        for i in range(3):
            finished_file(reg, tmp_path / f"job-{i}.log")
            (tmp_path / f"job-{i}.log").unlink()
            deadline = time.monotonic() + 5
            while reg.entries() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert reg.entries() == {}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_over_the_cap_the_oldest_finished_go_first_and_live_ones_never(tmp_path: Path):
    reg = Registry(tmp_path, max_entries=100)
    before = pruned("cap")
    for i in range(50):
        reg.update(1, i, f"/logs/live-{i}.log", 10, "fp", 2, size=20)  # unacknowledged bytes
    for i in range(50):
        reg.update(2, i, f"/logs/done-{i}.log", 10, "fp", 2, size=10)
        reg.mark_done(identity_key(2, i))
        entry = reg.lookup(2, i)
        assert entry is not None
        entry.updated = 1000.0 + i  # finished in this order (time.time() can repeat itself)
    assert len(reg.entries()) == 100
    reg.update(3, 0, "/logs/one-more.log", 0, "", 0)
    # 10 % under the cap: the 11 oldest finished went, every live one stayed.
    assert len(reg.entries()) == 90
    assert pruned("cap") == before + 11
    assert all(reg.lookup(1, i) is not None for i in range(50))
    assert [i for i in range(50) if reg.lookup(2, i) is None] == list(range(11))


def test_live_entries_over_the_cap_are_kept_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="logagent.registry")
    reg = Registry(tmp_path, max_entries=100)
    for i in range(10):
        reg.update(2, i, f"/logs/done-{i}.log", 1, "fp", 1)
        reg.mark_done(identity_key(2, i))
    for i in range(300):
        reg.update(1, i, f"/logs/live-{i}.log", 0, "", 0)
    assert len(reg.entries()) == 300 and all(reg.lookup(2, i) is None for i in range(10))
    warnings = [r.getMessage() for r in caplog.records if "registry_max_entries" in r.getMessage()]
    assert len(warnings) == 1 and "never dropped" in warnings[0], warnings


def test_a_lower_cap_on_reload_trims_and_a_load_over_the_cap_too(tmp_path: Path):
    reg = Registry(tmp_path, max_entries=1000)
    for i in range(500):
        reg.update(2, i, f"/logs/done-{i}.log", 1, "fp", 1)
        reg.mark_done(identity_key(2, i))
    reg.set_max_entries(200)
    assert len(reg.entries()) == 180
    reg.save()
    small = Registry(tmp_path, max_entries=100)
    small.load()
    assert len(small.entries()) == 90
    assert metrics.REGISTRY_ENTRIES._value.get() == 90


def test_load_counts_what_it_expires(tmp_path: Path):
    old = time.time() - 40 * 86400
    files = {"1:2": {"path": str(tmp_path / "gone.log"), "offset": 9, "dev": 1, "ino": 2, "fp": "b", "fp_len": 9,
                     "updated": old}}
    (tmp_path / "registry.json").write_text(json.dumps({"version": 1, "files": files}))
    before = pruned("expired")
    reg = Registry(tmp_path)
    reg.load()
    assert reg.entries() == {} and pruned("expired") == before + 1


def test_registry_max_entries_setting(tmp_path: Path):
    ini = tmp_path / "c.ini"
    ini.write_text("[agent]\nregistry_max_entries = 2000\n")
    assert load(ini, environ={}).agent.registry_max_entries == 2000
    assert load(None, environ={}).agent.registry_max_entries == 50_000
    assert load(ini, environ={"LOGAGENT_AGENT_REGISTRY_MAX_ENTRIES": "300"}).agent.registry_max_entries == 300
    ini.write_text("[agent]\nregistry_max_entries = 10\n")
    with pytest.raises(ConfigError, match=r"registry_max_entries = '10': expected an integer >= 100"):
        load(ini, environ={})
