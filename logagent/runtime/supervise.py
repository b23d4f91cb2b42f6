"""Supervised tasks: a crash is logged with its traceback, counted, and restarted with backoff.

No task dies silently ("Task exception was never retrieved") and none takes the
others down. `expected` errors (a file that cannot be opened) end a task with one line
instead of a restart; `before_restart` resets a component to its last acknowledged state;
`on_done` hears of the end of a task (a tailer's runner, to let the next file start).
Retry delays come from runtime/backoff.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from logagent.runtime import metrics
from logagent.runtime.backoff import Backoff

log = logging.getLogger("logagent.supervise")


async def supervised(name: str, kind: str, factory: Callable[[], Awaitable[None]],
                     before_restart: Callable[[], None] | None = None,
                     expected: tuple[type[BaseException], ...] = (), backoff: Backoff | None = None,
                     fatal: Callable[[BaseException], None] | None = None) -> None:
    """Run factory() until it returns; on an unexpected exception log, count, back off, restart.

    With `fatal`, a crash is not restarted: it is logged, counted and handed to `fatal` (the Kafka
    sink's drain: its death stops the agent with a non-zero exit, so the service manager restarts
    the whole process).
    Exceptions of the `expected` types end the task with a one-line log instead. A run that
    lasted longer than the backoff's cap before it crashed counts as a recovery: the next
    delay starts from the first again (a loop that crashes once a day waits 0.5 s, not 30 s).
    """
    backoff = backoff or Backoff()
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            await factory()
            return
        except asyncio.CancelledError:
            raise
        except expected as exc:
            log.warning("%s stopped: %s", name, exc)
            return
        except Exception as exc:
            if fatal is not None:
                metrics.TASK_CRASHES.labels(kind).inc()
                log.critical("%s crashed; the agent stops", name, exc_info=exc)
                fatal(exc)
                return
            if loop.time() - started > backoff.cap:
                backoff.reset()
            delay = backoff.next()
            metrics.TASK_CRASHES.labels(kind).inc()
            log.exception("%s crashed (failure %d); restarting in %.1fs from its last acknowledged state",
                          name, backoff.failures, delay)
            await asyncio.sleep(delay)
            if before_restart is not None:
                before_restart()


def spawn(name: str, kind: str, factory: Callable[[], Awaitable[None]],
          before_restart: Callable[[], None] | None = None,
          expected: tuple[type[BaseException], ...] = (),
          on_done: Callable[[asyncio.Task[None]], None] | None = None,
          backoff: Backoff | None = None, fatal: Callable[[BaseException], None] | None = None) -> asyncio.Task[None]:
    """Create a supervised task; its result is always retrieved."""
    task = asyncio.create_task(supervised(name, kind, factory, before_restart, expected, backoff, fatal), name=name)

    def done(t: asyncio.Task[None]) -> None:
        if not t.cancelled() and t.exception() is not None:  # only if supervision itself failed
            log.critical("%s: supervisor failed", name, exc_info=t.exception())
        if on_done is not None:
            on_done(t)

    task.add_done_callback(done)
    return task


async def cancel_and_wait(tasks: list[asyncio.Task[None]] | set[asyncio.Task[None]]) -> None:
    """Cancel tasks and wait until every one has ended."""
    tasks = [t for t in tasks if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
