"""The unit that flows through the pipeline: a batch of messages bound for one topic.

Sources put batches, not single lines, on the queue: one queue operation and one
loop wake-up per chunk read instead of per line. The producer tells the batch's
owner when every message in it is acknowledged (or one failed) on the event loop.
"""

from __future__ import annotations

from typing import Protocol

from confluent_kafka import KafkaError


def error_text(err: object) -> str:
    """A delivery error as one line: librdkafka's text for its errors."""
    return err.str() if isinstance(err, KafkaError) else str(err)


class BatchOwner(Protocol):
    def batch_done(self, batch: Batch) -> None:
        """Called on the event loop once every message of the batch has a delivery report."""


class Batch:
    """Messages for one topic and key, with the file offset they reach."""

    __slots__ = ("topic", "key", "values", "count", "end_offset", "owner", "generation", "remaining",
                 "error")

    def __init__(self, topic: str, key: bytes | None, values: list[bytes], end_offset: int = 0,
                 owner: BatchOwner | None = None, generation: int = 0) -> None:
        self.topic = topic
        self.key = key
        self.values = values
        self.count = len(values)  # stays when the producer drops `values` (librdkafka has copies)
        self.end_offset = end_offset
        self.owner = owner
        self.generation = generation
        self.remaining = len(values)
        self.error: object | None = None

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"Batch(topic={self.topic!r}, n={self.count}, end_offset={self.end_offset})"
