"""The one place that wires the stages together, in the order the work flows.

    paths (walk or watch) -> examine -> [identify -> decode] (thread pool) -> batch
      -> classify -> store (writer thread)

`tagger scan` feeds it a folder walk; `tagger watch` feeds it finished files as they come,
plus renames and removals (`Moved`, `Gone`), which go straight to the writer.
The main thread does the cheap, ordered part (stat, the unchanged check); a pool hashes,
dedups and decodes (hashlib and Pillow release the GIL) while a thread of its own runs the
model, so all of it overlaps.
`run(..., threaded=False)` runs the same stages one after another on the caller's thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from tagger.config import Settings
from tagger.errors import SkipFile
from tagger.inference.base import Classifier
from tagger.pipeline.batching import END, EndOfInput, batches
from tagger.pipeline.decode import DecodeMemory, crashed_decodes
from tagger.pipeline.files import printable
from tagger.pipeline.stages import (
    RecentContent,
    Unchanged,
    classify,
    decode_or_fail,
    examine,
    failure_for,
    identify,
)
from tagger.pipeline.threads import Worker
from tagger.records import (
    Decoded,
    Failure,
    FileInfo,
    Gone,
    Link,
    Moved,
    Outcome,
    Seen,
    Summary,
    Swept,
)
from tagger.store.database import Store
from tagger.store.writer import Op, StoreWriter

log = logging.getLogger(__name__)

Report = Callable[[str, Outcome], None]
Item = Path | Gone | Moved | Swept


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        classifier: Classifier,
        report: Report | None = None,
        on_commit: Callable[[list[Op]], object] | None = None,
        reread: Callable[[str], bool] | None = None,
    ) -> None:
        self._on_commit = on_commit  # told what each write stored (XMP sidecars follow it)
        self._reread = reread  # True for a path to read even if it looks unchanged
        self._settings = settings
        self._store = store
        self._classifier = classifier
        self._report = report
        self._summary = Summary()
        self._lock = threading.Lock()
        self._decoding = 0  # images handed to the decoders and not yet in the decoded queue
        self._feeding = False  # the feed is working on a file (not waiting for one)
        self._recent = RecentContent()
        self._markers = settings.data_dir / "decoding"
        # One budget for every decode worker and every run of this pipeline.
        self._memory = DecodeMemory(settings.scan.decode_memory, self._markers)
        # The writer while `run` runs: the daemon sends its heartbeat through it.
        self.writer: StoreWriter | None = None

    def run(
        self, items: Iterable[Item], stop: threading.Event | None = None, threaded: bool = True
    ) -> Summary:
        """Tag every path that is new or changed; returns when all of it is stored."""
        stop = stop or threading.Event()
        self._summary, self._recent = Summary(), RecentContent()
        with StoreWriter(self._store, stop=stop, on_commit=self._on_commit) as writer:
            self.writer = writer
            try:
                self._record_crashed_decodes(writer)
                if threaded:
                    self._run_threaded(items, writer, stop)
                else:
                    self._run_sequential(items, writer, stop)
            finally:
                self.writer = None
        return self._summary

    def _run_threaded(
        self, items: Iterable[Item], writer: StoreWriter, stop: threading.Event
    ) -> None:
        workers = self._settings.scan.decode_workers
        # Bounds the images decoded but not yet classified, whatever the size of the input.
        in_flight = threading.BoundedSemaphore(2 * self._classifier.batch_size + workers)
        decoded: queue.Queue[Decoded | Failure | EndOfInput] = queue.Queue()
        with ThreadPoolExecutor(workers, thread_name_prefix="tagger-decode") as pool:
            inference = Worker(
                "tagger-inference", self._classify_loop, decoded, in_flight, writer, stop, halt=stop
            )
            try:
                for item in self._fed(items):
                    if stop.is_set():
                        break
                    inference.check()
                    writer.check()
                    file = self._admit(item, writer)
                    if file is None:
                        continue
                    while not in_flight.acquire(timeout=0.5):
                        inference.check()
                    with self._lock:
                        self._decoding += 1
                    future = pool.submit(self._read, file, writer)
                    future.add_done_callback(lambda done: self._decoded(decoded, in_flight, done))
                pool.shutdown(wait=True)
            finally:
                decoded.put(END)
                inference.join()
            inference.check()

    def _fed(self, items: Iterable[Item]) -> Iterator[Item]:
        """`items`, noting while one is being worked on: a watch's feed waits for the next
        file in `next()`, a scan's does not wait at all."""
        iterator = iter(items)
        while True:
            with self._lock:
                self._feeding = False
            try:
                item = next(iterator)
            except StopIteration:
                return
            with self._lock:
                self._feeding = True
            yield item

    def _decoded(
        self,
        decoded: queue.Queue[Decoded | Failure | EndOfInput],
        in_flight: threading.BoundedSemaphore,
        done: Future[Decoded | Failure | None],
    ) -> None:
        try:
            result = done.result()
        finally:
            if done.exception() is not None or result is None:  # nothing for the model
                in_flight.release()
            else:
                decoded.put(result)
            with self._lock:  # after the put: none in flight means none still to arrive
                self._decoding -= 1

    def _more_coming(self) -> bool:
        """Whether images may join a batch soon: some are being decoded, or the feed is
        working on a file. Not when a watch waits for its next file."""
        with self._lock:
            return self._feeding or self._decoding > 0

    def _run_sequential(
        self, items: Iterable[Item], writer: StoreWriter, stop: threading.Event
    ) -> None:
        """Every stage on this thread, one file after another: for tests and debugging."""
        batch: list[Decoded | Failure] = []
        for item in items:
            if stop.is_set():
                break
            writer.check()
            file = self._admit(item, writer)
            read = None if file is None else self._read(file, writer)
            if read is not None:
                batch.append(read)
            if len(batch) >= self._classifier.batch_size:
                self._store_batch(batch, writer, stop)
                batch = []
        self._store_batch(batch, writer, stop)

    def _record_crashed_decodes(self, writer: StoreWriter) -> None:
        """A decode marker left behind means an earlier process died decoding that content
        (killed for memory, most likely): record it as bad content, stored before any file is
        looked at, so that this run skips it instead of dying on it again."""
        crashed = crashed_decodes(self._markers)
        if not crashed:
            return
        for _, failure in crashed:
            self._fail(writer, failure)
        writer.submit(lambda _session: None).result()  # stored: the markers can go
        for marker, _ in crashed:
            marker.unlink(missing_ok=True)

    def _admit(self, item: Item, writer: StoreWriter) -> FileInfo | None:
        """The cheap, ordered part for one item (stat, the unchanged check); returns the
        file still to read."""
        if not isinstance(item, Path):  # a rename, removal or sweep: the writer's business
            writer.put(item)
            if not isinstance(item, Swept):
                with self._lock:
                    self._summary.add(Outcome.MISSING if isinstance(item, Gone) else Outcome.MOVED)
            return None
        try:
            again = self._reread is not None and self._reread(str(item))
            found = examine(item, self._settings.scan, self._store, self._classifier.id, again)
        except SkipFile as skip:
            self._fail(writer, failure_for(item, skip), reported=str(item))
            return None
        if isinstance(found, Unchanged):
            if found.missing:
                writer.put(Seen(found.file))
            self._done(found.file.path, Outcome.UNCHANGED)
            return None
        return found

    def _read(self, file: FileInfo, writer: StoreWriter) -> Decoded | Failure | None:
        """Hash, then link known content or decode new content: on the decode workers, so
        that hashing does not hold up the feed (None: nothing left for the model)."""
        try:
            content = identify(file, self._store, self._classifier.id, self._recent)
        except SkipFile as skip:
            self._fail(writer, failure_for(Path(file.path), skip), reported=file.path)
            return None
        if isinstance(content, Link):
            writer.put(content)
            self._done(content.file.path, Outcome.DUPLICATE)
            return None
        geometry, max_pixels = self._classifier.spec.geometry, self._settings.scan.max_pixels
        return decode_or_fail(content, geometry, max_pixels, self._memory)

    def _classify_loop(
        self,
        decoded: queue.Queue[Decoded | Failure | EndOfInput],
        in_flight: threading.BoundedSemaphore,
        writer: StoreWriter,
        stop: threading.Event,
    ) -> None:
        """Batch decoded images, run the model, and pass results and failures to the writer.
        One batch at a time: two at once (OpenVINO's `lanes`) were no faster here and held
        7 MB more (docs/benchmarks.md)."""
        size, max_wait = self._classifier.batch_size, self._settings.batch.max_wait
        batch: list[Decoded | Failure]
        for batch in batches(decoded, size, max_wait, self._more_coming):
            self._store_batch(batch, writer, stop)
            for _ in batch:
                in_flight.release()

    def _store_batch(
        self, batch: list[Decoded | Failure], writer: StoreWriter, stop: threading.Event
    ) -> None:
        images = [item for item in batch if isinstance(item, Decoded)]
        for failure in (item for item in batch if isinstance(item, Failure)):
            self._fail(writer, failure)
        if images and not stop.is_set():
            for tagged in classify(self._classifier, images):
                writer.put(tagged)
                self._done(tagged.decoded.hashed.file.path, Outcome.NEW)

    def _fail(self, writer: StoreWriter, failure: Failure, reported: str | None = None) -> None:
        log.warning("skipped %s: %s", printable(failure.file.path), failure.reason)
        if failure.transient and failure.sha256 is not None:
            self._recent.release(failure.sha256)
        writer.put(failure)
        outcome = Outcome.UNREADABLE if failure.transient else Outcome.FAILED
        self._done(reported or failure.file.path, outcome)

    def _done(self, path: str, outcome: Outcome) -> None:
        with self._lock:
            self._summary.add(outcome)
        if self._report is not None:
            self._report(path, outcome)
