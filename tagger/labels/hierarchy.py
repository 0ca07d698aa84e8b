"""WordNet above the 1000 classes: `dog` for a photo of a beagle, and names people search for.

ImageNet's classes are WordNet 3.0 noun synsets; tagger/data/wordnet_hierarchy.tsv (built by
scripts/build_hierarchy.py) holds them and all their hypernyms. From the full softmax, the
score of an ancestor is the summed probability of the classes below it, so five dog breeds at
0.15 make `dog` 0.75. No torch here: the classifier's post-processing calls `derived_tags`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from importlib import resources
from typing import TYPE_CHECKING

from tagger.errors import TaggerError
from tagger.labels.classes import imagenet_classes
from tagger.labels.names import chinese_names
from tagger.records import Tag

if TYPE_CHECKING:  # numpy only where probabilities are summed: `tagger query` needs none
    import numpy as np
    import numpy.typing as npt

_WNID = re.compile(r"^n\d{8}$")


class LabelError(TaggerError):
    """A label name that matches nothing, or more than one thing."""


@dataclass(frozen=True)
class Synset:
    wnid: str
    name: str  # torchvision's name for a class, else WordNet's head word ("domestic cat")
    lemmas: tuple[str, ...]  # WordNet's words, underscores kept ("domestic_cat")
    parents: tuple[str, ...]  # first = the main line, used to draw a tree
    hints: tuple[str, ...]  # words of hyponyms not in the table ("puppy" under "dog")
    class_index: int | None  # None for an ancestor, which only the hierarchy derives
    zh: tuple[str, ...] = ()  # Chinese names, the short one first (labels/names.py)


def normalise(name: str) -> str:
    """How names are compared: case, underscores and runs of spaces don't matter."""
    return " ".join(name.replace("_", " ").lower().split())


class Hierarchy:
    """The 1000 classes and their WordNet ancestors, with lookups by name and by wnid."""

    def __init__(self, synsets: Iterable[Synset]) -> None:
        self.synsets = {s.wnid: s for s in synsets}
        self.classes = sorted(
            (s for s in self.synsets.values() if s.class_index is not None),
            key=lambda s: s.class_index or 0,
        )
        self.ancestor_wnids = sorted(w for w, s in self.synsets.items() if s.class_index is None)
        self._column = {wnid: i for i, wnid in enumerate(self.ancestor_wnids)}

    def __getitem__(self, wnid: str) -> Synset:
        return self.synsets[wnid]

    def class_wnid(self, class_index: int | None) -> str:
        if class_index is None:
            raise ValueError("a model tag without a class index")
        return self.classes[class_index].wnid

    def ancestors(self, wnid: str) -> list[str]:
        """The hypernym closure of `wnid`, nearest first (breadth first), without itself."""
        seen: dict[str, None] = {}
        frontier = list(self.synsets[wnid].parents)
        while frontier:
            parent = frontier.pop(0)
            if parent not in seen:
                seen[parent] = None
                frontier += self.synsets[parent].parents
        return list(seen)

    def main_line(self, wnid: str) -> list[str]:
        """`wnid` and its first parent, that one's first parent... up to `entity`."""
        line = [wnid]
        while self.synsets[line[-1]].parents:
            line.append(self.synsets[line[-1]].parents[0])
        return line

    @cached_property
    def _children(self) -> dict[str, list[str]]:
        below: dict[str, list[str]] = {}
        for synset in self.synsets.values():
            for parent in synset.parents:
                below.setdefault(parent, []).append(synset.wnid)
        return below

    def subtree(self, wnid: str) -> frozenset[str]:
        """`wnid` and everything below it: the wnids whose tags count as `wnid` (walked down
        from it: one label's subtree, not every synset's ancestors, for a quick query)."""
        found = {wnid}
        frontier = [wnid]
        while frontier:
            for child in self._children.get(frontier.pop(), ()):
                if child not in found:
                    found.add(child)
                    frontier.append(child)
        return frozenset(found)

    @cached_property
    def _class_columns(self) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """The classes below each ancestor, ancestor after ancestor, and where each starts.

        About 12 ancestors per class: gathering these ~12,000 pairs and summing runs is
        several times faster than a dense (1000 x 860) product for a batch.
        """
        import numpy as np

        below: list[list[int]] = [[] for _ in self.ancestor_wnids]
        for synset in self.classes:
            for ancestor in self.ancestors(synset.wnid):
                below[self._column[ancestor]].append(synset.class_index or 0)
        starts = np.cumsum([0] + [len(b) for b in below[:-1]])
        return np.array([c for b in below for c in b], dtype=np.intp), starts.astype(np.intp)

    def masses(self, probs: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """(N, ancestors): each ancestor's summed probability of its classes, per row."""
        import numpy as np

        classes, starts = self._class_columns
        rows = np.asarray(probs, dtype=np.float32)
        return np.add.reduceat(rows[:, classes], starts, axis=1)

    @cached_property
    def depth(self) -> npt.NDArray[np.int32]:
        """Per ancestor column, its steps below `entity`: ties go to the more specific."""
        import numpy as np

        return np.array([len(self.main_line(w)) for w in self.ancestor_wnids], dtype=np.int32)

    @cached_property
    def ancestor_names(self) -> list[str]:
        return [self.synsets[w].name for w in self.ancestor_wnids]

    def column(self, wnid: str) -> int | None:
        """The ancestor's column in `masses`, None for a class."""
        return self._column.get(wnid)

    @cached_property
    def _by_name(self) -> dict[str, list[Synset]]:
        index: dict[str, list[Synset]] = {}
        for synset in self.synsets.values():
            for word in {normalise(w) for w in (synset.name, *synset.lemmas, *synset.zh)}:
                index.setdefault(word, []).append(synset)
        return index

    @cached_property
    def _by_hint(self) -> dict[str, list[Synset]]:
        index: dict[str, list[Synset]] = {}
        for synset in self.synsets.values():
            for word in {normalise(w) for w in synset.hints}:
                index.setdefault(word, []).append(synset)
        return index

    def resolve(self, name: str) -> list[Synset]:
        """What a user's label means, or a LabelError that says what to type instead.

        In order: a wnid; the synsets the word is the name of (`cat` is the cat, not the big
        cat, whose synonym it also is), or else those it is a WordNet synonym of (`domestic_dog`
        is `dog`); a word of a class name, as before the hierarchy (`persian` finds "Persian
        cat"); a word WordNet files under a stored label (`puppy`): an error naming it.
        A word with several senses means all of them (`car`: automobiles and railway cars);
        `ambiguity` says so, and a wnid picks one.
        """
        wanted = normalise(name)
        if not wanted:
            raise LabelError("the label is empty")
        if _WNID.match(wanted) and wanted in self.synsets:
            return [self.synsets[wanted]]
        found = self._by_name.get(wanted, [])
        own = [
            s
            for s in found
            if wanted
            in (normalise(s.name), normalise(s.lemmas[0]), normalise(s.zh[0] if s.zh else ""))
        ]
        found = own or found
        if found:
            return found
        word = re.compile(rf"(^|[\s-]){re.escape(wanted)}($|[\s-])")
        found = [s for s in self.classes if word.search(normalise(s.name))]
        if found:
            return found
        if hinted := self._by_hint.get(wanted):
            choices = " or ".join(f"label:{_term_word(s)}" for s in hinted)
            where = ", ".join(self.describe(s) for s in hinted)
            raise LabelError(
                f"{name!r} is not a label tagger stores; WordNet files it under {where}: "
                f"try {choices}"
            )
        close: list[str] = []
        for near in difflib.get_close_matches(wanted, list(self._by_name), n=6, cutoff=0.7):
            if near.replace(" ", "") not in {c.replace(" ", "") for c in close}:
                close.append(near)  # "hotdog" and "hot dog" are one suggestion
        close = close[:3]
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise LabelError(
            f"no ImageNet label matches {name!r}{hint} (`tagger labels --all` lists them)"
        )

    def ambiguity(self, name: str) -> str | None:
        """A note for a name that means several synsets, listing them; None otherwise."""
        try:
            found = self.resolve(name)
        except LabelError:
            return None
        if len(found) < 2 or normalise(name) not in self._by_name:
            return None  # one synset, or a word of several class names (`terrier`...)
        senses = ", ".join(self.describe(s, chinese=not name.isascii()) for s in found)
        return f"{name!r} means {senses}; give a wnid for just one"

    def describe(self, synset: Synset, chinese: bool = False) -> str:
        """`'crane bird' (n02012849, a kind of wading bird)`: enough to tell synsets apart;
        with `chinese`, `'crane bird' 鹤 (n02012849, a kind of wading bird)`."""
        kind = self.synsets[synset.parents[0]].name if synset.parents else "top"
        zh = f" {synset.zh[0]}" if chinese and synset.zh else ""
        return f"{synset.name!r}{zh} ({synset.wnid}, a kind of {kind})"


def _term_word(synset: Synset) -> str:
    """How to write `synset` in a query term: its name if that survives the shell and the
    term syntax (`domestic_cat`), else its wnid."""
    name = synset.name.replace(" ", "_")
    return name if re.fullmatch(r"[\w.'-]+", name) else synset.wnid


@cache
def hierarchy() -> Hierarchy:
    """The shipped table, read once (tagger/data/wordnet_hierarchy.tsv)."""
    text = resources.files("tagger").joinpath("data/wordnet_hierarchy.tsv").read_text("utf-8")
    classes = {c.wnid: c for c in imagenet_classes()}
    chinese = chinese_names()
    synsets = []
    for line in text.splitlines()[1:]:
        wnid, parents, lemmas, hints = line.split("\t")
        known = classes.get(wnid)
        words = tuple(lemmas.split())
        synsets.append(
            Synset(
                wnid=wnid,
                name=known.name if known else words[0].replace("_", " "),
                lemmas=words,
                parents=tuple(parents.split()),
                hints=tuple(hints.split()),
                class_index=known.index if known else None,
                zh=(chinese[wnid].short, *chinese[wnid].synonyms) if wnid in chinese else (),
            )
        )
    return Hierarchy(synsets)


@dataclass(frozen=True)
class LabelRules:
    """Which labels are stored at tag time: `[labels]` in the settings, names resolved.

    `min_score` is the floor for derived labels; `min_scores` (by wnid) override it per label
    and also hold back a class the model gives too easily; `hidden` wnids are never stored.
    """

    derive: bool = True
    min_score: float = 0.2
    min_scores: Mapping[str, float] = field(default_factory=dict)
    # entity, physical entity, abstraction, object, whole: above (nearly) every photo.
    hidden: frozenset[str] = frozenset(
        {"n00001740", "n00001930", "n00002137", "n00002684", "n00003553"}
    )

    @classmethod
    def from_names(
        cls,
        derive: bool,
        min_score: float,
        min_scores: Mapping[str, float],
        hide: Sequence[str],
    ) -> LabelRules:
        """Rules from the names a user wrote in `[labels]`; a name that means nothing fails."""
        tree = hierarchy()

        def one(name: str) -> str:
            try:
                found = tree.resolve(name)
            except LabelError as exc:
                raise LabelError(f"labels setting: {exc}") from None
            if len(found) != 1:
                senses = ", ".join(tree.describe(s) for s in found)
                raise LabelError(f"labels setting: {name!r} means {senses}; give one wnid")
            return found[0].wnid

        return cls(
            derive=derive,
            min_score=min_score,
            min_scores={one(name): score for name, score in min_scores.items()},
            hidden=frozenset(one(name) for name in hide),
        )

    @cached_property
    def thresholds(self) -> npt.NDArray[np.float32]:
        """Per ancestor column: the score it needs to be stored (inf = never)."""
        import numpy as np

        tree = hierarchy()
        limits = np.full(len(tree.ancestor_wnids), self.min_score, dtype=np.float32)
        for wnid, score in self.min_scores.items():
            if (col := tree.column(wnid)) is not None:
                limits[col] = score
        for wnid in self.hidden:
            if (col := tree.column(wnid)) is not None:
                limits[col] = np.inf
        return limits

    def keeps(self, tag: Tag) -> bool:
        return tag.wnid not in self.hidden and tag.score >= self.min_scores.get(tag.wnid, 0.0)

    def apply(
        self, direct: Sequence[Sequence[Tag]], probs: npt.NDArray[np.floating]
    ) -> list[list[Tag]]:
        """Each image's model tags (with wnids, minus held-back ones), then its derived tags."""
        tree = hierarchy()
        derived = derived_tags(probs, self) if self.derive else [[] for _ in direct]
        out = []
        for tags, extra in zip(direct, derived, strict=True):
            named = [
                Tag(t.label, t.class_index, t.score, 0, tree.class_wnid(t.class_index))
                for t in tags
            ]
            kept = [t for t in named if self.keeps(t)]
            out.append(
                [
                    Tag(t.label, t.class_index, t.score, rank, t.wnid, t.derived)
                    for rank, t in enumerate([*kept, *extra], 1)
                ]
            )
        return out


def derived_tags(probs: npt.NDArray[np.floating], rules: LabelRules) -> list[list[Tag]]:
    """For each row of softmax probabilities (N, 1000): the ancestors whose summed probability
    passes `rules`, best first, as derived tags (rank 0: the caller numbers them)."""
    import numpy as np

    tree = hierarchy()
    masses = tree.masses(probs)
    passed = masses >= rules.thresholds
    result = []
    names, wnids = tree.ancestor_names, tree.ancestor_wnids
    for row, keep in zip(masses, passed, strict=True):
        columns = np.flatnonzero(keep)
        columns = columns[np.lexsort((-tree.depth[columns], -row[columns]))]
        scores = np.minimum(row[columns], 1.0).tolist()
        result.append(
            [
                Tag(names[c], None, score, 0, wnids[c], True)
                for c, score in zip(columns.tolist(), scores, strict=True)
            ]
        )
    return result
