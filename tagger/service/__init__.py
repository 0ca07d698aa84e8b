"""The use cases both interfaces call (the CLI and the web page): loading the model from
the settings, predicting without storing, the status report, the label catalogue, and the
one-off writes; `similar.py` (similar photos, near-duplicates) and `own.py` (labels of one's
own) beside it. Each returns plain data; printing or rendering it is the caller's."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from tagger.config import Settings
from tagger.errors import SkipFile
from tagger.labels.names import Language, chinese
from tagger.store.database import Store

if TYPE_CHECKING:  # the runtimes take seconds to import: only commands that run a model pay
    from tagger.inference.base import Classifier
    from tagger.query.language import Query

STALE_AFTER_S = 60  # a daemon that has not updated its status file for this long is stuck


def load_classifier(settings: Settings) -> Classifier:
    """The model the settings ask for, on their runtime, precision and label rules."""
    from tagger.inference.runtimes import load_classifier as load
    from tagger.labels.hierarchy import LabelRules

    model, labels = settings.model, settings.labels
    return load(
        model.name,
        settings.data_dir,
        model.weights_path,
        model.threads,
        model.runtime,
        model.precision,
        LabelRules.from_names(labels.derived, labels.min_score, labels.min_scores, labels.hide),
        settings.batch.size,
    )


@dataclass(frozen=True)
class Prediction:
    """The top labels of one photo, or why it could not be read."""

    path: str
    tags: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


def predict(
    classifier: Classifier,
    paths: Iterable[Path],
    max_pixels: int,
    top_k: int = 3,
    language: Language = "en",
) -> Iterable[Prediction]:
    """Classify each file on its own, storing nothing; model classes only, best first."""
    from tagger.pipeline.decode import decode
    from tagger.pipeline.hashing import hash_file, stat_file

    for path in paths:
        started = time.perf_counter()
        try:
            image = decode(hash_file(stat_file(str(path))), classifier.spec.geometry, max_pixels)
        except SkipFile as skip:
            yield Prediction(str(path), error=skip.reason)
            continue
        tags = [t for t in classifier.classify(image.pixels[None], top_k)[0] if not t.derived]
        yield Prediction(
            str(path),
            [
                {"label": t.label, "class_index": t.class_index, "score": round(t.score, 4)}
                | ({"label_zh": chinese(t.wnid)} if language == "zh" else {})
                for t in tags
            ],
            seconds=time.perf_counter() - started,
        )


@dataclass(frozen=True)
class StatusReport:
    """Whether a `tagger watch` runs on this database, what it does, and the database's counts."""

    report: dict[str, Any]
    running: bool
    stale: bool


def status_report(settings: Settings, open_store: Callable[[], Store]) -> StatusReport:
    """`open_store` is called only when the database exists: asking must not create it."""
    from tagger.store.reports import totals
    from tagger.watch.status import StatusFiles

    if make_url(settings.db_url).get_backend_name() == "postgresql":
        return _shared_status(settings, open_store)
    files = StatusFiles.of(settings)
    running, info = files.running(), files.read()
    stale = running and (info is None or time.time() - info.get("updated", 0) > STALE_AFTER_S)
    url = make_url(settings.db_url)
    # Asking must not create the database (and race a starting daemon's migration).
    exists = url.get_backend_name() != "sqlite" or Path(str(url.database)).exists()
    report: dict[str, Any] = {
        "running": running,
        "responsive": running and not stale,
        "daemon": info if running else None,
        "database": url.render_as_string(hide_password=True),
        **(totals(open_store()) if exists else {}),
    }
    return StatusReport(report, running, stale)


def _shared_status(settings: Settings, open_store: Callable[[], Store]) -> StatusReport:
    """On a database several machines share: every daemon that writes to it, by its row in
    the `daemons` table (host, folders, last heartbeat by the server's clock)."""
    from tagger.store.daemons import daemons
    from tagger.store.database import NoDatabase
    from tagger.store.reports import totals

    report: dict[str, Any] = {
        "database": make_url(settings.db_url).render_as_string(hide_password=True)
    }
    try:
        store = open_store()
    except NoDatabase:  # an empty database: asking does not create the schema
        listed: list[dict[str, Any]] = []
    else:
        listed = daemons(store)
        report |= totals(store)
    for daemon in listed:
        age = daemon["heartbeat_age"]
        daemon["responsive"] = age is not None and age <= STALE_AFTER_S
    running = bool(listed)
    stale = any(not daemon["responsive"] for daemon in listed)
    report |= {
        "running": running,
        "responsive": running and not stale,
        "daemon": None,
        "daemons": listed,
    }
    return StatusReport(report, running, stale)


def label_catalogue(language: Language = "en") -> list[dict[str, Any]]:
    """Every label a query can name: the model's classes, then the WordNet labels above them.
    In Chinese, its Chinese names are synonyms too."""
    from tagger.labels.hierarchy import hierarchy, normalise

    known = hierarchy()
    rows = []
    for synset in [*known.classes, *(known[w] for w in known.ancestor_wnids)]:
        words = [
            w.replace("_", " ") for w in synset.lemmas if normalise(w) != normalise(synset.name)
        ]
        row = {"class_index": synset.class_index, "wnid": synset.wnid, "label": synset.name}
        if language == "zh":
            row["label_zh"] = synset.zh[0] if synset.zh else None
            words += synset.zh[1:]
        rows.append(row | {"synonyms": ", ".join(words)})
    return rows


def prune(store: Store, dry_run: bool) -> tuple[int, int]:
    """Forget missing paths and content no path holds; (files, images) removed or to remove."""
    from tagger.store.maintenance import prune as prune_rows
    from tagger.store.writer import write_once

    return write_once(store, lambda session: prune_rows(session, dry_run))


def retag(store: Store, query: Query, min_score: float) -> int:
    """Have the next scan tag the matching images again; returns how many."""
    from tagger.store.maintenance import retag as retag_rows
    from tagger.store.writer import write_once

    return write_once(store, lambda session: retag_rows(session, query, min_score))
