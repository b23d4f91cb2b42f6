"""BatchQueue: bounded by messages; put waits, offer drops."""

from __future__ import annotations

import asyncio

from logagent.pipeline.batch import Batch
from logagent.pipeline.buffer import BatchQueue


def _batch(n: int) -> Batch:
    return Batch("t", None, [b"x"] * n)


async def test_put_waits_when_full_and_resumes_after_get():
    q = BatchQueue(10)
    await q.put(_batch(8))
    waiter = asyncio.create_task(q.put(_batch(5)))
    await asyncio.sleep(0.05)
    assert not waiter.done() and q.depth == 8
    assert len(await q.get()) == 8
    await asyncio.wait_for(waiter, 1)
    assert q.depth == 5


async def test_offer_refuses_when_full_and_never_waits():
    q = BatchQueue(3)
    assert q.offer(_batch(2))
    assert not q.offer(_batch(2))
    assert q.depth == 2
    assert q.offer(_batch(1))


async def test_oversized_batch_passes_an_empty_queue():
    q = BatchQueue(4)
    await asyncio.wait_for(q.put(_batch(10)), 1)
    assert q.depth == 10
    await q.get()
    assert q.empty()


async def _waiting_puts(q: BatchQueue, n: int) -> list[asyncio.Task[None]]:
    """n producers of one-message batches, all waiting for room (in this order)."""
    tasks = []
    for _ in range(n):
        tasks.append(asyncio.create_task(q.put(_batch(1))))
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    assert not any(t.done() for t in tasks)
    return tasks


async def test_a_get_wakes_one_waiting_producer_not_all_of_them():
    """10,000 files behind a full queue: each get must not wake every waiting tailer (an Event did:
    O(waiters) work per batch, the agent fell further behind the more it was behind)."""
    q = BatchQueue(1)
    await q.put(_batch(1))
    tasks = await _waiting_puts(q, 1000)
    real, looks = q._fits, [0]

    def counting_fits(n: int) -> bool:
        looks[0] += 1
        return real(n)

    q._fits = counting_fits  # type: ignore[method-assign]
    await q.get()
    await asyncio.sleep(0.01)
    assert [t.done() for t in tasks[:2]] == [True, False]
    assert looks[0] <= 5, f"{looks[0]} producers looked for room after one get"
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_waiting_producers_get_room_in_the_order_they_came_and_none_overtakes():
    q = BatchQueue(1)
    await q.put(_batch(1))
    order: list[int] = []

    async def put(i: int) -> None:
        await q.put(Batch("t", None, [str(i).encode()]))
        order.append(i)

    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(put(i)))
        await asyncio.sleep(0)
    for _ in range(5):
        await q.get()
        await asyncio.sleep(0.01)
    assert order == [0, 1, 2, 3, 4]
    await asyncio.wait_for(asyncio.gather(*tasks), 1)


async def test_a_cancelled_producer_whose_turn_came_passes_it_on():
    q = BatchQueue(1)
    await q.put(_batch(1))
    first, second = await _waiting_puts(q, 2)
    await q.get()  # first's turn...
    first.cancel()  # ...but it is cancelled before it runs
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 1)
    assert q.depth == 1


async def test_several_waiters_fill_what_one_get_frees():
    q = BatchQueue(4)
    await q.put(_batch(4))
    tasks = await _waiting_puts(q, 4)
    await q.get()
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert q.depth == 4


async def test_a_get_waits_for_a_batch_and_takes_them_in_order():
    q = BatchQueue(10)
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0.02)
    assert not getter.done() and q.get_nowait() is None
    first, second = _batch(1), _batch(2)
    q.put_nowait(first)
    q.put_nowait(second)
    assert await asyncio.wait_for(getter, 1) is first
    assert q.get_nowait() is second and q.empty() and q.depth == 0


async def test_waiting_consumers_are_served_in_the_order_they_came():
    q = BatchQueue(10)
    getters = [asyncio.create_task(q.get()) for _ in range(3)]
    await asyncio.sleep(0.02)
    batches = [_batch(1) for _ in range(3)]
    for b in batches:
        q.put_nowait(b)
    assert await asyncio.wait_for(asyncio.gather(*getters), 1) == batches
    assert q.empty()


async def test_a_cancelled_consumer_whose_turn_came_passes_the_batch_on():
    q = BatchQueue(10)
    first, second = asyncio.create_task(q.get()), asyncio.create_task(q.get())
    await asyncio.sleep(0.02)
    batch = _batch(1)
    q.put_nowait(batch)  # first's turn...
    first.cancel()  # ...but it is cancelled before it runs
    await asyncio.gather(first, return_exceptions=True)
    assert await asyncio.wait_for(second, 1) is batch
    assert q.empty()


async def test_a_consumer_cancelled_while_waiting_leaves_nothing_behind():
    q = BatchQueue(10)
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0.02)
    getter.cancel()
    await asyncio.gather(getter, return_exceptions=True)
    later = asyncio.create_task(q.get())
    await asyncio.sleep(0.02)
    batch = _batch(3)
    await q.put(batch)
    assert await asyncio.wait_for(later, 1) is batch and q.depth == 0
