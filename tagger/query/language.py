"""The `tagger query` language, modelled on beets' `beet ls`; parsing only, no database.

    label:dog  label:dog,cat  ^label:cat  dog  score:0.5..  score:..0.2  score:0.3..0.8
    path:holidays/2024/*  added:-7d..  added:2024-05  added:2024-01-01..2024-06-30  format:png

Terms are ANDed; `^` negates one; commas in label and format are ORs. A bare word is a label.
Errors name the column of the problem, so `score:0.5..x` points at the `x`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from tagger.errors import TaggerError
from tagger.labels.hierarchy import LabelError, Synset, hierarchy

_T = TypeVar("_T")
FIELDS = ("label", "score", "path", "added", "format")
FORMAT_ALIASES = {"JPG": "JPEG", "JPE": "JPEG", "TIF": "TIFF", "HEIC": "HEIF"}
_RELATIVE = re.compile(r"^-(\d+)([hdwmy])$")
_UNITS = {"h": 1 / 24, "d": 1, "w": 7, "m": 30, "y": 365}  # m and y: 30 and 365 days
_ISO = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?)?)?)?$")


class QuerySyntaxError(TaggerError):
    """A term that cannot be read; the message shows the query and the column (1-based)."""

    def __init__(self, text: str, column: int, problem: str) -> None:
        super().__init__(f"query {text!r}, column {column + 1}: {problem}")
        self.column = column
        self.problem = problem


@dataclass(frozen=True)
class LabelTerm:
    synsets: tuple[Synset, ...]  # what the names resolved to; any of them matches
    wnids: frozenset[str]  # those and everything below them in WordNet
    negate: bool = False
    names: tuple[str, ...] = ()  # as the user wrote them


@dataclass(frozen=True)
class ScoreTerm:
    """Bounds (inclusive) on the labels' scores; on the best model label without a label."""

    low: float | None
    high: float | None
    negate: bool = False


@dataclass(frozen=True)
class PathTerm:
    like: tuple[str, ...]  # SQL LIKE patterns (escape: backslash), any of which matches
    negate: bool = False


@dataclass(frozen=True)
class AddedTerm:
    """When the path was first seen: start inclusive, end exclusive, both UTC."""

    start: datetime | None
    end: datetime | None
    negate: bool = False


@dataclass(frozen=True)
class FormatTerm:
    formats: tuple[str, ...]  # Pillow's names: JPEG, PNG, ...
    negate: bool = False


Term = LabelTerm | ScoreTerm | PathTerm | AddedTerm | FormatTerm


@dataclass(frozen=True)
class Query:
    terms: tuple[Term, ...]

    @property
    def labels(self) -> list[LabelTerm]:
        return [t for t in self.terms if isinstance(t, LabelTerm) and not t.negate]


Resolve = Callable[[str], list[Synset]]


def label_term(
    synsets: Sequence[Synset], negate: bool = False, names: Sequence[str] = ()
) -> LabelTerm:
    """The term matching `synsets` and everything below them (`label:dog` and the breeds)."""
    tree = hierarchy()
    wnids = frozenset(
        w
        for s in synsets
        # a label of one's own (`own:3`) has nothing below it
        for w in (tree.subtree(s.wnid) if s.wnid in tree.synsets else {s.wnid})
    )
    return LabelTerm(tuple(synsets), wnids, negate, tuple(names))


def notes(query: Query) -> list[str]:
    """What the user may not expect: label names with several meanings, all of them used."""
    tree = hierarchy()
    found = (
        tree.ambiguity(name)
        for term in query.terms
        if isinstance(term, LabelTerm)
        for name in term.names
    )
    return [note for note in found if note]


MAX_TERMS = 64  # more would only make SQLite's expression tree too deep


def parse(
    args: Sequence[str],
    now: datetime | None = None,
    resolve: Resolve | None = None,
    cwd: Path | None = None,
) -> Query:
    """Read the terms of a query (one per argument, as the shell split them)."""
    text = " ".join(args)
    if len(args) > MAX_TERMS:
        raise TaggerError(f"a query of {len(args)} terms; at most {MAX_TERMS}")
    parser = _Parser(text, now or datetime.now(UTC), resolve or hierarchy().resolve, cwd)
    terms: list[Term] = []
    column = 0
    for arg in args:
        try:
            terms.append(parser.term(arg, column))
        except OverflowError:  # added:-99999999999d..
            raise TaggerError(
                f"query {text!r}, column {column + 1}: {arg!r} is out of range"
            ) from None
        column += len(arg) + 1
    return Query(tuple(terms))


@dataclass
class _Parser:
    text: str
    now: datetime
    resolve: Resolve
    cwd: Path | None

    def fail(self, column: int, problem: str) -> QuerySyntaxError:
        return QuerySyntaxError(self.text, column, problem)

    def term(self, arg: str, at: int) -> Term:
        negate = arg.startswith("^")
        start = at + negate
        body = arg[negate:]
        field, colon, value = body.partition(":")
        if not colon:
            field, value = "label", body
        elif field not in FIELDS:
            raise self.fail(start, f"unknown field {field!r} (fields: {', '.join(FIELDS)})")
        at_value = start + (len(field) + 1 if colon else 0)
        if not value:
            raise self.fail(at_value, f"{field}: needs a value")
        if field == "label":
            return self.label(value, at_value, negate)
        if field == "score":
            low, high = self.range(value, at_value, self.score)
            if low is not None and high is not None and high < low:
                raise self.fail(at_value, f"score: the range {value} ends below its start")
            return ScoreTerm(low, high, negate)
        if field == "added":
            return self.added(value, at_value, negate)
        if field == "path":
            return PathTerm(self.path(value), negate)
        formats = []
        for part, offset in _split(value, ","):
            if not re.fullmatch(r"[A-Za-z0-9]+", part):
                raise self.fail(at_value + offset, f"format {part!r}: expected a name like png")
            formats.append(FORMAT_ALIASES.get(part.upper(), part.upper()))
        return FormatTerm(tuple(formats), negate)

    def label(self, value: str, at: int, negate: bool) -> LabelTerm:
        synsets: list[Synset] = []
        names = _split(value, ",")
        for name, offset in names:
            if not name.strip():
                raise self.fail(at + offset, "label: an empty name between commas")
            try:
                synsets += self.resolve(name)
            except LabelError as exc:
                raise self.fail(at + offset, str(exc)) from None
        return label_term(synsets, negate, [name for name, _ in names])

    def range(
        self, value: str, at: int, bound: Callable[[str, int], _T]
    ) -> tuple[_T | None, _T | None]:
        """`a..b`, `a..`, `..b`, or a single `a` (at least a)."""
        low_text, dots, high_text = value.partition("..")
        if not dots:
            return bound(value, at), None
        if not low_text and not high_text:
            raise self.fail(at, "a range needs at least one end: a.., ..b or a..b")
        low = bound(low_text, at) if low_text else None
        high = bound(high_text, at + len(low_text) + 2) if high_text else None
        return low, high

    def score(self, text: str, at: int) -> float:
        try:
            number = float(text)
        except ValueError:
            raise self.fail(at, f"score {text!r} is not a number") from None
        if not 0 <= number <= 1:
            raise self.fail(at, f"score {text} is outside 0..1")
        return number

    def added(self, value: str, at: int, negate: bool) -> AddedTerm:
        low, high = self.range(value, at, self.period)
        if ".." not in value:
            assert low is not None
            return AddedTerm(low[0], low[1], negate)
        start = low[0] if low else None
        # An ISO date as the end includes its whole day (month...); `-1d` ends at that moment.
        relative_end = _RELATIVE.match(value.partition("..")[2]) is not None
        end = (high[0] if relative_end else high[1]) if high else None
        if start is not None and end is not None and end <= start:
            raise self.fail(at, f"added: the range {value} ends before it starts")
        return AddedTerm(start, end, negate)

    def period(self, text: str, at: int) -> tuple[datetime, datetime]:
        """[start, end) of `-7d` (from then until now) or of an ISO date at its precision."""
        if match := _RELATIVE.match(text):
            start = self.now - timedelta(days=int(match.group(1)) * _UNITS[match.group(2)])
            return start, self.now
        match = _ISO.match(text)
        if not match:
            raise self.fail(
                at, f"date {text!r}: expected -7d, -12h, -2w, -3m, -1y or 2024, 2024-05, 2024-05-31"
            )
        parts = [int(p) for p in match.groups() if p is not None]
        try:
            year, month, day, hour, minute, second = _pad(parts)
            start = datetime(year, month, day, hour, minute, second)
        except ValueError as exc:
            raise self.fail(at, f"date {text!r}: {exc}") from None
        if len(parts) == 1:
            end = start.replace(year=start.year + 1)
        elif len(parts) == 2:
            end = (start + timedelta(days=32)).replace(day=1)
        else:
            end = start + {3: timedelta(days=1), 5: timedelta(minutes=1)}.get(
                len(parts), timedelta(seconds=1)
            )
        # Dates as written are local time; the database holds UTC.
        return start.astimezone(UTC), end.astimezone(UTC)

    def path(self, value: str) -> tuple[str, ...]:
        """LIKE patterns: `*` any characters (`/` too), `?` one; no wildcard = file or folder.

        An absolute (or `~`, `./`) pattern is anchored at the start; otherwise it may start
        at any folder: `holidays/2024/*` matches `/home/me/Pictures/holidays/2024/a.jpg`.
        """
        if value.startswith("~"):
            value = str(Path(value).expanduser())
        elif value.startswith(("./", "../")) or value in (".", ".."):
            value = str(((self.cwd or Path.cwd()) / value).resolve())
        value = value.rstrip("/") or "/"
        escaped = "".join("\\" + c if c in "%_\\" else c for c in value)
        like = escaped.replace("*", "%").replace("?", "_")
        prefix = "" if value.startswith("/") else "%/"
        if like == escaped:  # no wildcard: the file itself or a folder's contents
            return (prefix + like, prefix + like.rstrip("/") + "/%")
        return (prefix + like,)


def _pad(parts: list[int]) -> list[int]:
    """year, month, day, hour, minute, second with the missing ones at their first value."""
    return parts + [1, 1, 0, 0, 0][len(parts) - 1 :]


def _split(value: str, sep: str) -> list[tuple[str, int]]:
    """The parts of `value` with their offsets, for errors that point at the right one."""
    parts, offset = [], 0
    for part in value.split(sep):
        parts.append((part, offset))
        offset += len(part) + 1
    return parts
