"""[kafka] delivery = exactly_once against the real broker: transactions carry the lines and the
files' offsets (docs/delivery.md#exactly-once)."""

from __future__ import annotations

import time

from tests.kit import KafkaReader, new_topic, tally, tally_delivered

RATE = 2000


def eos(interval: str = "0.1", **kafka: str) -> dict[str, dict[str, str]]:
    """The config sections of an exactly_once agent with a topic of offsets of its own (the tests'
    agents share a host id: another test's offsets would be taken for this one's files)."""
    return {"kafka": {"delivery": "exactly_once", "transaction_interval": interval,
                      "offsets_topic": new_topic("offsets"), **kafka}}


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
