"""A backfill spread over a Ray cluster (`tagger scan --engine ray`, the `tagger[ray]` extra).

    driver: walk -> examine (unchanged? not read)
    tasks:  hash_file, on the nodes (each reads the shared folder itself)
    driver: link_or_classify (the store's answer: known content is only linked)
    tasks:  decode_or_fail            actors: classify (each loads the model once)
    driver: the store's own writer, results written as they arrive

The same stage functions as a local scan (stages.py), so labels, scores and dedup are the
same; only the driver talks to the database, so a laptop's SQLite file works as well as a
shared PostgreSQL. Every machine sees the photos at the same path (a shared folder) and has
tagger installed; the driver is a node of the cluster (docs/scale-out.md). Killed halfway,
a second run reads only what is missing: what arrived was committed, and `examine` skips it.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tagger.config import Settings
from tagger.errors import SkipFile, TaggerError
from tagger.inference.base import Classifier
from tagger.inference.specs import Geometry
from tagger.pipeline.files import printable
from tagger.pipeline.hashing import hash_file
from tagger.pipeline.runner import Report
from tagger.pipeline.stages import (
    RecentContent,
    Unchanged,
    classify,
    decode_or_fail,
    examine,
    failure_for,
    link_or_classify,
)
from tagger.records import Decoded, Failure, FileInfo, Hashed, Link, Outcome, Seen, Summary, Swept
from tagger.store.database import Store
from tagger.store.writer import Op, StoreWriter

log = logging.getLogger(__name__)

Batch = dict[str, npt.NDArray[Any]]
_HASH_BATCH = 32  # files a hashing task reads
_DECODE_BATCH = 16  # files a decoding task reads
MISSING_EXTRA = "the Ray engine needs Ray: pip install 'tagger[ray]'"


def _rows(records: Iterable[object]) -> Batch:
    """Records as one column of pickles: Ray Data carries them as bytes, whatever they hold."""
    return {"item": np.array([pickle.dumps(record) for record in records], dtype=object)}


def _records(batch: Batch) -> list[Any]:
    return [pickle.loads(blob) for blob in batch["item"]]


def hash_rows(batch: Batch) -> Batch:
    """A task: hash each file (the `identify` half that reads); a file that cannot be read
    becomes its `Failure`, as in a local scan."""
    out: list[Hashed | Failure] = []
    for file in _records(batch):
        try:
            out.append(hash_file(file))
        except SkipFile as skip:
            out.append(failure_for(Path(file.path), skip))
    return _rows(out)


def decode_rows(batch: Batch, geometry: Geometry, max_pixels: int) -> Batch:
    """A task: decode each image to the model's input, or say why it cannot be."""
    return _rows(decode_or_fail(hashed, geometry, max_pixels) for hashed in _records(batch))


class ClassifyRows:
    """An actor of the pool: loads the model once, then classifies batch after batch with
    the local pipeline's `classify`. Failures pass through to the driver."""

    def __init__(self, load: Callable[[], Classifier]) -> None:
        self._classifier = load()

    def __call__(self, batch: Batch) -> Batch:
        records = _records(batch)
        images = [record for record in records if isinstance(record, Decoded)]
        tagged = classify(self._classifier, images) if images else []
        return _rows([*tagged, *(record for record in records if isinstance(record, Failure))])


class Backfill:
    """Runs one backfill on a cluster; the driver's half of the work and its bookkeeping."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        classifier: Classifier,
        load: Callable[[], Classifier],
        report: Report | None = None,
        on_commit: Callable[[list[Op]], object] | None = None,
        address: str | None = None,
    ) -> None:
        """`classifier` is the driver's (its id, batch size and input size); `load` makes
        one on a worker, and must pickle (a module-level function, or a partial of one)."""
        self._settings = settings
        self._store = store
        self._classifier = classifier
        self._load = load
        self._report = report
        self._on_commit = on_commit  # told what each write stored (XMP sidecars follow it)
        self._address = address
        self._summary = Summary()
        self._recent = RecentContent(limit=1 << 62)  # one run: all of it is in flight

    def run(self, items: Iterable[Path | Swept], stop: threading.Event | None = None) -> Summary:
        """Tag every path that is new or changed; returns when all of it is stored."""
        stop = stop or threading.Event()
        ray = _ray()
        started_here = not ray.is_initialized()
        if started_here:
            # The workers must not reach the network either: no usage stats sent.
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            try:
                ray.init(
                    address=self._address,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    log_to_driver=False,
                )
            except ConnectionError as exc:  # Ray's, after a minute of tries
                raise TaggerError(
                    f"cannot connect to the Ray cluster at {self._address or 'auto'}: {exc}."
                    " The driver must be a node of the cluster: run `ray start --num-cpus=0"
                    " --address=HEAD:6379` on this machine, then --address auto"
                ) from None
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # not a line per dataset
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the driver has its own bar
        context.print_on_execution_start = False
        try:
            with StoreWriter(self._store, stop=stop, on_commit=self._on_commit) as writer:
                to_hash = self._examine_all(items, writer, stop)
                to_decode = self._identify_all(to_hash, writer, stop)
                self._classify_all(to_decode, writer, stop)
        finally:
            if started_here:
                ray.shutdown()
        return self._summary

    def _examine_all(
        self, items: Iterable[Path | Swept], writer: StoreWriter, stop: threading.Event
    ) -> list[FileInfo]:
        """The driver's cheap pass: what is unchanged is neither read nor sent anywhere."""
        model, found = self._classifier.id, []
        for item in items:
            if stop.is_set():
                break
            if isinstance(item, Swept):
                writer.put(item)
                continue
            try:
                file = examine(item, self._settings.scan, self._store, model)
            except SkipFile as skip:
                self._fail(writer, failure_for(item, skip), reported=str(item))
                continue
            if isinstance(file, Unchanged):
                if file.missing:
                    writer.put(Seen(file.file))
                self._done(file.file.path, Outcome.UNCHANGED)
            else:
                found.append(file)
        return found

    def _identify_all(
        self, files: list[FileInfo], writer: StoreWriter, stop: threading.Event
    ) -> list[Hashed]:
        """Hash on the cluster; decide here what to classify and what only to link."""
        if not files or stop.is_set():
            return []
        ray = _ray()
        hashed = ray.data.from_items(_split(files)).map_batches(
            hash_rows, batch_size=_HASH_BATCH, num_cpus=1
        )
        model, todo = self._classifier.id, []
        for record in _results(hashed, writer, stop):
            if isinstance(record, Failure):
                self._fail(writer, record)
                continue
            content = link_or_classify(record, self._store, model, self._recent)
            if isinstance(content, Link):
                writer.put(content)
                self._done(content.file.path, Outcome.DUPLICATE)
            else:
                todo.append(content)
        return todo

    def _classify_all(self, todo: list[Hashed], writer: StoreWriter, stop: threading.Event) -> None:
        """Decode in tasks, classify on the actor pool, store what comes back as it comes."""
        if not todo or stop.is_set():
            return
        ray = _ray()
        geometry, max_pixels = self._classifier.spec.geometry, self._settings.scan.max_pixels
        tagged = (
            ray.data.from_items(_split(todo))
            .map_batches(
                decode_rows,
                batch_size=_DECODE_BATCH,
                num_cpus=1,
                fn_kwargs={"geometry": geometry, "max_pixels": max_pixels},
            )
            .map_batches(
                ClassifyRows,
                fn_constructor_args=(self._load,),
                batch_size=self._classifier.batch_size,
                compute=ray.data.ActorPoolStrategy(size=_nodes(ray)),
                num_cpus=1,
            )
        )
        for record in _results(tagged, writer, stop):
            if isinstance(record, Failure):
                self._fail(writer, record)
            else:
                writer.put(record)
                self._done(record.decoded.hashed.file.path, Outcome.NEW)

    def _fail(self, writer: StoreWriter, failure: Failure, reported: str | None = None) -> None:
        log.warning("skipped %s: %s", printable(failure.file.path), failure.reason)
        writer.put(failure)
        outcome = Outcome.UNREADABLE if failure.transient else Outcome.FAILED
        self._done(reported or failure.file.path, outcome)

    def _done(self, path: str, outcome: Outcome) -> None:
        self._summary.add(outcome)
        if self._report is not None:
            self._report(path, outcome)


def _split(records: list[Any]) -> list[dict[str, bytes]]:
    return [{"item": pickle.dumps(record)} for record in records]


def _results(dataset: Any, writer: StoreWriter, stop: threading.Event) -> Iterator[Any]:
    """The records a dataset yields, as they arrive; stops early when told to."""
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        writer.check()
        for record in _records(batch):
            if stop.is_set():
                return
            yield record


def _nodes(ray: Any) -> int:
    """One model per machine that offers CPUs (the model uses the machine's cores itself);
    a driver that joined with --num-cpus=0 runs none."""
    nodes = ray.nodes()
    return max(1, sum(1 for n in nodes if n.get("Alive") and n["Resources"].get("CPU", 0) >= 1))


def require_ray() -> None:
    """Fail with one line, before anything else is loaded, when the extra is missing."""
    _ray()


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise TaggerError(MISSING_EXTRA) from None
    return ray
