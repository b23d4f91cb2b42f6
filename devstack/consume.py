"""Print the messages of some topics as they arrive, each from its beginning.

    make consume                                # demo_log and collect_system_info
    make consume TOPICS='demo_log my_topic'     # any topics; '^demo_.*' is a regex
    python -m devstack.consume [--bootstrap HOST:PORT | --config devstack/dev.ini] TOPIC...

A topic that does not exist yet is read as soon as it is created (from its first
message), even when the other topics already flow: the consumer looks for new topics
every second instead of librdkafka's default of every 5 minutes, which is what made a
consumer started in the first seconds of `make run` miss the metrics topic.
"""

from __future__ import annotations

import argparse
import signal
import sys
import uuid

from confluent_kafka import Consumer, KafkaError

# How often (ms) the consumer asks the broker for metadata, and so finds topics created
# after it subscribed. librdkafka's default is 300000.
METADATA_REFRESH_MS = 1000


def bootstrap_of(config: str) -> str:
    """[kafka] address of a logagent config file (with its LOGAGENT_* overrides)."""
    from logagent.config import load

    return load(config).kafka.address


def make_consumer(bootstrap: str, topics: list[str]) -> Consumer:
    """A consumer of a fresh group: every topic from its beginning, new topics within a second."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"consume-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS})
    consumer.subscribe(topics)
    return consumer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topics", nargs="+", help="topic names; one starting with ^ is a regex")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--bootstrap", help="Kafka bootstrap servers (default 127.0.0.1:9092)")
    where.add_argument("--config", help="take the bootstrap servers from this config's [kafka] address")
    args = parser.parse_args(argv)
    bootstrap = args.bootstrap or (bootstrap_of(args.config) if args.config else "127.0.0.1:9092")
    consumer = make_consumer(bootstrap, args.topics)
    print(f"consume: {', '.join(args.topics)} on {bootstrap}, each from its beginning; "
          "topics created later are picked up; Ctrl-C stops", file=sys.stderr, flush=True)
    running = True
    waiting: set[str] = set()

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while running:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                code = msg.error().code()
                if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                    topic = msg.topic() or str(msg.error())
                    if topic not in waiting:  # say it once per topic, not every poll
                        waiting.add(topic)
                        print(f"consume: waiting for topic {topic} to be created", file=sys.stderr, flush=True)
                else:
                    print(f"consume: {msg.error()}", file=sys.stderr, flush=True)
                continue
            print(f"{msg.topic()} {msg.key().decode(errors='replace') if msg.key() else ''} "
                  f"{msg.value().decode(errors='replace')}", flush=True)
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
