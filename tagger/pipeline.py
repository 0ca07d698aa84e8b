"""The one place that wires the stages together, in the order the work flows.

    paths (walk or watch) -> stat -> skip unchanged -> SHA-256 -> skip known content
      -> decode (thread pool) -> batch -> classify -> store (writer thread)

`tagger scan` feeds it a folder walk; `tagger watch` feeds it finished files as they come,
plus renames and removals (`Moved`, `Gone`), which go straight to the writer.
The main thread does the cheap, ordered part (stat, hash, dedup); decoding runs in a pool
(Pillow releases the GIL) while a second thread runs the model, so the two overlap.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tagger.batching import END, EndOfInput, batches
from tagger.config import Settings
from tagger.decode import Geometry, decode
from tagger.errors import BadImage, SkipFile, Unreadable
from tagger.files import printable, storable
from tagger.hashing import hash_file, stat_file
from tagger.records import (
    Decoded,
    Failure,
    FileInfo,
    Gone,
    Hashed,
    Moved,
    Outcome,
    Summary,
    Swept,
)
from tagger.runtimes import Classifier
from tagger.store import Link, Seen, Store, StoreWriter, Tagged
from tagger.threads import Worker

log = logging.getLogger(__name__)

Report = Callable[[str, Outcome], None]
Item = Path | Gone | Moved | Swept
_RECENT = 4096
_NO_PIXELS = np.zeros((0, 0, 3), np.uint8)


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        classifier: Classifier,
        report: Report | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._classifier = classifier
        self._report = report
        self._summary = Summary()
        self._lock = threading.Lock()
        self._recent: dict[str, None] = {}

    def run(self, paths: Iterable[Item], stop: threading.Event | None = None) -> Summary:
        """Tag every path that is new or changed; returns when all of it is stored."""
        stop = stop or threading.Event()
        self._summary = Summary()
        workers = self._settings.scan.decode_workers
        # Bounds the images decoded but not yet classified, whatever the size of the input.
        in_flight = threading.BoundedSemaphore(2 * self._classifier.batch_size + workers)
        decoded: queue.Queue[Decoded | Failure | EndOfInput] = queue.Queue()
        with (
            StoreWriter(self._store, stop=stop) as writer,
            ThreadPoolExecutor(workers, thread_name_prefix="tagger-decode") as pool,
        ):
            inference = Worker(
                "tagger-inference", self._classify_loop, decoded, in_flight, writer, stop, halt=stop
            )
            try:
                self._feed(paths, pool, decoded, in_flight, writer, stop, inference)
                pool.shutdown(wait=True)
            finally:
                decoded.put(END)
                inference.join()
            inference.check()
        return self._summary

    def _feed(
        self,
        paths: Iterable[Item],
        pool: ThreadPoolExecutor,
        decoded: queue.Queue[Decoded | Failure | EndOfInput],
        in_flight: threading.BoundedSemaphore,
        writer: StoreWriter,
        stop: threading.Event,
        inference: Worker,
    ) -> None:
        """Stat, skip unchanged, hash, skip known content; hand the rest to the decoders."""
        model = self._classifier.id
        # Content sent to the model but maybe not stored yet. Bounded, for a daemon's months:
        # what left this window long ago is in the store by now.
        recent = self._recent = {}
        geometry, max_pixels = self._classifier.spec.geometry, self._settings.scan.max_pixels
        max_size, follow = self._settings.scan.max_file_size, self._settings.scan.follow_symlinks
        for path in paths:
            if stop.is_set():
                break
            inference.check()
            writer.check()
            if not isinstance(path, Path):  # a rename, removal or sweep: the writer's business
                writer.put(path)
                if not isinstance(path, Swept):
                    with self._lock:
                        self._summary.add(
                            Outcome.MISSING if isinstance(path, Gone) else Outcome.MOVED
                        )
                continue
            try:
                file = stat_file(str(path), follow)
                if file.size > max_size:
                    raise BadImage(
                        f"file too large: {file.size:,} bytes, over the limit of {max_size:,}"
                        " (scan.max_file_size)"
                    )
                state = self._store.file_state(file.path)
                if (
                    state
                    and (state.size, state.mtime_ns) == (file.size, file.mtime_ns)
                    and state.image
                    and state.image.current(model)
                ):
                    if state.missing:
                        writer.put(Seen(file))
                    self._done(file.path, Outcome.UNCHANGED)
                    continue
                hashed = hash_file(file)
            except SkipFile as skip:
                transient = isinstance(skip, Unreadable)
                failure = Failure(FileInfo(storable(path), 0, 0), skip.reason, transient=transient)
                self._fail(writer, failure, reported=str(path))
                continue
            known = self._store.image_state(hashed.sha256)
            with self._lock:
                duplicate = hashed.sha256 in recent or (known is not None and known.current(model))
                if not duplicate:
                    recent[hashed.sha256] = None
                    if len(recent) > _RECENT:
                        del recent[next(iter(recent))]
            if duplicate:
                writer.put(Link(hashed.file, hashed.sha256))
                self._done(file.path, Outcome.DUPLICATE)
                continue
            while not in_flight.acquire(timeout=0.5):
                inference.check()
            future = pool.submit(_decode_or_fail, hashed, geometry, max_pixels)
            future.add_done_callback(lambda done: decoded.put(done.result()))

    def _classify_loop(
        self,
        decoded: queue.Queue[Decoded | Failure | EndOfInput],
        in_flight: threading.BoundedSemaphore,
        writer: StoreWriter,
        stop: threading.Event,
    ) -> None:
        """Batch decoded images, run the model, and pass results and failures to the writer."""
        size, max_wait = self._classifier.batch_size, self._settings.batch.max_wait
        batch: list[Decoded | Failure]
        for batch in batches(decoded, size, max_wait):
            images = [item for item in batch if isinstance(item, Decoded)]
            for failure in (item for item in batch if isinstance(item, Failure)):
                self._fail(writer, failure)
            if images and not stop.is_set():
                tags = self._classifier.classify(np.stack([image.pixels for image in images]))
                for image, image_tags in zip(images, tags, strict=True):
                    # The pixels are done with: a stalled writer must not hold 150 kB each.
                    slim = dataclasses.replace(image, pixels=_NO_PIXELS)
                    writer.put(Tagged(slim, image_tags, self._classifier.id))
                    self._done(image.hashed.file.path, Outcome.NEW)
            for _ in batch:
                in_flight.release()

    def _fail(self, writer: StoreWriter, failure: Failure, reported: str | None = None) -> None:
        log.warning("skipped %s: %s", printable(failure.file.path), failure.reason)
        if failure.transient and failure.sha256 is not None:
            with self._lock:  # not in flight any more: the next copy or retry is read again
                self._recent.pop(failure.sha256, None)
        writer.put(failure)
        outcome = Outcome.UNREADABLE if failure.transient else Outcome.FAILED
        self._done(reported or failure.file.path, outcome)

    def _done(self, path: str, outcome: Outcome) -> None:
        with self._lock:
            self._summary.add(outcome)
        if self._report is not None:
            self._report(path, outcome)


def _decode_or_fail(hashed: Hashed, geometry: Geometry, max_pixels: int) -> Decoded | Failure:
    try:
        return decode(hashed, geometry, max_pixels)
    except BadImage as bad:  # the content is bad: remembered with its hash
        return Failure(hashed.file, bad.reason, sha256=hashed.sha256)
    except Unreadable as unreadable:  # the file moved under us: try again later
        return Failure(hashed.file, unreadable.reason, sha256=hashed.sha256, transient=True)
