"""wait_event: a timed wait on an asyncio.Event that never loses a cancellation (runtime/wait.py)."""

from __future__ import annotations

import asyncio

from logagent.runtime.wait import wait_event


async def test_set_timeout_and_already_set():
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_event(event, 5) is True
    assert await wait_event(event, 0) is True  # set already: no wait


async def test_a_cancel_that_comes_as_the_event_is_set_stops_the_loop():
    """The stop of a loop that waits on a poke event: cancelled in the same loop iteration as the
    event is set. With asyncio.wait_for (Python 3.11) the wait returned normally, the loop went on and
    the stop waited for ever (etcd control's stop hung a full test run that way)."""
    event = asyncio.Event()
    rounds = 0

    async def writer() -> None:
        nonlocal rounds
        while True:
            await wait_event(event, 10)
            event.clear()
            rounds += 1

    for _ in range(20):
        task = asyncio.create_task(writer())
        await asyncio.sleep(0)  # it waits on the event now
        event.set()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2)
        assert task in done and task.cancelled(), "the cancellation was lost: the loop went on"
        event.clear()
    assert rounds == 0


async def test_a_cancel_during_the_wait_propagates():
    event = asyncio.Event()
    task = asyncio.create_task(wait_event(event, 10))
    await asyncio.sleep(0.01)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert task in done and task.cancelled()
