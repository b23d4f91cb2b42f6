"""Waiting on a condition: `wait_until` polls from a test's thread, `eventually` from a coroutine
(an `async def` test, run by pytest-asyncio), so the loop under test keeps running meanwhile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


class _Poll:
    """One wait: cond() polled until it returns something truthy (kept in .value); past the
    deadline a poll fails naming `what`."""

    def __init__(self, cond: Callable[[], Any], timeout: float, what: str) -> None:
        self.cond, self.timeout, self.what = cond, timeout, what
        self.deadline = time.monotonic() + timeout
        self.value: Any = None

    def done(self) -> bool:
        self.value = self.cond()
        if self.value:
            return True
        if time.monotonic() > self.deadline:
            raise AssertionError(f"timed out after {self.timeout}s waiting for {self.what}")
        return False


def wait_until(cond: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05,
               what: str = "condition") -> Any:
    """Poll cond() until it returns something truthy (returned); fail naming `what` after timeout."""
    poll = _Poll(cond, timeout, what)
    while not poll.done():
        time.sleep(interval)
    return poll.value


async def eventually(cond: Callable[[], Any], timeout: float = 3.0, interval: float = 0.01,
                     what: str = "condition") -> Any:
    """wait_until for coroutines: asyncio.sleep between the polls, so the tasks under test run."""
    poll = _Poll(cond, timeout, what)
    while not poll.done():
        await asyncio.sleep(interval)
    return poll.value
