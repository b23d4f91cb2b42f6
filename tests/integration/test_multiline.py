"""Multiline events and file encodings, end to end through the real broker."""

from __future__ import annotations

import codecs
import time

from tests.kit import KafkaReader, LineWriter, check_delivery, new_topic, wait_until

JAVA_TRACE = ("java.lang.RuntimeException: wrapper\n"
              "\tat com.example.Handler.handle(Handler.java:42)\n"
              "\tat com.example.Server.run(Server.java:7)\n"
              "Caused by: java.sql.SQLException: connection reset\n"
              "\tat com.example.Db.query(Db.java:99)\n"
              "\t... 12 more\n")
PY_TRACE = ("2026-11-25 12:00:01 ERROR job crashed\n"
            "Traceback (most recent call last):\n"
            '  File "job.py", line 3, in <module>\n'
            "    run()\n"
            "ZeroDivisionError: division by zero\n")



def test_java_trace_interleaved_with_single_lines(make_agent, kafka, logdir):
    topic = new_topic("java")
    java = logdir / "java.log"
    java.write_text("")
    make_agent(files=[{"path": str(java), "topic": topic, "multiline": {"preset": "java", "timeout": 1}}])
    with open(java, "a") as f:
        f.write("single 1\n" + JAVA_TRACE + "single 2\n" + JAVA_TRACE + "single 3\n")
    trace = JAVA_TRACE.rstrip("\n")
    with KafkaReader(kafka, topic) as reader:
        reader.read(5, timeout=20)
        reader.settle(quiet=1.5)  # "single 3" is the last event: the 1 s timeout sends it
        events = reader.values()
    assert [e["data"] for e in events] == ["single 1", trace, "single 2", trace, "single 3"]
    raw = java.read_bytes()
    assert raw[events[1]["offset"]:].startswith(b"java.lang.RuntimeException")  # offset of the first line


def test_python_traceback_last_event_sent_by_timeout(make_agent, kafka, logdir):
    topic = new_topic("py")
    py = logdir / "py.log"
    py.write_text("")
    make_agent(files=[{"path": str(py), "topic": topic, "multiline": {"preset": "python", "timeout": 2}}])
    written = time.monotonic()
    with open(py, "a") as f:
        f.write("before\n" + PY_TRACE)
    with KafkaReader(kafka, topic) as reader:
        reader.read(2, timeout=20)
        waited = time.monotonic() - written
    assert reader.data() == ["before", PY_TRACE.rstrip("\n")]
    assert waited >= 1.5, "the trailing event must wait for its timeout, not be cut early"


def test_max_lines_cap_marks_truncated(make_agent, kafka, logdir):
    topic = new_topic()
    log = logdir / "cap.log"
    log.write_text("")
    make_agent(files=[{"path": str(log), "topic": topic,
                       "multiline": {"pattern": "^\\s", "match": "after", "max_lines": 3, "timeout": 1}}])
    with open(log, "a") as f:
        f.write("head\n" + "".join(f" cont {i}\n" for i in range(10)) + "next\n")
    with KafkaReader(kafka, topic) as reader:
        reader.read(2, timeout=20)
        events = reader.values()
    assert events[0]["data"] == "head\n cont 0\n cont 1" and events[0]["truncated"] is True
    assert events[1]["data"] == "next" and "truncated" not in events[1]


def test_kill9_mid_event_then_restart_event_arrives_whole(make_agent, kafka, logdir):
    topic = new_topic()
    log = logdir / "app.log"
    log.write_text("")
    files = [{"path": str(log), "topic": topic, "multiline": {"preset": "java", "timeout": 30}}]
    agent = make_agent(files=files)
    with open(log, "a") as f:
        f.write("first\n" + JAVA_TRACE[: JAVA_TRACE.index("Caused by")])  # half an event, then a crash
    with KafkaReader(kafka, topic) as reader:
        reader.read(1)
        time.sleep(1.5)  # let the registry flush the offset it is allowed to (not past the open event)
        agent.kill()
        with open(log, "a") as f:
            f.write(JAVA_TRACE[JAVA_TRACE.index("Caused by"):] + "after\n")
        agent.start()
        reader.read(2, timeout=20)  # "after" stays pending: it may still get continuation lines
        reader.settle(quiet=1.0)
        got = reader.data()
    check_delivery(["first", JAVA_TRACE.rstrip("\n")], got, max_dups=1)
    assert not any(d.startswith("Caused by") for d in got), "an event was cut in two"
    assert "from offset 6 (saved offset 6)" in agent.log_text(), "restart resumes at the open event"


def test_gbk_and_utf16le_with_bom(make_agent, kafka, logdir):
    gbk_topic, u16_topic = new_topic("gbk"), new_topic("u16")
    gbk, u16 = logdir / "gbk.log", logdir / "u16.log"
    gbk_lines = ["中文日志：第一行", "第二行 ✓ no", "三"]
    gbk_lines[1] = "第二行 含英文 text"
    u16_lines = ["héllo wörld", "ਊ\u0a0a", "日本語"]
    gbk.write_bytes("".join(x + "\n" for x in gbk_lines).encode("gbk"))
    u16.write_bytes(codecs.BOM_UTF16_LE + "".join(x + "\r\n" for x in u16_lines).encode("utf-16-le"))
    make_agent(files=[{"path": str(gbk), "topic": gbk_topic, "encoding": "gbk", "start": "beginning"},
                      {"path": str(u16), "topic": u16_topic, "encoding": "utf-16", "start": "beginning"}])
    with KafkaReader(kafka, gbk_topic) as reader:
        reader.read(3)
        assert reader.data() == gbk_lines
    with KafkaReader(kafka, u16_topic) as reader:
        reader.read(3)
        assert reader.data() == u16_lines
        assert [v["offset"] for v in reader.values()][:2] == [0, 2 + 2 * len("héllo wörld\r\n")]


def test_bad_regex_and_unknown_encoding_refused_others_run(make_agent, kafka, logdir):
    topic = new_topic()
    good = logdir / "good.log"
    good.write_text("")
    agent = make_agent(files=[{"path": str(logdir / "x.log"), "topic": topic, "multiline": {"pattern": "(["}},
                              {"path": str(logdir / "y.log"), "topic": topic, "encoding": "klingon"},
                              {"path": str(good), "topic": topic}])
    with open(good, "a") as f:
        f.write("still shipping\n")
    with KafkaReader(kafka, topic) as reader:
        reader.read(1)
        assert reader.data() == ["still shipping"]
    text = agent.log_text()
    assert "not a valid regex" in text and "unknown encoding 'klingon'" in text
    assert agent.metric("logagent_config_errors_total") == 2


def test_multiline_under_steady_load_loses_nothing(make_agent, kafka, logdir):
    topic = new_topic()
    log = logdir / "load.log"
    log.write_text("")
    make_agent(files=[{"path": str(log), "topic": topic, "multiline": {"preset": "java", "timeout": 1}}])
    writer = LineWriter(log, "ml", rate=3000).start()  # single lines: each is its own event
    time.sleep(2)
    writer.stop()
    with KafkaReader(kafka, topic) as reader:
        wait_until(lambda: reader.poll(0.5) is not None and len(reader.messages) >= writer.count,
                   timeout=30, what="all events")
        got = reader.data()
    check_delivery(writer.expected(), got)


def test_switching_multiline_on_waits_for_in_flight_lines(make_agent, kafka, etcd, logdir, tmp_path):
    """Changing how a file is read (multiline, encoding) reopens it from the acknowledged offset,
    after what was already read is acknowledged: nothing is sent twice, nothing lost."""
    import json as _json

    from logagent.config.settings import EtcdSettings
    from logagent.control.etcd_client import connect

    ip = "127.6.6.6"
    key = f"/logagent/{ip}/collect_log/config"
    topic = new_topic()
    log = logdir / "app.log"
    log.touch()
    with connect(EtcdSettings(address=(etcd,))) as kv:
        kv.put(key, _json.dumps([{"path": str(log), "topic": topic}]))
        agent = make_agent(etcd=etcd, ip=ip, extra={"kafka.producer": {"linger.ms": "1500"}})
        with open(log, "a") as f:
            f.write("".join(f"plain {i}\n" for i in range(200)))
        wait_until(lambda: agent.metric("logagent_lines_read_total") >= 200, timeout=10, what="lines read")
        kv.put(key, _json.dumps([{"path": str(log), "topic": topic,
                                  "multiline": {"preset": "java", "timeout": 0.5}}]))
        wait_until(lambda: "restarted" in agent.log_text(), timeout=20, what="the entry restarted")
    with open(log, "a") as f:
        f.write("event\n at frame\n")
    expected = [f"plain {i}" for i in range(200)] + ["event\n at frame"]
    with KafkaReader(kafka, topic) as reader:
        reader.read(201, timeout=30)
        reader.settle(quiet=1.0)
        got = reader.data()
    check_delivery(expected, got, max_dups=0)
    assert agent.stop() == 0
