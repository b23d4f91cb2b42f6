"""Folder watches shared by every entry runner, with listeners per folder.

A runner subscribes to the folders its files are in; an event names a path, and the listeners of
its folder hear of it on the event loop, once per path per burst, with whether the event may have
changed what the name leads to (created, deleted, moved, events lost) or only wrote to the file.
A folder that cannot be watched (missing, or the inotify limit) is simply not watched: the tailers'
stat tick and the runners' scans keep everything moving. A watched folder that is deleted loses its
watch; the next subscribe watches the folder again.

Two watchers keep these rules: `inotify.InotifyWatcher` reads the kernel's events on the loop (Linux,
the default) and `watchdog_watcher.WatchdogWatcher` takes them from watchdog's threads (where the
first cannot start). `new_watcher()` picks one.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Hashable

from logagent.runtime.names import display_name

log = logging.getLogger("logagent.watcher")

# Called on the loop with the path an event named, and whether the event may have changed what
# the name leads to (True), rather than only written to the file (False).
Listener = Callable[[str, bool], None]


class FileWatcher:
    """Listeners per folder and the warnings of folders that cannot be watched; a subclass adds and
    removes the watches themselves (`_add`, `_remove`) and calls `_dispatch` on the loop."""

    def __init__(self) -> None:
        # Tuples, replaced whole on (un)subscribe: an event iterates them with no copy, and a listener
        # that unsubscribes meanwhile does not change what that event calls.
        self._listeners: dict[str, tuple[Listener, ...]] = {}
        self._watches: dict[str, Hashable] = {}  # folder -> its watch (the subclass's handle)
        self._warned: set[str] = set()

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def _add(self, folder: str) -> Hashable | None:
        """Watch `folder`: its handle, None when it cannot be watched now and nothing is worth a
        warning (not started, not a folder); raises OSError otherwise."""
        raise NotImplementedError

    def _remove(self, folder: str, handle: Hashable) -> None:
        raise NotImplementedError

    def subscribe(self, folder: str, listener: Listener) -> bool:
        """Call listener(path, named) for events in `folder` until `unsubscribe`, and return True; or
        return False, keeping nothing, when the folder cannot be watched now (the caller polls)."""
        folder = os.path.normpath(folder)
        if folder not in self._watches and not self._watch(folder):
            return False
        current = self._listeners.get(folder, ())
        if listener not in current:
            self._listeners[folder] = (*current, listener)
        return True

    def watching(self, folder: str) -> bool:
        """True while `folder` has a watch (a folder deleted since has none: subscribe again)."""
        return os.path.normpath(folder) in self._watches

    def _watch(self, folder: str) -> bool:
        try:
            handle = self._add(folder)
        except OSError as exc:
            if folder not in self._warned:
                self._warned.add(folder)
                if exc.errno == errno.ENOSPC:
                    log.warning("inotify watch limit reached (raise fs.inotify.max_user_watches); "
                                "%s is polled every stat_interval instead", display_name(folder))
                else:
                    log.warning("cannot watch %s (%s); polling it instead", display_name(folder), exc.strerror or exc)
            return False
        if handle is None:
            return False
        self._watches[folder] = handle
        return True

    def unsubscribe(self, folder: str, listener: Listener) -> None:
        folder = os.path.normpath(folder)
        listeners = self._listeners.get(folder)
        if not listeners:
            return
        if listener in listeners:
            i = listeners.index(listener)
            listeners = listeners[:i] + listeners[i + 1:]
        if listeners:
            self._listeners[folder] = listeners
        else:
            del self._listeners[folder]
            self._unwatch(folder)

    def _unwatch(self, folder: str) -> None:
        handle = self._watches.pop(folder, None)
        if handle is not None:
            self._remove(folder, handle)

    def _dispatch(self, paths: dict[str, bool], folders: dict[str, str] | None = None) -> None:
        """On the loop: each path's folder's listeners, with whether its name may have changed
        (`folders`: each path's folder, when the caller knows it)."""
        listeners = self._listeners
        for path, named in paths.items():
            folder = folders[path] if folders is not None else os.path.dirname(path)
            targets = listeners.get(folder, ())
            own = listeners.get(path)  # an event on a watched folder itself (deleted, moved) concerns its listeners too
            if own:
                targets += own
            for listener in targets:
                try:
                    listener(path, named)
                except Exception:  # one listener's bug must not cost the others their events
                    log.exception("file event for %s: a listener failed", display_name(path))


def new_watcher() -> FileWatcher:
    """inotify read on the loop where the kernel offers it, else watchdog's observer."""
    from logagent.sources.files.inotify import InotifyWatcher, inotify_available
    from logagent.sources.files.watchdog_watcher import WatchdogWatcher

    if inotify_available():
        return InotifyWatcher()
    log.info("inotify is not available here: file events come through watchdog's observer")
    return WatchdogWatcher()
