"""Filesystem events in: which observer watches each root, and the handler.

The handler only enqueues; the daemon's main loop turns events into work (settle.py
decides when a file is completely written).
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import re
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from tagger.config import WatchSettings
from tagger.errors import TaggerError

log = logging.getLogger(__name__)

# Filesystems where inotify does not see what other machines (or the FUSE daemon) write.
REMOTE_FILESYSTEMS = {
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p", "ceph", "glusterfs",
    "lustre", "gpfs", "davfs", "virtiofs", "fuse",
}  # fmt: skip
_INOTIFY_LIMITS = {errno.ENOSPC, errno.EMFILE}


def mount_of(path: Path, mounts: str) -> tuple[str, str]:
    """(mount point, filesystem type) of the mount holding `path`, from /proc/mounts text."""
    best = ("/", "")
    target = str(path)
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = _unescape(fields[1])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, fields[2])
    return best


def _unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal escapes ("\\040")."""
    raw = os.fsencode(field)
    raw = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), raw)
    return os.fsdecode(raw)


def remote(fstype: str) -> bool:
    return fstype in REMOTE_FILESYSTEMS or (fstype.startswith("fuse.") and fstype != "fuseblk")


def _read_mounts() -> str:
    try:
        return os.fsdecode(Path("/proc/mounts").read_bytes())
    except OSError:
        return ""


class Observers:
    """One native and/or one polling observer, each root on the kind that can see it."""

    def __init__(self, settings: WatchSettings, handler: FileSystemEventHandler) -> None:
        self._settings = settings
        self._handler = handler
        self._native: BaseObserver | None = None
        self._polling: BaseObserver | None = None
        self.kinds: dict[str, str] = {}  # root -> how it is watched, for `tagger status`

    def watch(self, root: Path, mounts: str | None = None) -> None:
        choice = self._settings.observer
        if choice == "auto":
            point, fstype = mount_of(root.resolve(), _read_mounts() if mounts is None else mounts)
            if remote(fstype):
                log.info(
                    "%s is on %s (%s): polling, as inotify misses remote writes",
                    root,
                    point,
                    fstype,
                )
                return self._poll(root, f"polling: {fstype} filesystem")
        if choice == "polling":
            return self._poll(root, "polling")
        try:
            if self._native is None:
                self._native = Observer()
                self._native.start()
            self._native.schedule(self._handler, str(root), recursive=True)
        except OSError as exc:
            if exc.errno not in _INOTIFY_LIMITS:
                raise
            if choice == "native":
                raise TaggerError(
                    f"cannot watch {root}: {exc.strerror}; raise fs.inotify.max_user_watches "
                    'or set watch.observer = "polling"'
                ) from None
            log.warning("%s: %s; polling instead", root, exc.strerror)
            return self._poll(root, "polling: inotify limit reached")
        self.kinds[str(root)] = "inotify"

    def _poll(self, root: Path, why: str) -> None:
        if self._polling is None:
            self._polling = PollingObserver(timeout=self._settings.poll_interval)
            self._polling.start()
        self._polling.schedule(self._handler, str(root), recursive=True)
        self.kinds[str(root)] = f"{why}, every {self._settings.poll_interval:g}s"

    def alive(self) -> bool:
        return all(o.is_alive() for o in (self._native, self._polling) if o is not None)

    def stop(self) -> None:
        for observer in (self._native, self._polling):
            if observer is not None:
                observer.stop()
        for observer in (self._native, self._polling):
            if observer is not None and observer.is_alive():
                observer.join(timeout=5)


class Handler(FileSystemEventHandler):
    """Puts events on a bounded queue and nothing else; a flood sets `overflowed`."""

    def __init__(self, capacity: int) -> None:
        self.events: queue.Queue[FileSystemEvent] = queue.Queue(capacity)
        self.overflowed = False

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        try:
            self.events.put_nowait(event)
        except queue.Full:
            self.overflowed = True
