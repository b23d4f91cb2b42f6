"""File events through watchdog's observer: the watcher where inotify cannot be read on the loop.

Watchdog delivers events on its own threads; they are coalesced here and handed to the event
loop with one `call_soon_threadsafe` per burst, so a file written 20,000 times a second costs the
loop one wake-up per burst, not one per write. A watched folder that is deleted loses its watch
(watchdog stops watching it); the next subscribe watches the folder again.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Hashable

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    EventsLostEvent,
    FileAttribEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from logagent.sources.files.watcher import FileWatcher

# What a tailer or a scan acts on: growth (IN_MODIFY), a mode change (IN_ATTRIB: a file made readable),
# new names, gone names, moves, and lost events (the kernel's queue overflowed: the folder's
# listeners hear of the folder itself). Passed to watchdog as an event filter, which it turns into
# the inotify mask, so the kernel does not queue what nobody reads: a logger that opens, appends and
# closes its file for every line raised three events a line (open, modify, close-write), each a
# Python object through watchdog's threads (issue 23). DirModifiedEvent is left out too: it would add
# IN_CLOSE_WRITE, and the creations, deletions and moves it follows come as their own events.
EVENTS = [FileModifiedEvent, FileAttribEvent, FileCreatedEvent, DirCreatedEvent, FileDeletedEvent, DirDeletedEvent,
          FileMovedEvent, DirMovedEvent, EventsLostEvent]
WRITES = ("modified", "attrib")  # watchdog's event types that leave every name as it was


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: WatchdogWatcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = [event.src_path]
        dest = getattr(event, "dest_path", "")
        if dest:
            paths.append(dest)
        gone = event.event_type == "deleted" and event.is_directory
        self._watcher._from_thread([os.fsdecode(p) for p in paths], gone, event.event_type not in WRITES)


class WatchdogWatcher(FileWatcher):
    """One watchdog observer for all watched folders (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._observer: BaseObserver | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._pending: dict[str, bool] = {}  # path -> whether an event may have changed its name
        self._gone: set[str] = set()  # deleted folders: a watch on one of them is dead
        self._scheduled = False

    async def start(self) -> None:
        if self._observer is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._observer = Observer()
        self._observer.daemon = True
        self._observer.start()

    async def stop(self) -> None:
        """Stop the observer thread; safe to call twice."""
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.unschedule_all()  # first: no event may reach an emitter that is stopping
            observer.stop()
            await asyncio.to_thread(observer.join, 5)
        self._watches.clear()

    def _add(self, folder: str) -> Hashable | None:
        if self._observer is None or not os.path.isdir(folder):
            return None
        watch: ObservedWatch = self._observer.schedule(_Handler(self), folder, recursive=False, event_filter=EVENTS)
        return watch

    def _remove(self, folder: str, handle: Hashable) -> None:
        if self._observer is not None and isinstance(handle, ObservedWatch):
            try:
                self._observer.unschedule(handle)
            except (KeyError, OSError):
                pass

    def _from_thread(self, paths: list[str], gone: bool = False, named: bool = True) -> None:
        with self._lock:
            for path in paths:
                self._pending[path] = named or self._pending.get(path, False)
            if gone:
                self._gone.update(paths)
            if self._scheduled or self._loop is None:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._hand_over)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _hand_over(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            gone, self._gone = self._gone, set()
            self._scheduled = False
        for folder in gone:
            self._unwatch(folder)  # its listeners stay: the next subscribe watches it again
        self._dispatch(pending)
