"""Regenerate tagger/data/wordnet_hierarchy.tsv from WordNet 3.0's noun database.

The table holds every synset on the hypernym paths of the 1000 ImageNet-1k classes (the classes
themselves and all their ancestors), so tagger can sum class probabilities into `dog`, `cat`,
`bird`, ... at tag time without WordNet installed. Columns:

- wnid: ``n`` + the 8-digit noun offset (the ImageNet id);
- parents: the wnids of its hypernyms and instance hypernyms, WordNet's order (first = main);
- lemmas: its WordNet words, first = the head word, space separated (underscores kept);
- hints: words of its direct hyponyms that are *not* in the table (``puppy`` under ``dog``),
  so a search for them can say which stored label to use; left empty for the few synsets above
  more than HINT_MAX_CLASSES classes (``object`` would otherwise claim ``film``, ``souvenir``...).

Source: Debian ``wordnet-base`` (``apt-get install wordnet-base``: /usr/share/wordnet/data.noun);
its noun offsets are Princeton WordNet 3.0's (checked: tabby = 02123045, see the asserts below).

Run: python scripts/build_hierarchy.py [/usr/share/wordnet/data.noun]

data.noun is read directly (its format is wndb(5WN): one synset per line, pointers by offset)
rather than through NLTK or `wn`: NLTK will not read Debian's copy (it wants `lexnames` and
`index.sense`, which wordnet-base lacks) and `wn` 0.0.23's copy has CRLF line endings that
break its byte offsets; the twenty lines below need neither.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ROOT / "tagger" / "data" / "imagenet1k.tsv"
OUT = ROOT / "tagger" / "data" / "wordnet_hierarchy.tsv"

# Class wnid -> head words expected, in order, on its main line of hypernyms (first parents).
KNOWN_WALKS = {
    "n02123045": [  # tabby
        "domestic_cat",
        "cat",
        "feline",
        "carnivore",
        "placental",
        "mammal",
        "vertebrate",
        "chordate",
        "animal",
    ],
    "n02099601": ["retriever", "sporting_dog", "hunting_dog", "dog", "canine", "carnivore"],
    "n01818515": ["parrot", "bird", "vertebrate"],  # macaw
}
HINT_MAX_CLASSES = 400  # animal (398 classes) keeps its hints; artifact, object, whole... don't
KNOWN_WNIDS = {"n02084071": "dog", "n01503061": "bird", "n02121620": "cat", "n00015388": "animal"}


@dataclass
class Synset:
    wnid: str
    lemmas: list[str]
    parents: list[str]
    children: list[str] = field(default_factory=list)


def read_nouns(path: Path) -> dict[str, Synset]:
    """Every noun synset of a WordNet data.noun file (format: wndb(5WN))."""
    synsets: dict[str, Synset] = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("  "):  # the licence header
                continue
            fields = line.split(" | ", 1)[0].split()
            offset, word_count = fields[0], int(fields[3], 16)
            lemmas = fields[4 : 4 + 2 * word_count : 2]
            at = 4 + 2 * word_count
            pointer_count = int(fields[at])
            parents = []
            for i in range(pointer_count):
                symbol, target, pos = fields[at + 1 + 4 * i : at + 4 + 4 * i]
                if symbol in ("@", "@i") and pos == "n":
                    parents.append("n" + target)
            synsets["n" + offset] = Synset("n" + offset, lemmas, parents)
    for synset in synsets.values():
        for parent in synset.parents:
            synsets[parent].children.append(synset.wnid)
    return synsets


def ancestors(synsets: dict[str, Synset], wnid: str) -> list[str]:
    """The hypernym closure of `wnid`, breadth first (nearest first), without `wnid`."""
    seen: list[str] = []
    frontier = list(synsets[wnid].parents)
    while frontier:
        wnid = frontier.pop(0)
        if wnid not in seen:
            seen.append(wnid)
            frontier += synsets[wnid].parents
    return seen


def main(data_noun: str = "/usr/share/wordnet/data.noun") -> None:
    synsets = read_nouns(Path(data_noun))
    rows = [line.split("\t") for line in CLASSES.read_text().splitlines()[1:]]
    classes = [wnid for _, wnid, _ in rows]
    assert len(classes) == 1000 and all(w in synsets for w in classes), "a class is not in WordNet"
    for (_, wnid, name), lemmas in zip(rows, (synsets[w].lemmas for w in classes), strict=True):
        spelled = {lemma.replace("_", " ").lower() for lemma in lemmas}
        if name.lower() not in spelled and name not in ("crane bird", "maillot tank suit"):
            raise AssertionError(f"{wnid} {name!r} is not one of its lemmas {lemmas}")
    closure = {wnid: ancestors(synsets, wnid) for wnid in classes}
    overlap = [w for w in classes if set(closure[w]) & set(classes)]
    assert not overlap, f"classes that descend from other classes: {overlap}"
    for wnid, walk in KNOWN_WALKS.items():
        chain = []  # the main line: first parent after first parent
        while synsets[wnid].parents:
            wnid = synsets[wnid].parents[0]
            chain.append(synsets[wnid].lemmas[0])
        assert [head for head in chain if head in walk] == walk, (wnid, chain)
    for wnid, head in KNOWN_WNIDS.items():
        assert synsets[wnid].lemmas[0] == head, (wnid, synsets[wnid].lemmas)
    table = sorted(set(classes) | {a for walk in closure.values() for a in walk})
    in_table = set(table)
    covered = {wnid: sum(wnid in closure[c] for c in classes) for wnid in table}
    lines = ["wnid\tparents\tlemmas\thints"]
    for wnid in table:
        synset = synsets[wnid]
        hints: list[str] = []
        for child in synset.children if covered[wnid] <= HINT_MAX_CLASSES else []:
            if child not in in_table:
                hints += [h for h in synsets[child].lemmas if h not in hints]
        lines.append(
            f"{wnid}\t{' '.join(synset.parents)}\t{' '.join(synset.lemmas)}\t{' '.join(hints)}"
        )
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {OUT}: {len(table)} synsets ({len(table) - 1000} ancestors of the 1000 classes)")


if __name__ == "__main__":
    main(*sys.argv[1:])
