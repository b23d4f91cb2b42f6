"""One watchdog (inotify) observer for all collected files.

Watchdog delivers events on its own thread; they are coalesced there and handed
to the event loop with one `call_soon_threadsafe` per burst, so a file written
20,000 times a second costs the loop one wake-up per burst, not one per write.
A folder that cannot be watched (missing, or the inotify limit) is simply not
watched: the tailers' stat tick and the runners' scans keep everything moving.
A watched folder that is deleted loses its watch (watchdog stops watching it); the
next subscribe watches the folder again.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
from collections import defaultdict
from collections.abc import Callable

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

from logagent.runtime.names import display_name

log = logging.getLogger("logagent.watcher")

# Called on the loop with the path an event named, and whether the event may have changed what
# the name leads to (created, deleted, moved, events lost) rather than only written to it.
Listener = Callable[[str, bool], None]
WRITES = ("modified", "attrib")  # watchdog's event types that leave every name as it was

# What a tailer or a scan acts on: growth (IN_MODIFY), a mode change (IN_ATTRIB: a file made readable),
# new names, gone names, moves, and lost events (the kernel's queue overflowed: the folder's
# listeners hear of the folder itself). Passed to watchdog as an event filter, which it turns into
# the inotify mask, so the kernel does not queue what nobody reads: a logger that opens, appends and
# closes its file for every line raised three events a line (open, modify, close-write), each a
# Python object through watchdog's threads (issue 23). DirModifiedEvent is left out too: it would add
# IN_CLOSE_WRITE, and the creations, deletions and moves it follows come as their own events.
EVENTS = [FileModifiedEvent, FileAttribEvent, FileCreatedEvent, DirCreatedEvent, FileDeletedEvent, DirDeletedEvent,
          FileMovedEvent, DirMovedEvent, EventsLostEvent]


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: FileWatcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = [event.src_path]
        dest = getattr(event, "dest_path", "")
        if dest:
            paths.append(dest)
        gone = event.event_type == "deleted" and event.is_directory
        self._watcher._from_thread([os.fsdecode(p) for p in paths], gone, event.event_type not in WRITES)


class FileWatcher:
    """Folder watches shared by every runner, with listeners per folder."""

    def __init__(self) -> None:
        self._observer: BaseObserver | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._pending: set[str] = set()  # names an event may have changed
        self._written: set[str] = set()  # names whose files were only written to
        self._gone: set[str] = set()  # deleted folders: a watch on one of them is dead
        self._scheduled = False
        self._listeners: dict[str, list[Listener]] = defaultdict(list)
        self._watches: dict[str, ObservedWatch] = {}
        self._warned: set[str] = set()

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

    def subscribe(self, folder: str, listener: Listener) -> bool:
        """Call listener(path) for events in `folder` until `unsubscribe`, and return True; or
        return False, keeping nothing, when the folder cannot be watched now (the caller polls)."""
        folder = os.path.normpath(folder)
        if folder not in self._watches and not self._watch(folder):
            return False
        if listener not in self._listeners[folder]:
            self._listeners[folder].append(listener)
        return True

    def watching(self, folder: str) -> bool:
        """True while `folder` has a watch (a folder deleted since has none: subscribe again)."""
        return os.path.normpath(folder) in self._watches

    def _watch(self, folder: str) -> bool:
        if self._observer is None or not os.path.isdir(folder):
            return False
        try:
            self._watches[folder] = self._observer.schedule(_Handler(self), folder, recursive=False,
                                                            event_filter=EVENTS)
            return True
        except OSError as exc:
            if folder not in self._warned:
                self._warned.add(folder)
                if exc.errno == errno.ENOSPC:
                    log.warning("inotify watch limit reached (raise fs.inotify.max_user_watches); "
                                "%s is polled every stat_interval instead", display_name(folder))
                else:
                    log.warning("cannot watch %s (%s); polling it instead", display_name(folder), exc.strerror or exc)
            return False

    def unsubscribe(self, folder: str, listener: Listener) -> None:
        folder = os.path.normpath(folder)
        listeners = self._listeners.get(folder)
        if not listeners:
            return
        if listener in listeners:
            listeners.remove(listener)
        if not listeners:
            del self._listeners[folder]
            self._unwatch(folder)

    def _unwatch(self, folder: str) -> None:
        watch = self._watches.pop(folder, None)
        if watch is not None and self._observer is not None:
            try:
                self._observer.unschedule(watch)
            except (KeyError, OSError):
                pass

    def _from_thread(self, paths: list[str], gone: bool = False, named: bool = True) -> None:
        with self._lock:
            (self._pending if named else self._written).update(paths)
            if gone:
                self._gone.update(paths)
            if self._scheduled or self._loop is None:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._dispatch)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _dispatch(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, set()
            written, self._written = self._written - pending, set()
            gone, self._gone = self._gone, set()
            self._scheduled = False
        for folder in gone:
            self._unwatch(folder)  # its listeners stay: the next subscribe watches it again
        for paths, named in ((pending, True), (written, False)):
            for path in paths:
                folder = os.path.dirname(path)
                for listener in list(self._listeners.get(folder, ())):
                    listener(path, named)
                # An event on a watched folder itself (deleted, moved) concerns its listeners too.
                for listener in list(self._listeners.get(path, ())):
                    listener(path, named)
