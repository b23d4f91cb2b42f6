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
