"""Each per-file stage as a plain function, in the order the work flows:

    examine (stat, limits, unchanged?) -> identify (SHA-256, then link_or_classify)
      -> decode_or_fail -> classify

The threaded runner and its sequential mode (runner.py) call these same functions, and so
can anything else that feeds files in (a cluster backfill). A stage raises `SkipFile` or
returns a `Failure` for a bad file; it never decides what happens to the rest of the run.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagger.config import ScanSettings
from tagger.errors import BadImage, SkipFile, Unreadable
from tagger.inference.base import Classifier
from tagger.inference.specs import Geometry
from tagger.pipeline.decode import DecodeMemory, decode
from tagger.pipeline.files import storable
from tagger.pipeline.hashing import hash_file, stat_file
from tagger.records import Decoded, Failure, FileInfo, Hashed, Link, ModelId, Tagged
from tagger.store.database import Store

_NO_PIXELS = np.zeros((0, 0, 3), np.uint8)


@dataclass(frozen=True)
class Unchanged:
    """A file whose size and mtime are as stored, tagged by the current model: not read."""

    file: FileInfo
    missing: bool  # it had been marked missing and is back


def examine(
    path: Path, scan: ScanSettings, store: Store, model: ModelId, reread: bool = False
) -> FileInfo | Unchanged:
    """Stat the file, apply the size limit, and tell whether it changed since it was stored
    (`reread`: an event said it was written to, whatever its size and mtime say)."""
    file = stat_file(str(path), scan.follow_symlinks)
    if file.size > scan.max_file_size:
        raise BadImage(
            f"file too large: {file.size:,} bytes, over the limit of {scan.max_file_size:,}"
            " (scan.max_file_size)"
        )
    state = None if reread else store.file_state(file.path)
    if (
        state
        and (state.size, state.mtime_ns) == (file.size, file.mtime_ns)
        and state.image
        and state.image.current(model)
    ):
        return Unchanged(file, state.missing)
    return file


class RecentContent:
    """Content sent to the model but maybe not stored yet, so that a second copy arriving
    meanwhile is linked instead of classified twice. Bounded, for a daemon's months: what
    left this window long ago is in the store by now."""

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._items: dict[str, None] = {}
        self._lock = threading.Lock()

    def claim(self, sha256: str) -> bool:
        """True for content not in flight yet, which is now; False for a second copy."""
        with self._lock:
            if sha256 in self._items:
                return False
            self._items[sha256] = None
            if len(self._items) > self._limit:
                del self._items[next(iter(self._items))]
            return True

    def release(self, sha256: str) -> None:
        """Not in flight any more (it failed for now): the next copy or retry is read again."""
        with self._lock:
            self._items.pop(sha256, None)


def identify(file: FileInfo, store: Store, model: ModelId, recent: RecentContent) -> Hashed | Link:
    """Hash the content, then decide: classify it (`Hashed`), or only record another path to
    content already tagged by this model or in flight (`Link`)."""
    return link_or_classify(hash_file(file), store, model, recent)


def link_or_classify(
    hashed: Hashed, store: Store, model: ModelId, recent: RecentContent
) -> Hashed | Link:
    """`identify` once the content is hashed (a cluster backfill hashes near the data and
    decides here, on the driver): content the store has tagged by `model`, or that is in
    flight, is only linked."""
    known = store.image_state(hashed.sha256)
    if (known is not None and known.current(model)) or not recent.claim(hashed.sha256):
        return Link(hashed.file, hashed.sha256)
    return hashed


def failure_for(path: Path, skip: SkipFile) -> Failure:
    """A file refused before its content was known: recorded by path alone."""
    transient = isinstance(skip, Unreadable)
    return Failure(FileInfo(storable(path), 0, 0), skip.reason, transient=transient)


def decode_or_fail(
    hashed: Hashed, geometry: Geometry, max_pixels: int, memory: DecodeMemory | None = None
) -> Decoded | Failure:
    try:
        return decode(hashed, geometry, max_pixels, memory)
    except BadImage as bad:  # the content is bad: remembered with its hash
        return Failure(hashed.file, bad.reason, sha256=hashed.sha256)
    except Unreadable as unreadable:  # the file moved under us: try again later
        return Failure(hashed.file, unreadable.reason, sha256=hashed.sha256, transient=True)


def classify(classifier: Classifier, images: list[Decoded]) -> list[Tagged]:
    """One forward pass for the batch: tags and embeddings. The results carry no pixels, so
    that a stalled writer does not hold 150 kB an image."""
    tags, embeddings = classifier.analyse(np.stack([image.pixels for image in images]))
    return [
        Tagged(dataclasses.replace(image, pixels=_NO_PIXELS), image_tags, classifier.id, vector)
        for image, image_tags, vector in zip(images, tags, embeddings, strict=True)
    ]
