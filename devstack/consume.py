"""Print the messages of some topics as they arrive, each from its beginning.

    make consume                                # demo_log and collect_system_info
    make consume TOPICS='demo_log my_topic'     # any topics; '^demo_.*' is a regex
    python -m devstack.consume [--bootstrap HOST:PORT | --config devstack/dev.ini] TOPIC...

Partitions are assigned by hand from the broker's topic list, checked every second: a
topic created after the consumer started is read from its first message, even while the
other topics already flow. (A consumer-group subscription looked for new topics only
every 5 minutes, so a `make consume` started in the first seconds of `make run` missed
the metrics topic; and each rebalance re-read the other topics from their beginning.)
No consumer group, so no coordinator to wait for on a broker that has just started.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

REFRESH_SECONDS = 1.0  # how often the topic list is checked for new topics and partitions


def bootstrap_of(config: str) -> str:
    """[kafka] address of a logagent config file (with its LOGAGENT_* overrides)."""
    from logagent.config.settings import load

    return load(config).kafka.address


class TopicFollower:
    """A consumer of named topics (or regexes, starting with ^), each partition from offset 0,
    that takes in topics and partitions as they appear."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        # group.id is required by librdkafka, but nothing subscribes or commits: no group forms.
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"consume-{uuid.uuid4().hex}",
                                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        self.names = {t for t in topics if not t.startswith("^")}
        self.patterns = [re.compile(t) for t in topics if t.startswith("^")]
        self.assigned: set[tuple[str, int]] = set()
        self.announced: set[str] = set()

    def _wanted(self, topic: str) -> bool:
        return topic in self.names or (not topic.startswith("__")
                                       and any(p.match(topic) for p in self.patterns))

    def refresh(self, timeout: float = 2.0) -> list[str]:
        """Assign every partition of a wanted topic not assigned yet, from its beginning.
        Returns the named topics that do not exist yet."""
        try:
            md = self.consumer.list_topics(timeout=timeout)
        except KafkaException:
            return []  # broker not answering now: try again at the next refresh
        new = [TopicPartition(name, p, OFFSET_BEGINNING)
               for name, topic in md.topics.items() if topic.error is None and self._wanted(name)
               for p in topic.partitions if (name, p) not in self.assigned]
        if new:
            self.consumer.incremental_assign(new)
            self.assigned.update((tp.topic, tp.partition) for tp in new)
        return sorted(n for n in self.names if not any(t == n for t, _ in self.assigned))

    def close(self) -> None:
        self.consumer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topics", nargs="+", help="topic names; one starting with ^ is a regex")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--bootstrap", help="Kafka bootstrap servers (default 127.0.0.1:9092)")
    where.add_argument("--config", help="take the bootstrap servers from this config's [kafka] address")
    args = parser.parse_args(argv)
    bootstrap = args.bootstrap or (bootstrap_of(args.config) if args.config else "127.0.0.1:9092")
    follower = TopicFollower(bootstrap, args.topics)
    print(f"consume: {' '.join(args.topics)} on {bootstrap}, each from its beginning; topics created "
          "later are picked up; Ctrl-C stops", file=sys.stderr, flush=True)
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    next_refresh = 0.0
    try:
        while running:
            if time.monotonic() >= next_refresh:
                for topic in follower.refresh():
                    if topic not in follower.announced:  # once per topic, not every second
                        follower.announced.add(topic)
                        print(f"consume: topic {topic} does not exist yet; it is read once it is created",
                              file=sys.stderr, flush=True)
                next_refresh = time.monotonic() + REFRESH_SECONDS
            if not follower.assigned:
                time.sleep(0.2)
                continue
            msg = follower.consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                print(f"consume: {msg.error()}", file=sys.stderr, flush=True)
                continue
            print(f"{msg.topic()} {msg.key().decode(errors='replace') if msg.key() else ''} "
                  f"{msg.value().decode(errors='replace')}", flush=True)
    finally:
        follower.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
