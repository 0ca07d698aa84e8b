"""When is a file completely written? Once it has had no events for
`watch.stability_delay` seconds *and* its size and mtime did not change between two looks
(a close-after-write event shortens the wait)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

Stat = tuple[int, int]


def stat_of(path: str) -> Stat | None:
    try:
        st = os.stat(path, follow_symlinks=False)  # a dangling symlink is still news
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


@dataclass
class _Pending:
    due: float
    stat: Stat | None
    written: bool  # an event said its content changed: its size and mtime prove nothing


class Settler:
    """Files that had events, each released once it has stopped changing."""

    def __init__(self, delay: float, capacity: int, clock: Callable[[], float] = time.monotonic):
        self._delay, self._capacity, self._clock = delay, capacity, clock
        self._pending: dict[str, _Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def touch(
        self, path: str, closed: bool = False, delay: float | None = None, written: bool = False
    ) -> bool:
        """Restart the wait for `path`; False when full (the caller falls back to a rescan).

        `written`: an event said the content changed (a write, a close after writing, a new
        file in its place); it stays so until the path is released."""
        before = self._pending.get(path)
        if before is None and len(self._pending) >= self._capacity:
            return False
        # After close-write one more unchanged look (next tick) is enough.
        wait = 0.0 if closed else self._delay if delay is None else delay
        written = written or (before is not None and before.written)
        self._pending[path] = _Pending(self._clock() + wait, stat_of(path), written)
        return True

    def written(self, path: str) -> bool:
        """Whether an event said the content of `path` changed since it was last released."""
        entry = self._pending.get(path)
        return entry is not None and entry.written

    def forget(self, path: str) -> None:
        """Drop `path` and, if it was a folder, everything below it."""
        prefix = path + os.sep
        for key in [k for k in self._pending if k == path or k.startswith(prefix)]:
            del self._pending[key]

    def settled(self) -> list[str]:
        """Paths that have been quiet long enough and kept their size and mtime."""
        now, ready = self._clock(), []
        for path, entry in list(self._pending.items()):
            if entry.due > now:
                continue
            current = stat_of(path)
            if current is None:  # gone before it settled: its delete event says so
                del self._pending[path]
            elif current == entry.stat:
                ready.append(path)
            else:
                entry.stat, entry.due = current, now + self._delay
        return ready

    def release(self, path: str) -> None:
        self._pending.pop(path, None)
