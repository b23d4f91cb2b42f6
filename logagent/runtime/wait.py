"""Waiting for an asyncio.Event with a timeout, without ever losing a cancellation.

Python 3.11's `asyncio.wait_for(event.wait(), t)` returns normally when the task is cancelled in the
same loop iteration as the event is set (the inner wait's result wins; CPython gh-86296, fixed in
3.12): a loop that waits like that and is cancelled to stop goes on, and whoever awaits its end
waits for ever. `etcd control stop()` hung that way (its status writer was poked as it was cancelled).
`asyncio.timeout` (3.11+) keeps the cancellation, so every timed wait on an event goes through here.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set, at most `timeout` seconds: True when it is set, False on timeout.
    A cancellation of the waiting task always propagates."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True
