"""A polling observer that looks inside only the folders whose mtime moved.

watchdog's PollingObserver stats every file at every poll: at 100,000 photos on a NAS that
is several percent of a core, all day. A folder's mtime moves whenever an entry is added,
removed or renamed in it, so a poll here stats each folder, lists only those that moved,
and compares their files by inode, size and mtime. Files named in an event are looked at
again for a few polls (a copy still growing), but a file rewritten in place in a folder
that did not change is not seen: the daemon's periodic rescan, which stats every file,
finds it (README, "What it does not guarantee").

The events are watchdog's own kinds, as PollingObserver emits them: files and folders
created, modified, deleted, and moved (an inode gone from one listing and new in another,
within one poll). A folder deleted or moved out of sight is one event, as inotify reports
it; the daemon marks everything below it missing.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
)
from watchdog.observers.api import BaseObserver, EventEmitter, EventQueue, ObservedWatch

log = logging.getLogger(__name__)

HOT_POLLS = 6  # polls a file named in an event is still stat'ed: a copy may still be growing
RACY_NS = 2_000_000_000  # a folder changed this recently may change again within its mtime tick
_GONE = (FileNotFoundError, NotADirectoryError)

FileKey = tuple[int, int, int]  # inode, size, mtime_ns


@dataclass
class _Folder:
    """What a folder held when last listed: about 250 bytes a file."""

    mtime_ns: int
    inode: int
    files: dict[str, FileKey] = field(default_factory=dict)
    folders: dict[str, int] = field(default_factory=dict)  # name -> inode


@dataclass
class _Changes:
    """What the listings of one poll found, before it is told as events."""

    created: dict[str, tuple[bool, int]] = field(default_factory=dict)  # path -> dir?, inode
    deleted: dict[str, tuple[bool, int]] = field(default_factory=dict)
    modified: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)  # listed again


class FolderPollingEmitter(EventEmitter):
    """Polls one root every `timeout` seconds; the first listing is taken at start, before
    the daemon's reconcile walk, so that nothing slips between them."""

    def __init__(
        self,
        event_queue: EventQueue,
        watch: ObservedWatch,
        *,
        timeout: float = 1.0,
        event_filter: list[type[FileSystemEvent]] | None = None,
    ) -> None:
        super().__init__(event_queue, watch, timeout=timeout, event_filter=event_filter)
        self._root = os.fsdecode(watch.path)
        self._folders: dict[str, _Folder] = {}
        self._racy: set[str] = set()  # listed within their mtime's tick: listed again
        self._hot: dict[str, int] = {}  # file -> polls left to stat it
        self._failing = False

    def on_thread_start(self) -> None:
        self._folders = {}
        self._load(self._root)

    def queue_events(self, timeout: float) -> None:
        if self.stopped_event.wait(timeout) or not self.should_keep_running():
            return
        self.poll()

    def poll(self) -> None:
        """One look: stat every folder, list those that moved, tell what changed."""
        moved = self._moved_folders()
        if moved is None:
            return
        changes = _Changes()
        for path in moved:
            self._relist(path, changes)
        self._tell(changes)
        self._check_hot(changes)

    def _moved_folders(self) -> list[str] | None:
        moved = []
        for path, folder in self._folders.items():
            try:
                st = os.stat(path)
            except OSError as exc:
                if path != self._root:
                    continue  # its parent's listing says what became of it
                if isinstance(exc, _GONE):
                    self.queue_event(DirDeletedEvent(self._root))
                    self.stop()
                elif not self._failing:  # a share briefly away: look again next time
                    log.warning("cannot poll %s, will retry: %s", self._root, exc.strerror)
                self._failing = True
                return None
            if (st.st_mtime_ns, st.st_ino) != (folder.mtime_ns, folder.inode) or path in self._racy:
                moved.append(path)
        if self._failing:
            log.info("polling %s again", self._root)
            self._failing = False
        return moved

    def _relist(self, path: str, changes: _Changes) -> None:
        old = self._folders[path]
        try:
            new = self._list(path)
        except OSError:  # unreadable now (its mode, a failing share): not emptied
            old.mtime_ns = 0  # looked at again next poll
            return
        if new is None:
            return  # gone: its parent's listing tells
        changes.folders.append(path)
        for name, inode in new.folders.items():
            before = old.folders.get(name)
            if before == inode:
                continue
            if before is not None:
                changes.deleted[os.path.join(path, name)] = (True, before)
            elif name in old.files:
                changes.deleted[os.path.join(path, name)] = (False, old.files[name][0])
            changes.created[os.path.join(path, name)] = (True, inode)
        for name, key in new.files.items():
            before_key = old.files.get(name)
            child = os.path.join(path, name)
            if before_key is None or before_key[0] != key[0]:
                if before_key is not None:
                    changes.deleted[child] = (False, before_key[0])
                elif name in old.folders:
                    changes.deleted[child] = (True, old.folders[name])
                changes.created[child] = (False, key[0])
            elif before_key != key:
                changes.modified.append(child)
        for name, inode in old.folders.items():
            if name not in new.folders and name not in new.files:
                changes.deleted[os.path.join(path, name)] = (True, inode)
        for name, key in old.files.items():
            if name not in new.files and name not in new.folders:
                changes.deleted[os.path.join(path, name)] = (False, key[0])
        self._folders[path] = new

    def _tell(self, changes: _Changes) -> None:
        """Pair what vanished with what appeared by inode (moves), update the state, and
        queue the events: deletes first, so that a file renamed over another is news."""
        appeared: dict[tuple[bool, int], str] = {}
        for path, key in changes.created.items():
            appeared.setdefault(key, path)
        moves = [(src, appeared.pop(v)) for src, v in changes.deleted.items() if v in appeared]
        moved_from, moved_to = {src for src, _ in moves}, {dst for _, dst in moves}
        deleted = [(p, is_dir) for p, (is_dir, _) in changes.deleted.items() if p not in moved_from]
        for path, is_dir in deleted:
            if is_dir:
                self._take(path)
            self._hot.pop(path, None)
            self.queue_event(DirDeletedEvent(path) if is_dir else FileDeletedEvent(path))
        carried = {src: self._take(src) for src, dst in moves if changes.created[dst][0]}
        for src, dst in moves:
            if changes.created[dst][0]:
                for old, folder in carried[src].items():
                    self._folders[dst + old[len(src) :]] = folder
                self.queue_event(DirMovedEvent(src, dst))
            else:
                self._hot.pop(src, None)
                self.queue_event(FileMovedEvent(src, dst))
        for path in changes.modified:
            self._heat(path)
            self.queue_event(FileModifiedEvent(path))
        for path in changes.folders:
            self.queue_event(DirModifiedEvent(path))
        for path, (is_dir, _) in changes.created.items():
            if path in moved_to:
                continue
            if is_dir:
                self._load(path, tell=True)
            else:
                self._heat(path)
                self.queue_event(FileCreatedEvent(path))

    def _check_hot(self, changes: _Changes) -> None:
        """Stat again the files recently named in events, in folders that did not move."""
        told = set(changes.modified) | set(changes.created)
        for path in list(self._hot):
            if path in told:
                continue
            folder = self._folders.get(os.path.dirname(path))
            name = os.path.basename(path)
            key = folder.files.get(name) if folder is not None else None
            try:
                st = os.lstat(path)
            except OSError:
                st = None
            if key is None or st is None:  # gone: the folder's listing tells
                del self._hot[path]
                continue
            now = (st.st_ino, st.st_size, st.st_mtime_ns)
            if now[0] == key[0] and now != key and folder is not None:
                folder.files[name] = now
                self._heat(path)
                self.queue_event(FileModifiedEvent(path))
                continue
            self._hot[path] -= 1
            if self._hot[path] <= 0:
                del self._hot[path]

    def _heat(self, path: str) -> None:
        self._hot[path] = HOT_POLLS

    def _list(self, path: str) -> _Folder | None:
        """The folder as it is now; None when it is gone; OSError when it cannot be read."""
        try:
            st = os.stat(path)  # before the listing: a change during it moves the mtime again
            folder = _Folder(st.st_mtime_ns, st.st_ino)
            with os.scandir(path) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            folder.folders[entry.name] = entry.inode()
                        else:
                            es = entry.stat(follow_symlinks=False)
                            folder.files[entry.name] = (es.st_ino, es.st_size, es.st_mtime_ns)
                    except _GONE:
                        continue
        except _GONE:
            return None
        if time.time_ns() - st.st_mtime_ns < RACY_NS:
            self._racy.add(path)
        else:
            self._racy.discard(path)
        return folder

    def _load(self, top: str, tell: bool = False) -> None:
        """List `top` and every folder below it; `tell`: as created (a folder new since)."""
        pending = [top]
        while pending:
            path = pending.pop()
            try:
                folder = self._list(path)
            except OSError:  # unreadable: looked at every poll until it can be read
                self._folders[path] = _Folder(0, 0)
                continue
            if folder is None:
                continue
            self._folders[path] = folder
            if tell:
                self.queue_event(DirCreatedEvent(path))
                for name in folder.files:
                    self._heat(os.path.join(path, name))
                    self.queue_event(FileCreatedEvent(os.path.join(path, name)))
            pending.extend(
                os.path.join(path, name) for name in sorted(folder.folders, reverse=True)
            )

    def _take(self, top: str) -> dict[str, _Folder]:
        """Remove `top` and the folders below it from the state, and return them."""
        prefix = top + os.sep
        taken = {p: f for p, f in self._folders.items() if p == top or p.startswith(prefix)}
        for path in taken:
            del self._folders[path]
            self._racy.discard(path)
        for path in [h for h in self._hot if h.startswith(prefix)]:
            del self._hot[path]
        return taken


class FolderPollingObserver(BaseObserver):
    """Polls each scheduled root every `timeout` seconds (`watch.poll_interval`)."""

    def __init__(self, *, timeout: float = 10.0) -> None:
        super().__init__(FolderPollingEmitter, timeout=timeout)
