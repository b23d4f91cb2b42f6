"""Stop and reload signals that reach the event loop even when it is saturated.

asyncio's ``loop.add_signal_handler`` learns of a signal only through one byte that CPython's
C-level handler writes to the loop's self-pipe, the socket every ``call_soon_threadsafe`` also
writes to. The Kafka poll thread and the file watcher wake the loop that way thousands of times a
second under load; when the loop is busy that socket fills, the signal's byte is dropped ("Exception
ignored when trying to write to the signal wakeup fd: BlockingIOError") and the signal is gone: a
SIGTERM went unheard for 30 s at 10,000 busy files (issue 14, item 17).

Here the Python-level handler (``signal.signal``) records the signal. CPython runs it in the main
thread at the next bytecode boundary whatever happens to any wakeup byte, so the record cannot be
lost. It then schedules the dispatch on the loop. A wakeup fd of our own, a socket pair that
only signals write to, gets the loop out of ``select()`` when the signal landed on another thread
while the loop was idle (then the main thread runs no bytecode until something wakes it).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import signal
import socket
import threading
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

log = logging.getLogger("logagent.signals")

Handler = Callable[[signal.Signals], None]


class SignalRelay:
    """Calls handlers[sig](sig) on the event loop for each signal received; loses none.

    Handlers run on the loop thread, in arrival order, each once per delivery (the kernel itself
    merges a signal sent again before it was delivered). ``install`` must run in the main
    thread (only it may set signal handlers); ``uninstall`` puts back what was there before.
    """

    def __init__(self, handlers: Mapping[signal.Signals, Handler]) -> None:
        self._handlers = dict(handlers)
        self._received: collections.deque[signal.Signals] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: dict[signal.Signals, Any] = {}
        self._previous_wakeup = -1
        self._rsock: socket.socket | None = None
        self._wsock: socket.socket | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Take over the signals; False (and a warning) outside the main thread, where Python
        cannot receive signals at all."""
        if threading.current_thread() is not threading.main_thread():
            log.warning("not in the main thread: %s will not be handled",
                        ", ".join(s.name for s in self._handlers))
            return False
        self._loop = loop
        self._rsock, self._wsock = socket.socketpair()
        for sock in (self._rsock, self._wsock):
            sock.setblocking(False)
        loop.add_reader(self._rsock.fileno(), self._drain)
        # warn_on_full_buffer=False: a full wakeup socket loses no signal here (the Python handler
        # records it); it only means the loop already has a wake-up pending.
        self._previous_wakeup = signal.set_wakeup_fd(self._wsock.fileno(), warn_on_full_buffer=False)
        for sig in self._handlers:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return True

    def uninstall(self) -> None:
        """Restore the previous handlers and wakeup fd; signals received and not yet dispatched
        are dropped (the loop is going away). Idempotent."""
        if self._loop is None:
            return
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
        signal.set_wakeup_fd(self._previous_wakeup)
        if self._rsock is not None:
            if not self._loop.is_closed():
                self._loop.remove_reader(self._rsock.fileno())
            self._rsock.close()
        if self._wsock is not None:
            self._wsock.close()
        self._rsock = self._wsock = None
        self._loop = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Python-level handler: runs in the main thread between two bytecodes of whatever it
        interrupted (possibly the loop's own code), so it only appends to a deque (atomic) and
        schedules the dispatch; it must never raise into the interrupted code."""
        self._received.append(signal.Signals(signum))
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._dispatch)
            except RuntimeError:  # loop closed: nobody to tell any more
                pass

    def _drain(self) -> None:
        """The wakeup socket is readable: empty it, then dispatch what the handler recorded."""
        sock = self._rsock
        while sock is not None:
            try:
                if not sock.recv(4096):
                    break
            except (BlockingIOError, InterruptedError):
                break
        self._dispatch()

    def _dispatch(self) -> None:
        while self._received:
            sig = self._received.popleft()
            handler = self._handlers.get(sig)
            if handler is None:
                continue
            try:
                handler(sig)
            except Exception:  # a handler's bug must not stop the next signal's dispatch
                log.exception("handling %s failed", sig.name)
