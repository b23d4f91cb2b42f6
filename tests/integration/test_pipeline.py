"""End to end: real files -> the agent process -> the real broker -> a real consumer, line by line."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from tests.kit import (
    AgentProcess,
    KafkaReader,
    LineWriter,
    check_delivery,
    file_fingerprint,
    new_topic,
    read_topic,
    wait_until,
)


def test_100k_lines_across_files_with_awkward_content(make_agent, kafka, logdir):
    topic = new_topic()
    paths = [logdir / f"app{i}.log" for i in range(4)]
    agent = make_agent(files=[{"path": str(logdir / "app*.log"), "topic": topic, "module": "web",
                               "fields": {"env": "test"}}],
                       extra={"agent": {"max_line_bytes": "4096"}})
    expected: dict[str, list[str]] = {str(p): [] for p in paths}
    for n, path in enumerate(paths):
        with open(path, "wb") as f:
            lines = []
            for i in range(25000):
                lines.append(f"file{n} line {i:06d} zażółć 日本語 ✓".encode())
            f.write(b"\n".join(lines) + b"\n")
            expected[str(path)] += [line.decode() for line in lines]
    special = logdir / "app0.log"
    with open(special, "ab") as f:
        f.write(b"crlf line\r\n")
        f.write(b"bad utf8 \xff\xfe end\n")
        f.write(b"nul \x00 byte\n")
        f.write(b"x" * 10000 + b"\n")
        f.write(b"after long\n")
        f.write(b"no newline yet")
    expected[str(special)] += ["crlf line", "bad utf8 \ufffd\ufffd end", "nul \x00 byte", "x" * 4096,
                               "after long"]
    total = sum(len(v) for v in expected.values())
    with KafkaReader(kafka, topic) as reader:
        reader.read(total, timeout=90)
        time.sleep(1.0)
        assert reader.poll(0.5) == 0, "the partial last line must be held until its newline"
        with open(special, "ab") as f:
            f.write(b" - completed\n")
        expected[str(special)].append("no newline yet - completed")
        reader.read(total + 1, timeout=20)
        values = reader.values()
    by_file: dict[str, list[str]] = {}
    for v in values:
        by_file.setdefault(v["path"], []).append(v["data"])
    for path, lines in expected.items():
        check_delivery(lines, by_file[path])
    long = next(v for v in values if v["data"] == "x" * 4096)
    assert long["truncated"] is True
    first = values[0]
    assert first["ip"] == "127.0.0.1" and first["host"] == "test-host"
    assert first["module"] == "web" and first["env"] == "test"
    assert first["timestamp"].endswith("Z")
    # offsets are the byte offsets of each line's start
    lines0 = [v for v in values if v["path"] == str(special)]
    raw = special.read_bytes()
    for v in lines0[:3] + lines0[-3:]:
        assert raw[v["offset"]:].startswith(v["data"].encode()[:20]) or "\ufffd" in v["data"]
    assert reader.messages[0].key() == f"127.0.0.1:{values[0]['path']}".encode()
    assert agent.metric("logagent_lines_truncated_total") == 1
    assert agent.metric("logagent_messages_delivered_total", topic=topic) == total + 1
    assert agent.stop() == 0


def test_rename_rotation_under_load(make_agent, kafka, logdir):
    topic = new_topic()
    log = logdir / "app.log"
    log.touch()
    make_agent(files=[{"path": str(log), "topic": topic}])
    writer = LineWriter(log, "rot", rate=3000).start()
    for n in range(3):
        time.sleep(0.7)
        os.rename(log, logdir / f"app.log.{n}")  # the writer reopens the name on its next burst
    time.sleep(0.7)
    writer.stop()
    got = read_topic(kafka, topic, writer.count, timeout=30, quiet=1.5)
    check_delivery(writer.expected(), got)


def test_copytruncate_and_delete_recreate(make_agent, kafka, logdir):
    topic = new_topic()
    log = logdir / "app.log"
    log.write_text("")
    agent = make_agent(files=[{"path": str(log), "topic": topic}])
    expected = [f"first {i}" for i in range(500)]
    with open(log, "a") as f:
        f.write("".join(line + "\n" for line in expected))
    with KafkaReader(kafka, topic) as reader:
        reader.read(500)
        shutil.copy(log, logdir / "app.log.1")  # copytruncate: copy, then truncate in place
        with open(log, "r+") as f:
            f.truncate(0)
        time.sleep(1.2)
        second = [f"second {i}" for i in range(300)]
        with open(log, "a") as f:
            f.write("".join(line + "\n" for line in second))
        reader.read(800)
        # counted now: once the name is gone for longer than rotate_wait, its series are forgotten
        assert agent.metric("logagent_rotations_total", kind="truncate") >= 1
        log.unlink()  # delete and recreate
        time.sleep(1.2)
        third = [f"third {i}" for i in range(200)]
        with open(log, "w") as f:
            f.write("".join(line + "\n" for line in third))
        reader.read(1000)
        reader.settle(quiet=1.5)
        got = reader.data()
    check_delivery(expected + second + third, got)

    def deleted_fds() -> list[str]:
        fd_dir = Path(f"/proc/{agent.proc.pid}/fd")
        out = []
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.endswith("(deleted)") and str(logdir) in target:
                out.append(target)
        return out

    # the deleted file's descriptor is closed once it is drained (rotate_wait = 1 s here)
    wait_until(lambda: not deleted_fds(), timeout=10, what="the deleted file's descriptor to close")
    assert agent.metric("logagent_files_open") == 1


def test_file_appearing_later_and_glob(make_agent, kafka, logdir):
    topic, topic2 = new_topic(), new_topic()
    missing = logdir / "later.log"
    (logdir / "sub").mkdir()
    agent = make_agent(files=[{"path": str(missing), "topic": topic},
                              {"path": str(logdir / "sub" / "*.log"), "topic": topic2}])
    assert agent.ready()
    missing.write_text("one\ntwo\n")  # a file that appears later is read from its beginning
    (logdir / "sub" / "a.log").write_text("a1\n")
    with KafkaReader(kafka, topic, topic2) as reader:
        reader.read(3)
        (logdir / "sub" / "b.log").write_text("b1\nb2\n")
        reader.read(5)
        reader.settle(quiet=1.0)
        got = sorted(reader.data())
    assert got == ["a1", "b1", "b2", "one", "two"]


def test_full_producer_queue_waits_and_loses_nothing(make_agent, kafka, logdir):
    """librdkafka's local queue cut to 50 messages: produce() keeps finding it full, the agent
    waits for acknowledgements instead of dropping, and counts each wait."""
    topic = new_topic()
    log = logdir / "burst.log"
    expected = [f"burst {i:05d} " + "y" * 80 for i in range(20_000)]
    log.write_text("".join(line + "\n" for line in expected))
    agent = make_agent(files=[{"path": str(log), "topic": topic, "start": "beginning"}],
                       extra={"kafka.producer": {"queue.buffering.max.messages": "50"}})
    with KafkaReader(kafka, topic) as reader:
        reader.read(len(expected), timeout=60)
        reader.settle(quiet=1.0)
        check_delivery(expected, reader.data())
    assert agent.metric("logagent_kafka_producer_queue_full_total") > 0
    assert agent.metric("logagent_messages_delivered_total", topic=topic) == len(expected)
    assert agent.stop() == 0


def test_file_renamed_while_closed_loses_nothing(make_agent, kafka, logdir):
    """The file is closed for inactivity; then lines are written, it is renamed away (outside
    the collected path) and written to again, and a new file takes its name. The agent finds
    the old file by inode and reads it to its end, then tails the new one."""
    topic = new_topic()
    log = logdir / "quiet.log"
    log.write_text("before 1\n")
    agent = make_agent(files=[{"path": str(log), "topic": topic, "start": "beginning"}],
                       extra={"agent": {"close_inactive": "1"}})
    with KafkaReader(kafka, topic) as reader:
        reader.read(1)
        wait_until(lambda: agent.metric("logagent_files_open") == 0, timeout=20, what="the idle file closed")
        with open(log, "a") as f:
            f.write("written while closed\n")
        rotated = logdir / "quiet.log.1"
        os.rename(log, rotated)
        with open(rotated, "a") as f:
            f.write("written after the rename\n")
        log.write_text("new file\n")
        reader.read(4, timeout=30)
        reader.settle(quiet=1.5)
        got = reader.data()
    # One file's lines in order; the new file's line is its own (another file, same name).
    assert [x for x in got if x != "new file"] == ["before 1", "written while closed", "written after the rename"]
    assert got.count("new file") == 1 and len(got) == 4
    assert agent.stop() == 0


def test_start_end_skips_existing_content(make_agent, kafka, logdir):
    topic = new_topic()
    log = logdir / "old.log"
    log.write_text("old 1\nold 2\n")
    make_agent(files=[{"path": str(log), "topic": topic}])  # start defaults to "end"
    with open(log, "a") as f:
        f.write("new 1\n")
    with KafkaReader(kafka, topic) as reader:
        reader.read(1)
        reader.settle(quiet=1.0)
        assert reader.data() == ["new 1"]


def restart_under_load(agent: AgentProcess, times: int, crash: bool) -> None:
    """Every second, `times` times: kill -9 (crash) or SIGTERM (a clean stop, which must exit 0),
    and start again 0.3 s later; then 0.5 s more of running."""
    for _ in range(times):
        time.sleep(1.0)
        if crash:
            agent.kill()
        else:
            assert agent.stop() == 0
        time.sleep(0.3)
        agent.start()
    time.sleep(0.5)


def test_kill9_and_restart_loses_nothing(loaded_agent, kafka):
    topic, agent, writer = loaded_agent("k9", 4000)
    restart_under_load(agent, 3, crash=True)
    writer.stop()
    got = read_topic(kafka, topic, writer.count, timeout=40, quiet=1.5)
    # duplicates are bounded by the registry flush interval (0.5 s here) of traffic per crash
    check_delivery(writer.expected(), got, max_dups=3 * 4000)
    assert agent.stop() == 0


def test_kill9_before_the_first_registry_flush_skips_nothing(make_agent, kafka, logdir):
    """start=end is decided once: the decision is on disk before the first line is read, so a
    crash long before the periodic flush (60 s here) does not decide again, past lines never sent."""
    topic = new_topic()
    log = logdir / "app.log"
    log.write_text("old, before the entry\n")
    agent = make_agent(files=[{"path": str(log), "topic": topic}],  # start defaults to "end"
                       extra={"agent": {"registry_flush_interval": "60"}})
    with open(log, "a") as f:
        f.write("new 1\n")
    with KafkaReader(kafka, topic) as reader:
        reader.read(1)
        agent.kill()
        with open(log, "a") as f:
            f.write("new 2, written while the agent is down\n")
        agent.start()
        reader.read(2, timeout=30)
        reader.settle(quiet=1.0)
        # "new 1" may come twice: its acknowledgement was not flushed (at-least-once)
        check_delivery(["new 1", "new 2, written while the agent is down"], reader.data(), max_dups=1)
    assert "(saved offset 22)" in agent.log_text()
    assert agent.stop() == 0


def test_sigterm_and_restart_no_loss_no_duplicates(loaded_agent, kafka):
    topic, agent, writer = loaded_agent("term", 4000)
    restart_under_load(agent, 2, crash=False)
    writer.stop()
    got = read_topic(kafka, topic, writer.count, timeout=40, quiet=1.5)
    check_delivery(writer.expected(), got, max_dups=0)
    assert agent.stop() == 0


def test_registry_is_corrupt_or_unreadable(make_agent, kafka, logdir, tmp_path):
    topic = new_topic()
    data = tmp_path / "data"
    data.mkdir()
    (data / "registry.json").write_text("{not json")
    log = logdir / "app.log"
    log.write_text("kept\n")
    agent = make_agent(files=[{"path": str(log), "topic": topic, "start": "beginning"}], data_dir=data)
    with KafkaReader(kafka, topic) as reader:
        reader.read(1)
        assert reader.data() == ["kept"]
    assert list(data.glob("registry.json.corrupt-*")), "a corrupt registry is set aside"
    assert "is corrupt" in agent.log_text()
    agent.stop()
    saved = json.loads((data / "registry.json").read_text())
    assert [f["offset"] for f in saved["files"].values()] == [5]


def test_broker_down_for_20s_loses_nothing(loaded_agent, kafka, kafka_server):
    if kafka_server is None:
        import pytest

        pytest.fail("this test stops the broker: run it against the suite's own broker")
    topic, agent, writer = loaded_agent("down", 1000)
    time.sleep(1.0)
    kafka_server.stop()
    try:
        wait_until(lambda: not agent.ready(), timeout=30, what="readyz to report Kafka down")
        time.sleep(20)
        assert agent.alive()
    finally:
        kafka_server.start()
    time.sleep(2.0)
    writer.stop()
    got = read_topic(kafka, topic, writer.count, timeout=60, quiet=1.5)
    check_delivery(writer.expected(), got, max_dups=None)
    wait_until(agent.ready, timeout=30, what="readyz after Kafka returned")
    assert agent.stop() == 0


def test_reused_inode_is_not_taken_for_the_old_file(make_agent, kafka, logdir, tmp_path):
    """A registry entry with this file's (device, inode) but another fingerprint is someone else's."""
    topic = new_topic()
    log = logdir / "app.log"
    log.write_text("alpha\nbeta\ngamma\n")
    st = log.stat()
    fp, fp_len = file_fingerprint(log)
    pattern = str(log)
    data = tmp_path / "data"
    data.mkdir()

    def registry(fp_value: str) -> None:
        files = {f"{st.st_dev}:{st.st_ino}": {"path": pattern, "offset": 6, "dev": st.st_dev, "ino": st.st_ino,
                                              "fp": fp_value, "fp_len": fp_len, "updated": time.time()}}
        (data / "registry.json").write_text(json.dumps({"version": 1, "entries": {pattern: time.time()},
                                                        "files": files}))

    registry(fp)  # same file: resume after "alpha\n"
    agent = make_agent(files=[{"path": pattern, "topic": topic}], data_dir=data)
    with KafkaReader(kafka, topic) as reader:
        reader.read(2)
        reader.settle(quiet=1.0)
        assert reader.data() == ["beta", "gamma"]
    agent.stop()

    topic2 = new_topic()
    registry("0" * 24)  # same inode, other content: a new file, read from its beginning
    agent = make_agent(files=[{"path": pattern, "topic": topic2}], data_dir=data)
    with KafkaReader(kafka, topic2) as reader:
        reader.read(3)
        reader.settle(quiet=1.0)
        assert reader.data() == ["alpha", "beta", "gamma"]
    agent.stop()
