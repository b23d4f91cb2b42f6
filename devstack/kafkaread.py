"""Reading Kafka back: a real consumer per test, from the beginning of its topics."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from devstack.waiting import wait_until


def new_topic(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class KafkaReader:
    """A real consumer reading one or more topics from the beginning.

    Partitions are assigned by hand (no group rebalances, which would re-deliver
    messages and look like duplicates); a topic that does not exist yet is assigned
    as soon as it appears.
    """

    def __init__(self, bootstrap: str, *topics: str, isolation: str = "read_committed") -> None:
        """isolation: librdkafka's default, read_committed (what aborted transactions wrote is never
        seen, what open ones wrote not yet); read_uncommitted sees every message written."""
        from confluent_kafka import Consumer

        self.consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "topic.metadata.refresh.interval.ms": 500,
            "isolation.level": isolation,
        })
        self._pending = set(topics)
        self.messages: list[Any] = []

    def _assign_new_topics(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        md = self.consumer.list_topics(timeout=2)
        ready = [t for t in self._pending if t in md.topics and md.topics[t].partitions
                 and md.topics[t].error is None]
        if ready:
            self.consumer.incremental_assign([TopicPartition(t, p, OFFSET_BEGINNING)
                                              for t in ready for p in md.topics[t].partitions])
            self._pending.difference_update(ready)

    def poll(self, seconds: float = 0.5) -> int:
        if self._pending:
            self._assign_new_topics()
            if self._pending and not self.consumer.assignment():
                time.sleep(min(seconds, 0.2))
                return 0
        got = 0
        for msg in self.consumer.consume(num_messages=10000, timeout=seconds):
            if msg.error():
                continue
            self.messages.append(msg)
            got += 1
        return got

    def read(self, count: int, timeout: float = 30.0) -> list[Any]:
        """Read until `count` messages arrived in all (or fail after timeout)."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            self.poll(0.5)
        if len(self.messages) < count:
            raise AssertionError(f"got {len(self.messages)} of {count} messages within {timeout}s")
        return self.messages

    def settle(self, quiet: float = 2.0, timeout: float = 30.0) -> list[Any]:
        """Read until nothing new arrives for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < deadline:
            if self.poll(0.3):
                last = time.monotonic()
            elif time.monotonic() - last >= quiet:
                break
        return self.messages

    def values(self) -> list[dict[str, Any]]:
        """The messages read so far, decoded (the agent's JSON message format)."""
        return [json.loads(m.value()) for m in self.messages]

    def data(self, path: str | None = None) -> list[str]:
        """The lines read so far (each message's "data"), of every file or of `path` only."""
        return [v["data"] for v in self.values() if path is None or v.get("path") == path]

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> KafkaReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 30.0, quiet: float = 1.0) -> list[str]:
    """The lines of `topic`: read until `count` messages came (fail otherwise), then until nothing
    new comes for `quiet` seconds (so duplicates are seen too)."""
    with KafkaReader(bootstrap, topic) as reader:
        reader.read(count, timeout=timeout)
        reader.settle(quiet=quiet)
        return reader.data()


def read_all(reader: KafkaReader, count: int, timeout: float = 90.0, quiet: float = 2.0,
             last: str | None = None) -> None:
    """Read until `count` messages arrived, or the line `last` did (some lines may be missing: this
    does not fail, a tally tells), then until nothing new comes for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    needle = f'"data":{json.dumps(last)}'.encode() if last is not None else None
    while len(reader.messages) < count and time.monotonic() < deadline:
        before = len(reader.messages)
        reader.poll(0.5)
        if needle is not None and any(needle in m.value() for m in reader.messages[before:]):
            break
    reader.settle(quiet=quiet, timeout=max(5.0, deadline - time.monotonic()))


def wait_delivered(reader: KafkaReader, line: str, timeout: float, what: str = "") -> float:
    """Poll until `line` is among the delivered data; returns the seconds it took."""
    t0 = time.monotonic()

    def seen() -> bool:
        reader.poll(0.3)
        return any(line in m.value().decode(errors="replace") for m in reader.messages[-5000:])

    wait_until(seen, timeout, interval=0.0, what=what or f"line {line!r} in Kafka")
    return time.monotonic() - t0
