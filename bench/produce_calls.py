"""What confluent-kafka's two ways of producing cost per message (issue 23, item 5).

`Producer.produce()` once per message (what the agent does) against `Producer.produce_batch()` once
per batch of dicts (confluent-kafka 2.x), each with one delivery callback object per batch (as the
agent counts acknowledgements per batch) and without any; the agent's producer settings, messages
of the agent's size built beforehand (nothing read), a poll thread as the agent runs it. CPU is the
process's, librdkafka's threads included, per message; the modes alternate, `--runs` rounds, and
the medians are printed.

    .venv/bin/python bench/produce_calls.py --bootstrap 127.0.0.1:19092 --messages 300000 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

from confluent_kafka import Producer

from logagent.sinks.kafka.batched import BatchProducer

MESSAGE = (b'{"ip":"127.0.0.1","data":"' + b"a" * 100 + b'","host":"bench-host","path":"/var/log/app/svc.log",'
           b'"offset":123456,"msgid":"127.0.0.1/2049-131-1765000000000000/123456","timestamp":"2026-12-07T00:00:00.000Z"}')
BATCH = 64
MODES = ("produce", "produce_batch", "produce, no callback", "produce_batch, no callback", "batch producer")


class Counter:
    """One batch's delivery callback, as the agent's (_Delivery): called per message."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, err: Any, msg: Any) -> None:
        self.n += 1


def run(bootstrap: str, mode: str, n: int) -> tuple[float, float]:
    """(CPU microseconds per message, messages per second) for one mode."""
    if mode == "batch producer":
        return run_batched(bootstrap, n)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4", "acks": "all",
                  "enable.idempotence": True, "queue.buffering.max.messages": 2 * n})
    topic = f"bench-produce-calls-{time.time_ns()}"
    p.produce(topic, b"warm-up")
    p.flush(30)
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            p.poll(0.1)

    poller = threading.Thread(target=poll)
    poller.start()
    values = [MESSAGE] * n
    cpu0, wall0 = time.process_time(), time.monotonic()
    for i in range(0, n, BATCH):
        chunk = values[i:i + BATCH]
        if mode == "produce":
            cb = Counter()
            for v in chunk:
                p.produce(topic, v, None, -1, cb)
        elif mode == "produce_batch":
            p.produce_batch(topic, [{"value": v} for v in chunk], on_delivery=Counter())
        elif mode == "produce, no callback":
            for v in chunk:
                p.produce(topic, v)
        else:
            p.produce_batch(topic, [{"value": v} for v in chunk])
    left = p.flush(120)
    stop.set()
    poller.join()
    if left:
        raise SystemExit(f"{mode}: {left} messages not delivered")
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    return cpu / n * 1e6, n / wall


def run_batched(bootstrap: str, n: int) -> tuple[float, float]:
    """The agent's batch producer (sinks/kafka/batched.py): a call per batch, reports folded per batch."""
    p = BatchProducer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4", "acks": "all",
                       "enable.idempotence": True, "queue.buffering.max.messages": 2 * n})
    topic = f"bench-produce-calls-{time.time_ns()}"
    p.produce(topic, None, [b"warm-up"], 0, 0)
    p.flush(30)
    p.poll(0)
    stop = threading.Event()
    acked = [0]

    def poll() -> None:
        while not stop.is_set() or acked[0] < n:
            for _token, k, err, _value in p.poll(0.1):
                if err:
                    raise SystemExit(f"batch producer: error {err}")
                acked[0] += k

    poller = threading.Thread(target=poll)
    poller.start()
    values = [MESSAGE] * n
    cpu0, wall0 = time.process_time(), time.monotonic()
    for token, i in enumerate(range(0, n, BATCH)):
        reached, err = p.produce(topic, None, values[i:i + BATCH], 0, token)
        if err or reached != min(BATCH, n - i):
            raise SystemExit(f"batch producer: stopped at {reached} ({err})")
    stop.set()
    poller.join()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    p.close()
    return cpu / n * 1e6, n / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", default="127.0.0.1:19092")
    ap.add_argument("--messages", type=int, default=300_000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    got: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
    for _ in range(a.runs):
        for mode in MODES:
            got[mode].append(run(a.bootstrap, mode, a.messages))
    print(f"| mode ({a.messages:,} messages of {len(MESSAGE)} B, {a.runs} runs) | CPU us / message (median) "
          "| messages/s (median) |")
    print("|---|---|---|")
    for mode in MODES:
        cpu = statistics.median(c for c, _ in got[mode])
        rate = statistics.median(r for _, r in got[mode])
        print(f"| {mode} | {cpu:.2f} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
