"""Label names in Chinese: a display and query choice, never stored (tags keep wnids).

tagger/data/imagenet_zh.tsv names the 1000 classes, tagger/data/wordnet_zh.tsv the WordNet
ancestors people search by; tagger/data/README.md says where each name came from.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

Language = Literal["en", "zh"]
LANGUAGES: tuple[Language, ...] = ("en", "zh")
_SEPARATOR = "\uff1b"  # a full-width semicolon joins synonyms, as in the source table


@dataclass(frozen=True)
class ChineseName:
    short: str  # the name shown: the first of several synonyms
    synonyms: tuple[str, ...]  # the others, which queries accept too


@cache
def chinese_names() -> dict[str, ChineseName]:
    """wnid -> its Chinese name, for the classes and the named ancestors."""
    names: dict[str, ChineseName] = {}
    for table in ("data/imagenet_zh.tsv", "data/wordnet_zh.tsv"):
        resource = resources.files("tagger").joinpath(table)
        if not resource.is_file():
            continue
        lines = resource.read_text("utf-8").splitlines()
        columns = lines[0].split("\t")
        for line in lines[1:]:
            row = dict(zip(columns, line.split("\t"), strict=False))
            synonyms = tuple(s for s in row.get("zh_synonyms", "").split(_SEPARATOR) if s)
            names[row["wnid"]] = ChineseName(row["zh"], synonyms)
    return names


def chinese(wnid: str | None) -> str | None:
    found = chinese_names().get(wnid or "")
    return found.short if found else None


def shown(label: str, wnid: str | None, language: Language) -> str:
    """The name to print: Chinese where there is one and it is asked for, else English."""
    return (chinese(wnid) or label) if language == "zh" else label


def with_chinese(
    rows: Iterable[dict[str, Any]], language: Language, wnid_key: str = "wnid"
) -> list[dict[str, Any]]:
    """Rows with a `label_zh` beside the English `label` when Chinese is asked for."""
    if language != "zh":
        return list(rows)
    return [row | {"label_zh": chinese(row.get(wnid_key))} for row in rows]
