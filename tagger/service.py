"""The use cases both interfaces call (the CLI now, the web page next): loading the model
from the settings, predicting without storing, the status report, the label catalogue, and
the one-off writes. Each returns plain data; printing or rendering it is the caller's."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.engine import make_url

from tagger.config import Settings
from tagger.errors import SkipFile, TaggerError
from tagger.labels.names import Language, chinese
from tagger.records import ModelId
from tagger.store.database import Store

if TYPE_CHECKING:  # the runtimes take seconds to import: only commands that run a model pay
    from tagger.inference.base import Classifier
    from tagger.labels.hierarchy import Synset
    from tagger.query.language import Query
    from tagger.store.index import VectorIndex

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


# Similar photos, near-duplicates and labels of one's own: all from the stored embeddings.


def vector_index(settings: Settings, store: Store, model: ModelId) -> VectorIndex:
    """The model's vector index, a cache file in the data directory."""
    from tagger.store.index import VectorIndex

    return VectorIndex(store, model, settings.data_dir)


@dataclass(frozen=True)
class Target:
    """The photo a similarity search starts from: its content and embedding."""

    sha256: str | None  # None for a photo not in the library
    model: ModelId
    vector: npt.NDArray[np.float16]
    embedding_id: int | None = None


def similar_target(
    store: Store,
    photo: str,
    classifier: Callable[[], Classifier] | None = None,
    max_pixels: int = 0,
) -> Target:
    """What `photo` names: a stored content's sha256, a stored path, or (given `classifier`)
    any photo, analysed on the spot. A TaggerError says what is missing."""
    from tagger.pipeline.files import storable
    from tagger.store.reports import file_report
    from tagger.store.vectors import embedding_of

    sha256: str | None = None
    if re.fullmatch(r"[0-9a-f]{64}", photo.lower()):
        sha256 = photo.lower()
    else:
        report = file_report(store, storable(os.path.realpath(photo)))
        sha256 = report.get("sha256") if report else None
    if sha256 is not None:
        stored = embedding_of(store, sha256)
        if stored is not None:
            return Target(sha256, stored.model, stored.vector, stored.id)
        if classifier is None or not Path(photo).exists():
            raise TaggerError(
                f"{photo} has no embedding yet (tagged before embeddings were stored, or "
                "not tagged): run `tagger scan` on its folder"
            )
    if classifier is None or not Path(photo).exists():
        raise TaggerError(f"{photo}: no such photo in the database, nor a file")
    return _analysed(photo, classifier(), max_pixels)


def _analysed(photo: str, classifier: Classifier, max_pixels: int) -> Target:
    from tagger.pipeline.decode import decode
    from tagger.pipeline.hashing import hash_file, stat_file

    try:
        image = decode(hash_file(stat_file(photo)), classifier.spec.geometry, max_pixels)
    except SkipFile as skip:
        raise TaggerError(f"{photo}: {skip.reason}") from None
    vector = classifier.analyse(image.pixels[None]).embeddings[0]
    return Target(None, classifier.id, vector)


def similar(
    store: Store, index: VectorIndex, target: Target, limit: int, min_similarity: float = 0.0
) -> list[dict[str, Any]]:
    """The stored photos most like `target` by cosine similarity, best first: never the
    photo itself, only content a present path holds (the index is checked against the
    database), one row per content with its first path."""
    from tagger.store.vectors import present_images

    rows: list[dict[str, Any]] = []
    wanted = limit * 2 + 8  # some answers may be dropped content, filtered below
    while True:
        found = index.search(target.vector, wanted, exclude=target.embedding_id)
        known = present_images(store, [key for key, _ in found])
        rows = [
            {"path": known[key][1], "sha256": known[key][0], "similarity": round(score, 4)}
            for key, score in found
            if key in known and known[key][0] != target.sha256 and score >= min_similarity
        ]
        if len(rows) >= limit or len(found) < wanted or found[-1][1] < min_similarity:
            return rows[:limit]
        wanted *= 4


def near_duplicates(
    settings: Settings, store: Store, threshold: float, neighbours: int = 8
) -> list[dict[str, Any]]:
    """Groups of contents whose embeddings are at least `threshold` alike: copies that are
    not byte-identical (resized, re-compressed, lightly cropped). Each group lists its
    present paths, the most-connected content first."""
    from tagger.store.vectors import embedding_models, embeddings_after, present_images

    parent: dict[int, int] = {}

    def root(key: int) -> int:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    best: dict[int, float] = {}
    for model in embedding_models(store):
        index = vector_index(settings, store, model)
        index.sync()
        for ids, vectors in embeddings_after(store, model, 0):
            for key, found in zip(ids, index.neighbours(ids, vectors, neighbours), strict=True):
                for other, score in found:
                    if score >= threshold:
                        parent[root(other)] = root(int(key))
                        best[int(key)] = max(best.get(int(key), 0.0), score)
                        best[other] = max(best.get(other, 0.0), score)
    members: dict[int, list[int]] = {}
    for key in parent:
        members.setdefault(root(key), []).append(key)
    known = present_images(store, [k for keys in members.values() if len(keys) > 1 for k in keys])
    groups = []
    for keys in members.values():
        present = sorted((known[k][1], known[k][0], best[k]) for k in keys if k in known)
        if len(present) > 1:
            groups.append(
                {
                    "paths": [path for path, _, _ in present],
                    "sha256": [sha for _, sha, _ in present],
                    "similarity": round(min(score for _, _, score in present), 4),
                }
            )
    return sorted(groups, key=lambda group: group["paths"][0])


MIN_EXAMPLES = 5  # fewer photos of a label than this teach a classifier nothing reliable


@dataclass(frozen=True)
class Trained:
    examples: int
    negatives: int
    accuracy: float
    tagged: int
    not_stored: list[str] = field(default_factory=list)


def _stored_contents(store: Store, sources: Iterable[Path]) -> tuple[list[str], list[str]]:
    """(sha256 of each stored photo in these files and folders, paths not stored)."""
    from tagger.pipeline.files import storable
    from tagger.store.reports import file_report

    shas: list[str] = []
    missing: list[str] = []
    for source in sources:
        paths = (
            [Path(folder, name) for folder, _, names in os.walk(source) for name in names]
            if source.is_dir()
            else [source]
        )
        for path in sorted(paths):
            report = file_report(store, storable(os.path.realpath(path)))
            if report and report.get("sha256") and report.get("status") == "tagged":
                shas.append(report["sha256"])
            elif not path.name.startswith("."):
                missing.append(str(path))
    return list(dict.fromkeys(shas)), missing


def train_label(
    store: Store,
    name: str,
    examples: Iterable[Path] = (),
    negatives: Iterable[Path] = (),
    marked: dict[str, bool] | None = None,
) -> Trained:
    """Fit a label of one's own on stored embeddings and tag the library with it.

    Without `examples`, the label's stored training set is used again (retraining, after a
    model change or with photos `marked` on the web page: sha256 -> example or not)."""
    from tagger.store.own import save_label, training_set
    from tagger.store.vectors import embedding_models, embeddings_of, library_sample
    from tagger.store.writer import write_once

    _check_own_name(name)
    _require_scikit_learn()
    models = embedding_models(store)
    if not models:
        raise TaggerError("no photo has an embedding yet: run `tagger scan` first")
    model = models[0]
    examples, negatives = list(examples), list(negatives)
    stored = training_set(store, name) or {}
    missing: list[str] = []
    if examples:
        positive_shas, missing = _stored_contents(store, examples)
    elif stored or marked:
        positive_shas = [sha for sha, positive in stored.items() if positive]
    else:
        raise TaggerError(f"no label of your own named {name!r} yet: give --examples")
    negative_shas: list[str] | None = None
    if negatives:
        negative_shas, more_missing = _stored_contents(store, negatives)
        missing += more_missing
    elif not examples and any(not positive for positive in stored.values()):
        negative_shas = [sha for sha, positive in stored.items() if not positive]
    for sha, positive in (marked or {}).items():
        positive_shas = [s for s in positive_shas if s != sha] + ([sha] if positive else [])
        if negative_shas is not None or not positive:
            negative_shas = [s for s in negative_shas or [] if s != sha]
            negative_shas += [] if positive else [sha]
    positives = embeddings_of(store, positive_shas, model)
    if len(positives) < MIN_EXAMPLES:
        raise TooFewExamples(
            f"too few examples: {len(positives)} tagged photo(s) with an embedding, "
            f"{MIN_EXAMPLES} needed (scan the example folders first)"
        )
    sample = max(50, 3 * len(positives))
    if negative_shas is not None:
        counter = embeddings_of(store, [s for s in negative_shas if s not in positives], model)
        if len(counter) < MIN_EXAMPLES:  # marked ones, topped up from the library
            leave_out = set(positives) | set(counter)
            counter |= _unlike(positives, library_sample(store, model, sample, leave_out))
    else:
        counter = _unlike(positives, library_sample(store, model, sample, set(positives)))
    if len(counter) < MIN_EXAMPLES:
        raise TooFewExamples(
            f"too few negatives: {len(counter)} photo(s), {MIN_EXAMPLES} needed"
            " (give --negatives, or scan more photos)"
        )
    coefficients, intercept, accuracy = _fit(
        np.stack(list(positives.values())), np.stack(list(counter.values()))
    )
    training = dict.fromkeys(counter, False) | dict.fromkeys(positives, True)
    _, tagged = write_once(
        store,
        lambda session: save_label(
            session, name, model, coefficients, intercept, accuracy, training
        ),
    )
    return Trained(len(positives), len(counter), accuracy, tagged, missing)


def _unlike(
    positives: dict[str, npt.NDArray[np.float16]], sampled: dict[str, npt.NDArray[np.float16]]
) -> dict[str, npt.NDArray[np.float16]]:
    """The sampled photos less like the examples than every example is: a library holds
    unmarked photos of the label too, which must not be taught as counter-examples."""
    if not sampled:
        return sampled
    centre = np.stack(list(positives.values())).astype(np.float32).mean(axis=0)
    centre /= max(float(np.linalg.norm(centre)), 1e-12)
    least = min(float(vector.astype(np.float32) @ centre) for vector in positives.values())
    return {sha: v for sha, v in sampled.items() if float(v.astype(np.float32) @ centre) < least}


class TooFewExamples(TaggerError):
    """Not enough photos of a label to train it (yet)."""


def mark_label(store: Store, name: str, sha256: str, positive: bool) -> str:
    """A person says this photo is (or is not) `name`: a training example, kept, and the
    label (re)trained once it has enough. Returns what happened, in a sentence."""
    from tagger.store.own import save_examples
    from tagger.store.vectors import embedding_of
    from tagger.store.writer import write_once

    _check_own_name(name)
    stored = embedding_of(store, sha256)
    if stored is None:
        raise TaggerError("this photo has no embedding yet: it is analysed at the next scan")
    try:
        result = train_label(store, name, marked={sha256: positive})
    except TooFewExamples as few:
        write_once(
            store, lambda session: save_examples(session, name, stored.model, {sha256: positive})
        )
        from tagger.store.own import training_set

        count = sum((training_set(store, name) or {}).values())
        why = f"{count} of {MIN_EXAMPLES} examples so far" if count < MIN_EXAMPLES else few
        return f"kept as {'an example' if positive else 'not an example'} of {name!r}; {why}"
    return (
        f"{name!r} retrained on {result.examples} examples and {result.negatives} negatives"
        f" (accuracy {result.accuracy:.0%}); {result.tagged} photos carry it"
    )


def _fit(
    positives: npt.NDArray[Any], negatives: npt.NDArray[Any]
) -> tuple[npt.NDArray[np.float32], float, float]:
    """Logistic regression (balanced classes, on standardised features) and its stratified
    cross-validated accuracy. The standardisation is folded into the coefficients, so that
    applying the label stays one dot product. Unscaled, the unit vectors' small values made
    the regularisation win: on the ImageNet sample it found 38% of held-out dogs, scaled 100%."""
    _require_scikit_learn()
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = np.concatenate([positives, negatives]).astype(np.float64)
    truth = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))])

    def model() -> Any:
        regression = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
        return make_pipeline(StandardScaler(), regression)

    folds = StratifiedKFold(min(5, len(positives), len(negatives)), shuffle=True, random_state=0)
    accuracy = float(cross_val_score(model(), features, truth, cv=folds).mean())
    fitted = model().fit(features, truth)
    scaler, regression = fitted[0], fitted[-1]
    weights = regression.coef_[0] / scaler.scale_
    intercept = float(regression.intercept_[0] - weights @ scaler.mean_)
    return weights.astype(np.float32), intercept, accuracy


def _require_scikit_learn() -> None:
    """scikit-learn is the `train` extra: a one-line answer where it is not installed."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise TaggerError(
            "training a label needs scikit-learn: pip install 'tagger[train]'"
        ) from None


def _check_own_name(name: str) -> None:
    from tagger.labels.hierarchy import LabelError, hierarchy, normalise

    if not normalise(name) or len(name) > 128 or "," in name or ":" in name:
        raise TaggerError(f"label name {name!r}: 1 to 128 characters, no comma or colon")
    try:
        found = hierarchy().resolve(name)
    except LabelError:
        return
    if any(normalise(s.name) == normalise(name) for s in found):
        raise TaggerError(f"{name!r} is a label of the model already; pick another name")


def untrain_label(store: Store, name: str) -> None:
    from tagger.store.own import remove_label
    from tagger.store.writer import write_once

    if not write_once(store, lambda session: remove_label(session, name)):
        raise TaggerError(f"no label of your own named {name!r} (see tagger labels --own)")


def label_resolver(open_store: Callable[[], Store] | None) -> Callable[[str], list[Synset]]:
    """What `label:NAME` means: the model's label, else a label of one's own by that name
    (own names that are the model's are refused by `train`; the store is opened only then)."""
    from tagger.labels.hierarchy import LabelError, Synset, hierarchy, normalise
    from tagger.store.own import own_labels

    tree = hierarchy()

    def resolve(name: str) -> list[Synset]:
        try:
            return tree.resolve(name)
        except LabelError:
            if open_store is None:
                raise
            try:
                own = {normalise(o.name): o for o in own_labels(open_store())}
            except TaggerError:
                own = {}
            found = own.get(normalise(name))
            if found is None:
                raise
            return [Synset(found.wnid, found.name, (), (), (), None)]

    return resolve
