"""The bounded, de-duplicated queue between the watcher (events, rescans) and the pipeline."""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from tagger.pipeline.runner import Item
from tagger.records import Gone, Outcome, Summary

INTAKE_CAPACITY = 256  # paths waiting for the pipeline; the decoded images are bounded there


class Intake:
    """The bounded, de-duplicated queue between the watcher and the pipeline.

    A path already queued is not queued again; one being processed is refused until it is
    done (the caller offers it again later), so a burst of events costs one pass.
    """

    def __init__(
        self, capacity: int = INTAKE_CAPACITY, clock: Callable[[], float] = time.time
    ) -> None:
        self._capacity, self._clock = capacity, clock
        self._items: deque[Item] = deque()
        self._queued: set[str] = set()
        self._busy: set[str] = set()
        self._cond = threading.Condition()
        self._closed = False
        self.summary = Summary()
        self.last_activity: float | None = None  # the clock's time of the last file done

    def offer(self, item: Item) -> bool:
        """Queue without waiting; False when full or when that path is being processed."""
        with self._cond:
            if isinstance(item, Path):
                key = str(item)
                if key in self._queued:
                    return True
                if key in self._busy or len(self._queued) >= self._capacity:
                    return False
                self._queued.add(key)
            elif isinstance(item, Gone):  # no point reading what was just deleted
                self._drop_queued(item.path)
            self._items.append(item)
            self._cond.notify_all()
            return True

    def put(self, item: Item, stop: threading.Event) -> None:
        """Queue, waiting for room (the rescan walk uses this); a path already queued or busy
        is skipped."""
        with self._cond:  # re-entrant: offer() takes it again, so no one slips in between
            while not self._closed and not stop.is_set():
                if isinstance(item, Path) and (
                    str(item) in self._busy or str(item) in self._queued
                ):
                    return
                if self.offer(item):
                    return
                self._cond.wait(0.5)

    def items(self, stop: threading.Event) -> Iterator[Item]:
        """What the pipeline reads: blocks for work, ends on stop or close."""
        while True:
            with self._cond:
                while not self._items and not self._closed and not stop.is_set():
                    self._cond.wait(0.5)
                if stop.is_set() or not self._items:
                    return
                item = self._items.popleft()
                if isinstance(item, Path):
                    self._queued.discard(str(item))
                    self._busy.add(str(item))
                self._cond.notify_all()
            yield item

    def done(self, path: str, outcome: Outcome) -> None:
        """The pipeline's report: that path is finished."""
        with self._cond:
            self._busy.discard(path)
            self.summary.add(outcome)
            self.last_activity = self._clock()
            self._cond.notify_all()

    def unchanged(self, count: int) -> None:
        """Files a rescan found as stored and did not queue: counted, as if done."""
        with self._cond:
            self.summary.counts[Outcome.UNCHANGED] += count

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def depth(self) -> int:
        with self._cond:
            return len(self._items) + len(self._busy)

    def _drop_queued(self, path: str) -> None:
        prefix = path + os.sep
        keep = [
            i
            for i in self._items
            if not (isinstance(i, Path) and (str(i) == path or str(i).startswith(prefix)))
        ]
        self._queued = {str(i) for i in keep if isinstance(i, Path)}
        self._items = deque(keep)
