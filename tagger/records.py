"""The small values handed from one pipeline stage to the next."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: `tagger query` need not load numpy
    import numpy as np
    import numpy.typing as npt


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class FileInfo:
    """A file as found on disk; size and mtime tell whether it changed since last time."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Hashed:
    file: FileInfo
    sha256: str


@dataclass(frozen=True)
class Decoded:
    """A decoded image, already cropped and resized to the model's input (HxWx3 uint8)."""

    hashed: Hashed
    pixels: npt.NDArray[np.uint8]
    width: int
    height: int
    format: str


@dataclass(frozen=True)
class Tag:
    """A label of an image: a model class, or (derived) a WordNet ancestor of classes."""

    label: str
    class_index: int | None  # None for a derived label
    score: float
    rank: int
    wnid: str = ""
    derived: bool = False


@dataclass(frozen=True)
class ModelId:
    """Which model produced a result; a change of either field means results are stale."""

    name: str
    weights_sha256: str


@dataclass(frozen=True)
class Failure:
    """A file that could not be tagged, with the reason shown by `tagger errors`.

    With a sha256 and not transient, the content is bad (kept until the file changes);
    a transient failure (vanished, unreadable, changed while read) is tried again.
    """

    file: FileInfo
    reason: str
    sha256: str | None = None
    transient: bool = False  # vanished, permission, changed while read: worth a retry


@dataclass(frozen=True)
class Gone:
    """A file or folder that was deleted or moved out of sight: its paths are marked missing."""

    path: str


@dataclass(frozen=True)
class Moved:
    """A file or folder renamed within the watched tree: its rows follow it, no re-tagging."""

    src: str
    dst: str


@dataclass(frozen=True)
class Swept:
    """After a full walk of `root`: every stored path under it that is not `present` is gone,
    unless it was stored after the walk began (it arrived while the walk was elsewhere) or
    lies under a folder the walk could not read (`unreadable`: (folder, why) pairs)."""

    root: str
    present: frozenset[str]
    started: datetime
    unreadable: tuple[tuple[str, str], ...] = ()


# What the pipeline asks the writer to record, beside Failure, Gone, Moved and Swept.
@dataclass(frozen=True)
class Tagged:
    decoded: Decoded
    tags: list[Tag]
    model: ModelId
    # The pooled features, L2-normalised float16: stored beside the tags, same transaction.
    embedding: npt.NDArray[np.float16] | None = None


@dataclass(frozen=True)
class Link:
    """A path that holds content already tagged, or being tagged in this run."""

    file: FileInfo
    sha256: str


@dataclass(frozen=True)
class Seen:
    """An unchanged path that had been marked missing and is back."""

    file: FileInfo


class Outcome(StrEnum):
    NEW = "new"
    DUPLICATE = "duplicate"
    UNCHANGED = "unchanged"
    FAILED = "failed"
    UNREADABLE = "unreadable"  # failed, but worth another try (see Failure.transient)
    MOVED = "moved"
    MISSING = "missing"


@dataclass
class Summary:
    """What a run did, counted per file."""

    counts: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))

    def add(self, outcome: Outcome) -> None:
        self.counts[outcome] += 1

    @property
    def total(self) -> int:
        """Files looked at (moves and removals are counted apart)."""
        c = self.counts
        return c[Outcome.NEW] + c[Outcome.DUPLICATE] + c[Outcome.UNCHANGED] + self.failed

    @property
    def failed(self) -> int:
        return self.counts[Outcome.FAILED] + self.counts[Outcome.UNREADABLE]

    def __str__(self) -> str:
        c = self.counts
        text = (
            f"{self.total} files: {c[Outcome.NEW]} new, {c[Outcome.DUPLICATE]} duplicate content, "
            f"{c[Outcome.UNCHANGED]} unchanged, {self.failed} failed"
        )
        extra = [f"{c[o]} {o.value}" for o in (Outcome.MOVED, Outcome.MISSING) if c[o]]
        return ", ".join([text, *extra])
