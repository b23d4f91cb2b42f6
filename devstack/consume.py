"""Print the messages of some topics as they arrive: `python -m devstack.consume TOPIC...`."""

from __future__ import annotations

import argparse
import signal
import sys
import uuid

from confluent_kafka import Consumer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("topics", nargs="+")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--from-beginning", action="store_true", default=True)
    args = parser.parse_args()
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": f"consume-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(args.topics)
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while running:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            print(f"{msg.topic()} {msg.key().decode(errors='replace') if msg.key() else ''} "
                  f"{msg.value().decode(errors='replace')}", flush=True)
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
