"""Stop and reload signals reach a saturated event loop (issue 14, item 17).

The loop is made saturated for real: one callback keeps it busy while a thread floods
call_soon_threadsafe (as the Kafka poll thread and the file watcher do under load) until asyncio's
self-pipe is full; then the process signals itself. asyncio's loop.add_signal_handler, which the
agent used before, learns of a signal only through a byte on that full pipe and loses it
("Exception ignored when trying to write to the signal wakeup fd: BlockingIOError").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

from logagent.runtime.signals import SignalRelay

Install = Callable[[asyncio.AbstractEventLoop, dict[signal.Signals, Callable[[signal.Signals], None]]],
                   Callable[[], None]]


def relay_install(loop: asyncio.AbstractEventLoop,
                  handlers: dict[signal.Signals, Callable[[signal.Signals], None]]) -> Callable[[], None]:
    relay = SignalRelay(handlers)
    assert relay.install(loop)
    return relay.uninstall


@contextlib.contextmanager
def restored_handlers(*signals: signal.Signals) -> Iterator[None]:
    """The Python-level handlers of `signals` as they were, whatever the test installs meanwhile."""
    before = {sig: signal.getsignal(sig) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _self_pipe_full(loop: asyncio.AbstractEventLoop) -> bool:
    """True when asyncio's self-pipe (the loop's wakeup socket) takes no more bytes. One probe byte
    may land in it, which asyncio reads as one more wake-up."""
    try:
        loop._csock.send(b"\0")  # type: ignore[attr-defined]  # the precondition is about this socket
    except BlockingIOError:
        return True
    return False


async def saturate_and_signal(install: Install, signals: list[signal.Signals],
                              wait: float = 3.0) -> tuple[bool, list[signal.Signals]]:
    """Send `signals` to this process while the loop's self-pipe is full; return whether it was full
    at the first signal, and the signals the handlers saw within `wait` seconds after."""
    seen: list[signal.Signals] = []
    saturated: list[bool] = []
    loop = asyncio.get_running_loop()
    flooding = threading.Event()
    flooding.set()

    def flood() -> None:
        while flooding.is_set():
            loop.call_soon_threadsafe(lambda: None)

    def busy() -> None:
        """The loop's thread is busy here: it reads nothing from its self-pipe."""
        deadline = time.monotonic() + 5
        while not _self_pipe_full(loop) and time.monotonic() < deadline:
            time.sleep(0.005)
        saturated.append(_self_pipe_full(loop))
        for sig in signals:
            os.kill(os.getpid(), sig)
            time.sleep(0.01)
        time.sleep(0.1)

    with restored_handlers(*signals):
        uninstall = install(loop, {sig: seen.append for sig in set(signals)})
        flooder = threading.Thread(target=flood, name="flood-call-soon")
        flooder.start()
        try:
            loop.call_soon(busy)
            deadline = time.monotonic() + wait
            while len(seen) < len(signals) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:
            flooding.clear()
            flooder.join()
            uninstall()
    return bool(saturated and saturated[0]), seen


async def test_sigterm_reaches_a_saturated_loop():
    saturated, seen = await saturate_and_signal(relay_install, [signal.SIGTERM])
    assert saturated, "the test did not fill the loop's self-pipe: it proves nothing"
    assert seen == [signal.SIGTERM]


async def test_sighup_then_sigterm_reach_a_saturated_loop_in_order():
    saturated, seen = await saturate_and_signal(relay_install, [signal.SIGHUP, signal.SIGTERM])
    assert saturated
    assert seen == [signal.SIGHUP, signal.SIGTERM]


async def test_signal_on_an_idle_loop_is_handled_at_once():
    """An idle loop sleeps in select(): the relay's own wakeup socket wakes it."""
    seen: list[tuple[signal.Signals, float]] = []
    loop = asyncio.get_running_loop()
    with restored_handlers(signal.SIGHUP):
        uninstall = relay_install(loop, {signal.SIGHUP: lambda s: seen.append((s, time.monotonic()))})
        try:
            sent = time.monotonic()
            # From another thread: the loop's thread is in select() and runs no bytecode.
            threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGHUP)).start()
            await asyncio.sleep(1.0)  # one long sleep: nothing else wakes the loop
            assert seen and seen[0][0] == signal.SIGHUP
            assert seen[0][1] - sent < 0.5
        finally:
            uninstall()


async def test_uninstall_restores_handlers_and_wakeup_fd():
    def mine(signum: int, frame: object) -> None:
        pass

    with restored_handlers(signal.SIGHUP):
        signal.signal(signal.SIGHUP, mine)
        relay = SignalRelay({signal.SIGHUP: lambda s: None})
        relay.install(asyncio.get_running_loop())
        assert signal.getsignal(signal.SIGHUP) is not mine
        relay.uninstall()
        relay.uninstall()
        assert signal.getsignal(signal.SIGHUP) is mine
        assert signal.set_wakeup_fd(-1) == -1  # ours was taken back, none was set before


async def test_a_failing_handler_does_not_stop_the_next_signal(caplog):
    seen: list[signal.Signals] = []

    def broken(sig: signal.Signals) -> None:
        raise RuntimeError("handler bug")

    with restored_handlers(signal.SIGHUP, signal.SIGTERM):
        uninstall = relay_install(asyncio.get_running_loop(), {signal.SIGHUP: broken, signal.SIGTERM: seen.append})
        try:
            os.kill(os.getpid(), signal.SIGHUP)
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
        finally:
            uninstall()
    assert seen == [signal.SIGTERM]
    assert "handling SIGHUP failed" in caplog.text
