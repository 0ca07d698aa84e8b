"""Filesystem events in: which observer watches each root, and the handler.

The handler only enqueues; the daemon's main loop turns events into work (settle.py
decides when a file is completely written).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import queue
import re
import stat
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from tagger.config import WatchSettings
from tagger.errors import TaggerError
from tagger.watch.poll import FolderPollingObserver

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


Identity = tuple[int, int, str]  # st_dev, st_ino, the id of the mount holding the folder


def read_mountinfo() -> str:
    try:
        return os.fsdecode(Path("/proc/self/mountinfo").read_bytes())
    except OSError:
        return ""


def mount_id(path: Path, mountinfo: str) -> str:
    """The id of the mount holding `path`, from /proc/self/mountinfo text ("" if unknown).
    A new mount gets a new id, even of the same disk at the same place, where the device
    and inode numbers stay the same."""
    best, found = "", ""
    target = str(path)
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = _unescape(fields[4])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):  # the last of equals is the one on top
            best, found = point, fields[0]
    return found


_STATX_MNT_ID_UNIQUE = 0x4000  # Linux 6.8: mount ids never reused
_AT_FDCWD = -100
_STATX_SIZE, _STATX_MNT_ID_AT = 256, 144  # struct statx, and where stx_mnt_id sits in it
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def unique_mount_id(path: Path) -> int | None:
    """The mount's 64-bit id that is never reused (statx), or None where the kernel has none:
    /proc/self/mountinfo's ids are reused, so a quick unmount and mount can keep the same."""
    statx = getattr(_libc, "statx", None)
    if statx is None:
        return None
    buffer = ctypes.create_string_buffer(_STATX_SIZE)
    if statx(_AT_FDCWD, os.fsencode(path), 0, _STATX_MNT_ID_UNIQUE, buffer) != 0:
        return None
    mask = int.from_bytes(buffer.raw[0:4], "little")
    if not mask & _STATX_MNT_ID_UNIQUE:
        return None
    return int.from_bytes(buffer.raw[_STATX_MNT_ID_AT : _STATX_MNT_ID_AT + 8], "little")


def identity(root: Path, mountinfo: str) -> Identity | None:
    """What tells whether `root` is still the folder that was watched (inotify stays on a
    folder renamed away, replaced or unmounted); None when `root` is not a folder now."""
    try:
        st = os.stat(root)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    unique = unique_mount_id(root)
    if unique is not None:
        return st.st_dev, st.st_ino, f"unique {unique}"
    return st.st_dev, st.st_ino, mount_id(Path(os.path.realpath(root)), mountinfo)


class Observers:
    """One native and/or one polling observer, each root on the kind that can see it."""

    def __init__(self, settings: WatchSettings, handler: FileSystemEventHandler) -> None:
        self._settings = settings
        self._handler = handler
        self._native: BaseObserver | None = None
        self._polling: BaseObserver | None = None
        self._watches: dict[str, tuple[BaseObserver, ObservedWatch]] = {}
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
            watch = self._native.schedule(self._handler, str(root), recursive=True)
            self._watches[str(root)] = (self._native, watch)
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
            self._polling = FolderPollingObserver(timeout=self._settings.poll_interval)
            self._polling.start()
        watch = self._polling.schedule(self._handler, str(root), recursive=True)
        self._watches[str(root)] = (self._polling, watch)
        self.kinds[str(root)] = f"{why}, every {self._settings.poll_interval:g}s"

    def rearm(self, root: Path) -> None:
        """Drop the watch of `root` and watch it afresh: after the folder was replaced or
        remounted, the old watch follows the dead folder and sees nothing new."""
        held = self._watches.pop(str(root), None)
        self.kinds.pop(str(root), None)
        if held is not None:
            observer, watch = held
            try:
                observer.unschedule(watch)
            except (KeyError, OSError) as exc:  # its emitter may have stopped already
                log.debug("unwatching %s: %s", root, exc)
        self.watch(root)

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
