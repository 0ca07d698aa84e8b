"""The CLI through its real entry point: exit codes, one-line errors, help that teaches."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest

from tagger.cli.main import cli
from tests.helpers import PHOTOS, Result


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += all_commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


@pytest.mark.parametrize("command", all_commands(cli), ids=lambda c: " ".join(c) or "tagger")
def test_every_command_has_help_ending_with_an_example(
    tagger: Callable[..., Result], command: tuple[str, ...]
) -> None:
    result = tagger(*command, "--help")
    assert result.code == 0
    lines = [line.strip() for line in result.out.rstrip().splitlines()]
    examples = lines.index("Examples:") if "Examples:" in lines else -1
    assert examples > 0, result.out
    assert all("tagger " in line for line in lines[examples + 1 :])


def test_unknown_label_is_one_line_with_a_suggestion(
    tagger: Callable[..., Result], photo_dir: Path
) -> None:
    tagger("scan", str(photo_dir))
    result = tagger("query", "--label", "hotdgo")
    assert result.code == 1
    assert result.err == (
        "error: no ImageNet label matches 'hotdgo'; did you mean 'hotdog'?"
        " (`tagger labels --all` lists them)\n"
    )


def test_query_formats(tagger: Callable[..., Result], photo_dir: Path) -> None:
    tagger("scan", str(photo_dir))
    table = tagger("query", "--label", "macaw")
    assert table.out.splitlines()[0].split() == ["PATH", "LABEL", "SCORE"]
    assert str(photo_dir / "coral_parrot.jpg") in table.out
    csv = tagger("query", "--label", "macaw", "--format", "csv")
    assert csv.out.splitlines()[0] == "path,label,score"
    nothing = tagger("query", "--label", "alp")
    assert nothing.code == 0 and nothing.out == "" and "no files tagged 'alp'" in nothing.err
    limited = json.loads(
        tagger(
            "query", "--label", "cat", "--limit", "1", "--format", "json", "--min-score", "0"
        ).out
    )
    assert len(limited) == 1


def test_show_labels_and_errors(tagger: Callable[..., Result], photo_dir: Path) -> None:
    (photo_dir / "broken.png").write_text("<html></html>")
    tagger("scan", str(photo_dir))
    shown = tagger("show", str(photo_dir / "coral_hot_dog.jpg"))
    assert "status: tagged" in shown.out and "hotdog" in shown.out
    counts = tagger("labels", "--format", "json")
    assert {"label": "hotdog", "files": 1} in json.loads(counts.out)
    errors = tagger("errors")
    assert str(photo_dir / "broken.png") in errors.out and "not an image" in errors.out
    missing = tagger("show", str(photo_dir / "nope.jpg"))
    assert missing.code == 1 and missing.err.startswith("error: ") and missing.err.count("\n") == 1


def test_predict_prints_top3_without_storing(tagger: Callable[..., Result], tmp_path: Path) -> None:
    result = tagger("predict", str(PHOTOS / "coral_hot_dog.jpg"))
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].endswith("coral_hot_dog.jpg") and len(lines) == 4
    assert lines[1].split()[:2] == ["1.", "hotdog"]
    assert not (tmp_path / "tagger.db").exists()
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"")
    failed = tagger("predict", str(bad))
    assert failed.code == 1 and "empty file" in failed.err


def test_scan_of_a_missing_folder_is_a_usage_error(
    tagger: Callable[..., Result], tmp_path: Path
) -> None:
    result = tagger("scan", str(tmp_path / "nowhere"))
    assert result.code == 2 and "does not exist" in result.err


def test_scan_on_ray_without_ray_says_what_to_install(
    tagger: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    result = tagger("scan", "--engine", "ray", str(PHOTOS))
    assert (result.code, result.err) == (
        1,
        "error: the Ray engine needs Ray: pip install 'tagger[ray]'\n",
    )


def test_an_address_is_only_for_the_ray_engine(tagger: Callable[..., Result]) -> None:
    result = tagger("scan", "--address", "head:6379", str(PHOTOS))
    assert result.code == 2 and "--address is for --engine ray" in result.err


def test_model_list(tagger: Callable[..., Result]) -> None:
    result = tagger("model", "list")
    rows = {line.split()[0]: line for line in result.out.splitlines()[1:]}
    assert "present" in rows["efficientnet_lite0"] and "*" in rows["efficientnet_lite0"]
    assert "missing" in rows["resnet18"]


def test_missing_resnet_weights_is_one_line(tagger: Callable[..., Result]) -> None:
    result = tagger("predict", "--model", "resnet18", str(PHOTOS / "coral_hot_dog.jpg"))
    assert result.code == 1 and result.err.count("\n") == 1
    assert "tagger model fetch resnet18" in result.err


def test_installed_entry_points(tmp_path: Path) -> None:
    """`python -m tagger` and the console script run; errors carry no traceback."""
    module = subprocess.run(
        [sys.executable, "-m", "tagger", "--version"], capture_output=True, text=True
    )
    assert module.returncode == 0 and "tagger, version" in module.stdout
    script = Path(sys.executable).parent / "tagger"
    bad = subprocess.run(
        [str(script), "--db", str(tmp_path / "t.db"), "show", "nope.jpg"],
        capture_output=True,
        text=True,
    )
    assert (
        bad.returncode == 1 and "Traceback" not in bad.stderr and bad.stderr.startswith("error: ")
    )


def test_status_without_a_daemon_exits_3_and_creates_nothing(
    tagger: Callable[..., Result], tmp_path: Path
) -> None:
    result = tagger("status")
    assert result.code == 3
    assert "not running" in result.out and "not created yet" in result.out
    assert not (tmp_path / "tagger.db").exists()
    assert tagger("scan", str(tmp_path)).code == 0  # now there is a database
    result = tagger("status", "--format", "json")
    assert result.code == 3
    assert json.loads(result.out)["images_tagged"] == 0
