"""Retry delays: the one backoff every retrying part uses (a crashed task's restart, a file
whose lines Kafka refused, an etcd connection).

Exponential with jitter: first, first*2, ... up to cap, each spread by +-jitter, so that a
fleet's agents do not retry in step after a shared outage. `reset()` after a success.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable


class Backoff:
    """Exponential delays with jitter: first, first*2, ... up to cap."""

    def __init__(self, first: float = 0.5, cap: float = 30.0, jitter: float = 0.2,
                 rand: Callable[[], float] = random.random) -> None:
        self.first, self.cap, self.jitter, self._rand = first, cap, jitter, rand
        self.failures = 0

    def next(self) -> float:
        """The delay before the next attempt (counts one more failure)."""
        base = min(self.cap, self.first * 2.0 ** min(self.failures, 30))
        self.failures += 1
        return base * (1 - self.jitter + 2 * self.jitter * self._rand())

    async def sleep(self) -> float:
        """Wait the next delay; returns it."""
        delay = self.next()
        await asyncio.sleep(delay)
        return delay

    def reset(self) -> None:
        """A success: the next failure waits `first` again."""
        self.failures = 0
