"""Chinese label names: the reviewed table, queries in Chinese, and output that lines up."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tagger.cli.output import width
from tagger.labels.hierarchy import hierarchy
from tagger.labels.names import chinese, chinese_names
from tests.helpers import PHOTOS, Result


def test_every_label_has_one_chinese_name_of_its_own() -> None:
    tree = hierarchy()
    names = chinese_names()
    assert set(names) == set(tree.synsets)  # 1000 classes and every ancestor
    shorts = Counter(name.short for name in names.values())
    assert [name for name, count in shorts.items() if count > 1] == []


def test_the_reviewed_names_are_fixed() -> None:
    by_name = {s.name: s.wnid for s in hierarchy().classes}
    assert chinese(by_name["red wolf"]) != "红太狼"  # a cartoon wolf
    assert chinese(by_name["llama"]) not in ("骆驼", "羊驼")  # a camel; an alpaca
    assert chinese(by_name["sunglass"]) != chinese(by_name["sunglasses"])
    assert chinese(by_name["notebook"]) != "平板电脑"  # a tablet


@pytest.fixture
def library(tagger: Callable[..., Result], tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("coral_cat_720p.jpg", "coral_parrot.jpg", "coral_hot_dog.jpg"):
        shutil.copy(PHOTOS / name, folder / name)
    assert tagger("scan", str(folder)).code == 0
    return folder


def names_found(result: Result) -> set[str]:
    assert result.code == 0, result.err
    return {Path(row["path"]).name for row in json.loads(result.out)}


def test_queries_take_chinese_class_and_ancestor_names(
    tagger: Callable[..., Result], library: Path
) -> None:
    assert names_found(tagger("query", "猫", "--format", "json")) == {"coral_cat_720p.jpg"}
    assert names_found(tagger("query", "label:鸟", "--format", "json")) == {"coral_parrot.jpg"}
    both = tagger("query", "label:鸟,猫", "--format", "json")
    assert names_found(both) == {"coral_cat_720p.jpg", "coral_parrot.jpg"}
    assert names_found(tagger("query", "label:热狗", "--format", "json")) == {"coral_hot_dog.jpg"}
    assert names_found(tagger("query", "动物", "--format", "json")) == {
        "coral_cat_720p.jpg",
        "coral_parrot.jpg",
    }
    unknown = tagger("query", "label:不存在的东西")
    assert unknown.code == 1 and unknown.err.startswith("error: ")


def test_a_chinese_word_of_several_labels_says_which(
    tagger: Callable[..., Result], library: Path
) -> None:
    result = tagger("query", "海参")
    assert result.code == 0
    assert "note: '海参' means" in result.err and result.err.count("(n0") >= 2


def test_json_and_csv_carry_both_names(tagger: Callable[..., Result], library: Path) -> None:
    rows = json.loads(tagger("query", "label:猫", "--lang", "zh", "--format", "json").out)
    assert rows[0]["label"] == "cat" and rows[0]["label_zh"] == "猫"
    english = json.loads(tagger("query", "label:猫", "--format", "json").out)
    assert "label_zh" not in english[0]
    table = list(
        csv.DictReader(io.StringIO(tagger("labels", "--lang", "zh", "--format", "csv").out))
    )
    assert {"label": "cat", "label_zh": "猫"}.items() <= next(
        row for row in table if row["label"] == "cat"
    ).items()
    exported = tagger("export", "--lang", "zh", "--query", "label:cat").out.splitlines()
    tags = json.loads(exported[0])["tags"]
    assert {"label": "tabby", "label_zh": chinese(tags[2]["wnid"])}.items() <= tags[2].items()
    shown = json.loads(
        tagger("show", "--lang", "zh", "--format", "json", str(library / "coral_cat_720p.jpg")).out
    )
    assert all("label_zh" in tag for tag in shown["tags"])


def test_chinese_tables_line_up_by_display_width(
    tagger: Callable[..., Result], library: Path
) -> None:
    result = tagger("labels", "--lang", "zh")
    assert result.code == 0
    lines = result.out.splitlines()
    assert any("猫" in line for line in lines) and any(line.startswith("LABEL") for line in lines)
    columns = {width(line[: line.rstrip().rfind(" ") + 1]) for line in lines}
    assert len(columns) == 1, lines  # the FILES column starts at one display column


def test_the_language_setting_is_the_default(
    tagger: Callable[..., Result], library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAGGER_LABELS__LANGUAGE", "zh")
    assert "猫" in tagger("query", "label:cat").out
    assert "猫" not in tagger("query", "label:cat", "--lang", "en").out
