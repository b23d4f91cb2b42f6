"""[kafka] delivery = exactly_once against the real broker: transactions carry the lines and the
files' offsets (docs/delivery.md#exactly-once)."""

from __future__ import annotations

import time
from typing import Any

from tests.kit import KafkaReader, new_topic, read_all, tally, tally_delivered, wait_until

RATE = 2000


def eos(interval: str = "0.1", **kafka: str) -> dict[str, dict[str, str]]:
    """The config sections of an exactly_once agent with a topic of offsets and a transactional.id of its
    own (the tests' agents share a host id: another test's offsets would be taken for this one's files,
    and two such tests at once on one broker, as in loops beside the suite, fenced each other)."""
    return {"kafka": {"delivery": "exactly_once", "transaction_interval": interval,
                      "offsets_topic": new_topic("offsets"), "transactional_id": new_topic("txn"), **kafka}}


def _killed_three_times(loaded_agent, kafka: str, name: str, **agent_kw: object):  # type: ignore[no-untyped-def]
    """An agent under a steady writer (loaded_agent), killed -9 and started again three times; then
    the writer stops and what Kafka holds is tallied. Returns (topic, agent, writer, tally)."""
    topic, agent, writer = loaded_agent(name, RATE, **agent_kw)
    time.sleep(2)
    for _ in range(3):
        agent.kill()
        agent.start()
        time.sleep(1.5)
    writer.stop()
    return topic, agent, writer, tally_delivered(kafka, topic, writer, timeout=60)


def test_lines_and_offsets_commit_together_and_a_kill9_resends_nothing(loaded_agent, kafka):
    topic, agent, writer, t = _killed_three_times(loaded_agent, kafka, "eos", extra=eos())
    assert not t.missing and not t.unexpected and t.duplicated == 0, t.describe()
    assert agent.metric("logagent_kafka_transactions_total", outcome="committed") > 0
    with KafkaReader(kafka, topic, isolation="read_uncommitted") as reader:
        reader.read(writer.count, timeout=30)
    assert agent.stop() == 0


def test_at_least_once_duplicates_after_kill9_are_dropped_by_msgid(loaded_agent, kafka):
    """Both modes: every message carries a msgid (host id, file uid, offset) that is the same when a
    line is sent again; a consumer that keeps the first message of each msgid has every line once."""
    topic, agent, writer, t = _killed_three_times(loaded_agent, kafka, "alo-ids")
    assert not t.missing and t.duplicated > 0, t.describe()  # at least once: a kill -9 re-sends
    with KafkaReader(kafka, topic) as reader:
        reader.read(t.delivered, timeout=30)
        messages = reader.values()
    first: dict[str, str] = {}
    for m in messages:
        assert first.setdefault(m["msgid"], m["data"]) == m["data"], f"one msgid, two lines: {m['msgid']}"
        assert m["msgid"] == f"127.0.0.1/{m['msgid'].split('/')[1]}/{m['offset']}"
    d = tally(writer.expected(), list(first.values()))
    assert not d.missing and d.duplicated == 0, d.describe()
    assert agent.stop() == 0


def _key(msg: Any) -> tuple[str, int, int]:
    return msg.topic(), msg.partition(), msg.offset()


def test_sysinfo_samples_travel_in_the_transactions(loaded_agent, kafka):
    """Issue 24: sysinfo samples go in the same transactions as the lines. A read_committed consumer
    reads them; and the samples and lines of a transaction left open by a kill -9 (read_uncommitted
    saw them written) are never shown to it, even once later transactions committed past them:
    they were inside that transaction, not beside it. The lines come again, once; the samples of a
    process that died are gone, as they are in at_least_once."""
    sys_topic = new_topic("eos-sys")
    extra = eos(interval="5.0")  # the kill comes well before the next commit (seconds of margin under load)
    extra["sysinfo"] = {"enabled": "true", "topic": sys_topic, "interval": "0.2"}
    topic, agent, writer = loaded_agent("eos-sys", 200, extra=extra)
    with KafkaReader(kafka, topic, sys_topic) as done, \
            KafkaReader(kafka, topic, sys_topic, isolation="read_uncommitted") as raw:
        wait_until(lambda: done.poll(0.2) >= 0 and {m.topic() for m in done.messages} == {topic, sys_topic},
                   timeout=30, what="a committed transaction with lines and samples")
        done.settle(quiet=0.5)  # the next poll that gets anything is the next commit
        wait_until(lambda: done.poll(0.1) > 0, timeout=30, what="a commit")
        done.settle(quiet=0.5)  # all of it, in both topics (their partitions are fetched apart)
        seen = {_key(m) for m in done.messages}

        def open_transaction_has_both() -> bool:
            raw.poll(0.1)
            return {m.topic() for m in raw.messages if _key(m) not in seen} == {topic, sys_topic}

        wait_until(open_transaction_has_both, timeout=10, what="lines and samples of the next transaction written")
        agent.kill()
        uncommitted = [m for m in raw.messages if _key(m) not in seen]
        agent.start(timeout=60)
        last = max(m.offset() for m in uncommitted if m.topic() == sys_topic)
        wait_until(lambda: done.poll(0.2) >= 0 and any(m.topic() == sys_topic and m.offset() > last
                                                        for m in done.messages),
                   timeout=30, what="samples committed after the killed transaction's")
        writer.stop()
        assert agent.metric("logagent_sysinfo_samples_total") > 0
        assert agent.stop() == 0  # a clean stop commits what it read: nothing comes after
        read_all(done, writer.count, last=writer.line(writer.count - 1), quiet=0.5)
        committed = {_key(m) for m in done.messages}
        lines = [v["data"] for m, v in zip(done.messages, done.values(), strict=True) if m.topic() == topic]
        samples = [v for m, v in zip(done.messages, done.values(), strict=True) if m.topic() == sys_topic]
    shown = [m for m in uncommitted if _key(m) in committed]
    assert not shown, f"{len(shown)} messages of the killed transaction shown to read_committed"
    t = tally(writer.expected(), lines)
    assert not t.missing and not t.unexpected and t.duplicated == 0, t.describe()
    assert {s["name"] for s in samples} >= {"cpu", "mem", "system"}
