"""The shipped WordNet table, derived labels from softmax rows, and label names."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from tagger.labels.classes import imagenet_classes
from tagger.labels.hierarchy import LabelError, LabelRules, derived_tags, hierarchy
from tests.helpers import ROOT

DATA_NOUN = Path("/usr/share/wordnet/data.noun")
DOG = "n02084071"


def heads(wnids: list[str]) -> list[str]:
    return [hierarchy()[w].lemmas[0] for w in wnids]


def test_known_wnids_and_the_tabby_walk() -> None:
    tree = hierarchy()
    assert len(tree.classes) == 1000 and len(tree.synsets) == 1860
    known = {0: ("n01440764", "tench"), 281: ("n02123045", "tabby"), 970: ("n09193705", "alp")}
    for index, (wnid, name) in known.items():
        assert (tree.classes[index].wnid, tree.classes[index].name) == (wnid, name)
        assert tree[wnid].class_index == index
    assert heads(tree.main_line("n02123045")) == [
        "tabby",
        "domestic_cat",
        "cat",
        "feline",
        "carnivore",
        "placental",
        "mammal",
        "vertebrate",
        "chordate",
        "animal",
        "organism",
        "living_thing",
        "whole",
        "object",
        "physical_entity",
        "entity",
    ]
    # Known (class, ancestor) pairs, including a second parent off the main line.
    pairs = [
        ("n02123045", "n02121620"),  # tabby -> cat
        ("n02099601", DOG),  # golden retriever -> dog
        ("n02099601", "n01317541"),  # golden retriever -> domestic animal (dog's 2nd parent)
        ("n01818515", "n01503061"),  # macaw -> bird
        ("n07697537", "n07557434"),  # hotdog -> dish
        ("n09193705", "n09287968"),  # alp -> geological formation
    ]
    for child, ancestor in pairs:
        assert ancestor in tree.ancestors(child), (child, ancestor)
    assert "n02121620" not in tree.ancestors("n02129604")  # a tiger is a big cat, not a cat


def test_no_class_is_above_another_and_every_class_reaches_entity() -> None:
    tree = hierarchy()
    wnids = {c.wnid for c in imagenet_classes()}
    for synset in tree.classes:
        assert tree.main_line(synset.wnid)[-1] == "n00001740"  # entity
        assert not wnids & set(tree.ancestors(synset.wnid))
    assert sum(DOG in tree.ancestors(c.wnid) for c in tree.classes) == 118


def test_five_breeds_at_015_make_dog_075() -> None:
    tree = hierarchy()
    breeds = [c.class_index for c in tree.classes if DOG in tree.ancestors(c.wnid)][:5]
    probs = np.zeros((2, 1000), dtype=np.float32)
    probs[0, breeds] = 0.15
    probs[0, 0] = 0.25  # a tench
    probs[1, 281] = 1.0  # a tabby
    rows = derived_tags(probs, LabelRules(min_score=0.2, hidden=frozenset()))
    found = {t.label: round(t.score, 4) for t in rows[0]}
    assert found["dog"] == 0.75 and found["canine"] == 0.75 and found["fish"] == 0.25
    assert found["animal"] == 1.0 and found["entity"] == 1.0 and "cat" not in found
    assert "entity" not in {t.label for t in derived_tags(probs, LabelRules())[0]}
    assert all(t.derived and t.class_index is None and t.wnid for t in rows[0])
    scores = [t.score for t in rows[0]]
    assert scores == sorted(scores, reverse=True)
    # Equal scores: the more specific label first.
    equal = [t.label for t in rows[0] if round(t.score, 4) == 0.75]
    assert equal.index("dog") < equal.index("canine") < equal.index("carnivore")
    assert {t.label for t in rows[1]} >= {"domestic cat", "cat", "feline", "animal"}


def test_masses_are_the_sums_over_each_ancestors_classes() -> None:
    tree = hierarchy()
    probs = np.random.default_rng(7).dirichlet(np.full(1000, 0.05), size=4).astype(np.float32)
    masses = tree.masses(probs)
    assert masses.shape == (4, 860)
    for wnid in ("n02084071", "n00015388", "n00021939", "n01503061", "n07557434"):
        classes = [
            tree[w].class_index for w in tree.subtree(wnid) if tree[w].class_index is not None
        ]
        column = tree.column(wnid)
        assert column is not None
        np.testing.assert_allclose(masses[:, column], probs[:, classes].sum(axis=1), rtol=1e-5)
    entity = tree.column("n00001740")
    np.testing.assert_allclose(masses[:, entity], 1.0, rtol=1e-5)


def test_default_rules_are_the_default_settings() -> None:
    from tagger.config import Settings

    labels = Settings().labels
    assert LabelRules() == LabelRules.from_names(
        labels.derived, labels.min_score, labels.min_scores, labels.hide
    )


def test_rules_hide_and_raise_thresholds_for_classes_and_derived() -> None:
    tree = hierarchy()
    probs = np.zeros((1, 1000), dtype=np.float32)
    probs[0, 281], probs[0, 282], probs[0, 0] = 0.6, 0.3, 0.1  # tabby, tiger cat, tench
    rules = LabelRules.from_names(
        derive=True, min_score=0.15, min_scores={"tiger cat": 0.5, "cat": 0.95}, hide=["entity"]
    )
    from tagger.records import Tag

    direct = [[Tag("tabby", 281, 0.6, 1), Tag("tiger cat", 282, 0.3, 2), Tag("tench", 0, 0.1, 3)]]
    tags = rules.apply(direct, probs)[0]
    labels = [t.label for t in tags]
    assert labels[:2] == ["tabby", "tench"]  # tiger cat held back below 0.5
    assert [t.rank for t in tags] == list(range(1, len(tags) + 1))
    assert tags[0].wnid == "n02123045" and not tags[0].derived
    assert "feline" in labels and "cat" not in labels and "entity" not in labels
    assert "fish" not in labels  # 0.1 < 0.15
    assert tree["n00001740"].name == "entity"
    off = LabelRules(derive=False).apply(direct, probs)[0]
    assert [t.label for t in off] == ["tabby", "tiger cat", "tench"]
    with pytest.raises(LabelError, match="labels setting: no ImageNet label matches 'dgo'"):
        LabelRules.from_names(True, 0.1, {}, ["dgo"])


@pytest.mark.parametrize(
    ("name", "wnid"),
    [
        ("dog", DOG),
        ("domestic_dog", DOG),
        ("Domestic Dog", DOG),
        ("canis familiaris", DOG),
        ("n02084071", DOG),
        ("cat", "n02121620"),  # the cat, not the big cat that also has the word
        ("big cat", "n02127808"),
        ("tabby", "n02123045"),
        ("tabby cat", "n02123045"),
        ("crane bird", "n02012849"),
        ("bird", "n01503061"),
    ],
)
def test_names_and_synonyms_resolve(name: str, wnid: str) -> None:
    assert [s.wnid for s in hierarchy().resolve(name)] == [wnid]


def test_names_that_need_help() -> None:
    tree = hierarchy()
    assert [s.name for s in tree.resolve("persian")] == ["Persian cat"]  # a word of a class
    with pytest.raises(LabelError) as puppy:
        tree.resolve("puppy")
    assert str(puppy.value) == (
        "'puppy' is not a label tagger stores; WordNet files it under "
        "'dog' (n02084071, a kind of canine): try label:dog"
    )
    # A word with several senses means all of them, and says so.
    assert [s.wnid for s in tree.resolve("crane")] == ["n02012849", "n03126707"]
    assert tree.ambiguity("crane") == (
        "'crane' means 'crane bird' (n02012849, a kind of wading bird), "
        "'crane' (n03126707, a kind of lifting device); give a wnid for just one"
    )
    assert [s.name for s in tree.resolve("car")] == ["car", "car"]
    assert tree.ambiguity("dog") is None and tree.ambiguity("terrier") is None
    assert len(tree.resolve("bull")) == 2 and tree.ambiguity("bull") is None  # class words
    with pytest.raises(LabelError, match=r"labels setting: 'plant' means .*n00017222.*wnid"):
        LabelRules.from_names(True, 0.2, {"plant": 0.5}, [])
    with pytest.raises(LabelError, match=r"did you mean 'hotdog'\?"):
        tree.resolve("hotdgo")
    with pytest.raises(LabelError, match="empty"):
        tree.resolve("  ")


@pytest.mark.skipif(not DATA_NOUN.is_file(), reason="WordNet (Debian wordnet-base) not installed")
def test_build_script_reproduces_the_shipped_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = ROOT / "scripts" / "build_hierarchy.py"
    spec = importlib.util.spec_from_file_location("build_hierarchy", script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "build_hierarchy", module)
    spec.loader.exec_module(module)
    shipped = Path(module.OUT)
    monkeypatch.setattr(module, "OUT", tmp_path / "table.tsv")
    module.main(str(DATA_NOUN))
    assert (tmp_path / "table.tsv").read_bytes() == shipped.read_bytes()
