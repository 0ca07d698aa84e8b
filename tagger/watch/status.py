"""Where a running `tagger watch` says what it is doing, and the lock that makes it the only one.

Both files sit beside the SQLite database (`tagger.db.watch.json`, `tagger.db.watch.lock`),
so `tagger status` finds the daemon of whichever database it is pointed at. A database that
several machines share (PostgreSQL) has no file to sit beside: there each daemon locks its
folders in the database and lists itself in its `daemons` table (store/daemons.py), and its
status file, in the data directory, is named after the database and its folders.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from tagger.config import Settings
from tagger.errors import TaggerError

STATUS_INTERVAL = 2.0  # seconds between status file updates
_MODE = 0o640


@dataclass(frozen=True)
class StatusFiles:
    status: Path
    lock: Path

    @classmethod
    def of(cls, settings: Settings, roots: Sequence[Path] = ()) -> StatusFiles:
        url = make_url(settings.db_url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            # The real file: a second daemon naming it through a symlink must meet the lock.
            base = Path(os.path.realpath(str(url.database)))
        else:  # one daemon per folder: two on this machine must not share a status file
            named = "\0".join([settings.db_url, *sorted(str(root) for root in roots)])
            digest = hashlib.sha256(named.encode()).hexdigest()[:12]
            base = settings.data_dir / f"db-{digest}"
        return cls(
            base.with_name(base.name + ".watch.json"), base.with_name(base.name + ".watch.lock")
        )

    def running(self) -> bool:
        """True while some process holds the lock: the kernel drops it when that process dies."""
        if not self.lock.exists():
            return False
        with open(self.lock, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
        return False

    def read(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.status.read_text())
        except (OSError, ValueError):
            return None
        return data

    def write(self, status: dict[str, Any]) -> None:
        """Replace the status file atomically, so a reader never sees half of it."""
        tmp = self.status.with_name(self.status.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _MODE)
        with os.fdopen(fd, "w") as handle:
            json.dump(status | {"updated": time.time()}, handle)
        os.replace(tmp, self.status)


class DaemonLock:
    """An exclusive flock held for the daemon's lifetime; never stale after a crash."""

    def __init__(self, files: StatusFiles) -> None:
        self._path = files.lock
        self._fd: int | None = None

    def __enter__(self) -> DaemonLock:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, _MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise TaggerError(
                f"another `tagger watch` is already running on this database ({self._path})"
            ) from None
        self._fd = fd
        return self

    def __exit__(self, *_: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
