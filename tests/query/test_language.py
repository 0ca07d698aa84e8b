"""The query language: every term form, and errors that point at the problem."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tagger.labels.hierarchy import hierarchy
from tagger.query.language import (
    AddedTerm,
    FormatTerm,
    LabelTerm,
    PathTerm,
    QuerySyntaxError,
    ScoreTerm,
    notes,
    parse,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
DOG, CAT, TABBY = "n02084071", "n02121620", "n02123045"


def one(term: str) -> object:
    (parsed,) = parse([term], now=NOW, cwd=Path("/home/me")).terms
    return parsed


def local(*parts: int) -> datetime:
    return datetime(*parts).astimezone(UTC)  # type: ignore[arg-type, misc]


def test_label_terms() -> None:
    dog = one("label:dog")
    assert isinstance(dog, LabelTerm) and not dog.negate
    assert [s.wnid for s in dog.synsets] == [DOG]
    assert DOG in dog.wnids and "n02099601" in dog.wnids  # and golden retriever
    classes = {w for w in dog.wnids if hierarchy()[w].class_index is not None}
    assert len(classes) == 118 and "n02115641" not in dog.wnids  # a dingo is no dog
    either = one("label:dog,cat")
    assert isinstance(either, LabelTerm) and [s.wnid for s in either.synsets] == [DOG, CAT]
    assert TABBY in either.wnids and DOG in either.wnids
    nope = one("^label:cat")
    assert isinstance(nope, LabelTerm) and nope.negate and TABBY in nope.wnids
    bare = one("tabby")
    assert isinstance(bare, LabelTerm) and bare.wnids == {TABBY}
    assert dog.names == ("dog",)
    for synonym in ("label:domestic_dog", f"label:{DOG}", "Canis_familiaris"):
        same = one(synonym)
        assert isinstance(same, LabelTerm) and same.wnids == dog.wnids, synonym
    assert isinstance(crane := one("label:crane"), LabelTerm)  # both senses
    assert {s.name for s in crane.synsets} == {"crane", "crane bird"}
    assert notes(parse(["label:dog,crane", "^car"])) == [
        hierarchy().ambiguity("crane"),
        hierarchy().ambiguity("car"),
    ]
    assert isinstance(spaced := one("label:tiger cat"), LabelTerm)
    assert spaced.wnids == {"n02123159"}


@pytest.mark.parametrize(
    ("term", "low", "high"),
    [
        ("score:0.5..", 0.5, None),
        ("score:..0.2", None, 0.2),
        ("score:0.3..0.8", 0.3, 0.8),
        ("score:0.5", 0.5, None),
        ("score:1", 1.0, None),
    ],
)
def test_score_ranges(term: str, low: float | None, high: float | None) -> None:
    assert one(term) == ScoreTerm(low, high)
    assert one("^" + term) == ScoreTerm(low, high, negate=True)


@pytest.mark.parametrize(
    ("term", "like"),
    [
        ("path:holidays/2024/*", ("%/holidays/2024/%",)),
        ("path:/photos/IMG_?.jpg", ("/photos/IMG\\__.jpg",)),
        ("path:/photos/2024", ("/photos/2024", "/photos/2024/%")),
        ("path:/photos/2024/", ("/photos/2024", "/photos/2024/%")),
        ("path:holidays", ("%/holidays", "%/holidays/%")),
        ("path:./trip", ("/home/me/trip", "/home/me/trip/%")),
        ("path:/a/100%", ("/a/100\\%", "/a/100\\%/%")),
    ],
)
def test_path_globs(term: str, like: tuple[str, ...]) -> None:
    assert one(term) == PathTerm(like)


@pytest.mark.parametrize(
    ("term", "start", "end"),
    [
        ("added:-7d..", NOW - timedelta(days=7), None),
        ("added:-12h..", NOW - timedelta(hours=12), None),
        ("added:-2w", NOW - timedelta(days=14), NOW),
        ("added:..-1y", None, NOW - timedelta(days=365)),
        ("added:-7d..-1d", NOW - timedelta(days=7), NOW - timedelta(days=1)),
        ("added:2024", local(2024, 1, 1), local(2025, 1, 1)),
        ("added:2024-12", local(2024, 12, 1), local(2025, 1, 1)),
        ("added:2024-02-29", local(2024, 2, 29), local(2024, 3, 1)),
        ("added:2024-01-01..2024-06-30", local(2024, 1, 1), local(2024, 7, 1)),
        ("added:..2024-06", None, local(2024, 7, 1)),
        ("added:2024-05-01T10:30", local(2024, 5, 1, 10, 30), local(2024, 5, 1, 10, 31)),
    ],
)
def test_added_dates(term: str, start: datetime | None, end: datetime | None) -> None:
    assert one(term) == AddedTerm(start, end)


def test_format_and_combinations() -> None:
    assert one("format:png") == FormatTerm(("PNG",))
    assert one("format:jpg,HEIC,webp") == FormatTerm(("JPEG", "HEIF", "WEBP"))
    assert one("^format:gif") == FormatTerm(("GIF",), negate=True)
    query = parse(["label:dog", "^label:tabby", "score:0.5..", "format:png"], now=NOW)
    assert [type(t).__name__ for t in query.terms] == [
        "LabelTerm",
        "LabelTerm",
        "ScoreTerm",
        "FormatTerm",
    ]
    assert [t.synsets[0].wnid for t in query.labels] == [DOG]  # the positive ones
    assert parse([]).terms == ()


@pytest.mark.parametrize(
    ("args", "column", "problem"),
    [
        (["colour:red"], 1, "unknown field 'colour' (fields: label, score, path, added, format)"),
        (["label:dog", "^shape:round"], 12, "unknown field 'shape'"),
        (["label:"], 7, "label: needs a value"),
        (["label:dog,,cat"], 11, "label: an empty name between commas"),
        (["label:dog,hotdgo"], 11, "no ImageNet label matches 'hotdgo'; did you mean 'hotdog'?"),
        (["dog", "puppy"], 5, "'puppy' is not a label tagger stores"),
        (["label:dog", "score:0.5..x"], 22, "score 'x' is not a number"),
        (["score:abc"], 7, "score 'abc' is not a number"),
        (["score:1.5"], 7, "score 1.5 is outside 0..1"),
        (["score:0.8..0.2"], 7, "score: the range 0.8..0.2 ends below its start"),
        (["score:.."], 7, "a range needs at least one end"),
        (["added:-7x"], 7, "date '-7x': expected -7d"),
        (["added:2024-13"], 7, "date '2024-13': month must be in 1..12"),
        (["added:2024-01..2024-02-30"], 16, "date '2024-02-30': day is out of range"),
        (["added:2024-06..2024-01"], 7, "added: the range 2024-06..2024-01 ends before it starts"),
        (["added:-1d..-7d"], 7, "added: the range -1d..-7d ends before it starts"),
        (["format:png,.jpg"], 12, "format '.jpg': expected a name like png"),
        (["path:"], 6, "path: needs a value"),
    ],
)
def test_malformed_terms_name_the_column(args: list[str], column: int, problem: str) -> None:
    with pytest.raises(QuerySyntaxError) as caught:
        parse(args, now=NOW)
    assert caught.value.column + 1 == column
    assert caught.value.problem.startswith(problem)
    message = str(caught.value)
    assert message.startswith(f"query {' '.join(args)!r}, column {column}: {problem}")
    assert "\n" not in message
