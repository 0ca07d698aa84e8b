"""End to end: the real CLI, the bundled weights, real photos, a real SQLite file or
PostgreSQL database."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import Result, sql

pytestmark = pytest.mark.both_databases


@pytest.fixture
def library(photo_dir: Path) -> Path:
    """Real photos plus what a NAS folder really holds: copies, junk and broken files."""
    (photo_dir / "2024" / "trip").mkdir(parents=True)
    shutil.copy(photo_dir / "coral_cat_720p.jpg", photo_dir / "2024" / "trip" / "cat copy.jpg")
    (photo_dir / "truncated.jpg").write_bytes((photo_dir / "coral_parrot.jpg").read_bytes()[:20000])
    (photo_dir / "empty.jpg").write_bytes(b"")
    (photo_dir / "notes.jpg").write_text("this is a text file\n")
    # Junk that must be ignored without a trace.
    (photo_dir / "@eaDir").mkdir()
    shutil.copy(photo_dir / "coral_hot_dog.jpg", photo_dir / "@eaDir" / "thumb.jpg")
    shutil.copy(photo_dir / "coral_hot_dog.jpg", photo_dir / "._coral_hot_dog.jpg")
    shutil.copy(photo_dir / "coral_hot_dog.jpg", photo_dir / "upload.jpg.part")
    (photo_dir / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (photo_dir / "Thumbs.db").write_bytes(b"\0" * 64)
    return photo_dir


def json_out(result: Result) -> object:
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_scan_tags_finds_dedups_and_records_errors(
    tagger: Callable[..., Result], library: Path, db_url: str
) -> None:
    first = tagger("scan", str(library))
    assert first.code == 0, first.err
    # 9 photos + 1 copy + 3 broken files; the junk is not counted at all.
    assert "13 files: 9 new, 1 duplicate content, 0 unchanged, 3 failed" in first.out

    cats = json_out(tagger("query", "--label", "cat", "--format", "json"))
    assert isinstance(cats, list)
    cat_paths = {row["path"] for row in cats}
    assert cat_paths == {
        str(library / "coral_cat_720p.jpg"),
        str(library / "2024" / "trip" / "cat copy.jpg"),
    }
    assert all(row["label"].endswith("cat") and row["score"] > 0.3 for row in cats)

    hotdogs = tagger("query", "--label", "hotdog", "--format", "paths")
    assert hotdogs.out.splitlines() == [str(library / "coral_hot_dog.jpg")]

    groups = json_out(tagger("duplicates", "--format", "json"))
    assert [sorted(g["paths"]) for g in groups] == [sorted(cat_paths)]  # type: ignore[union-attr]

    failed = {row["path"]: row["reason"] for row in json_out(tagger("errors", "--format", "json"))}  # type: ignore[union-attr]
    assert failed == {
        str(library / "empty.jpg"): "empty file (0 bytes)",
        str(library / "notes.jpg"): "not an image, or a format tagger cannot read",
        str(library / "truncated.jpg"): failed[str(library / "truncated.jpg")],
    }
    assert failed[str(library / "truncated.jpg")].startswith("damaged image data")
    assert "skipped" in first.err and str(library / "empty.jpg") in first.err

    # The one copy of the content was classified once: one image row, two paths.
    [(sha_rows,)] = sql(
        db_url,
        "SELECT count(*) FROM images JOIN files ON files.image_id = images.id"
        " WHERE files.path LIKE '%cat_720p.jpg' OR files.path LIKE '%cat copy.jpg'",
    )
    [(distinct,)] = sql(
        db_url,
        "SELECT count(DISTINCT image_id) FROM files"
        " WHERE path LIKE '%cat_720p.jpg' OR path LIKE '%cat copy.jpg'",
    )
    [(tags,)] = sql(db_url, "SELECT count(*) FROM tags WHERE NOT derived")
    models = sql(
        db_url,
        "SELECT DISTINCT model, substr(weights_sha256, 1, 12) FROM images WHERE status = 'tagged'",
    )
    assert (sha_rows, distinct) == (2, 1)
    assert tags == 9 * 5  # top 5 per distinct image, besides the derived labels
    assert models == [("efficientnet_lite0", "579344248a93")]


def test_second_scan_does_no_inference(
    tagger: Callable[..., Result], library: Path, db_url: str
) -> None:
    tagger("scan", str(library))
    before = sql(db_url, "SELECT sha256, tagged_at FROM images ORDER BY sha256")
    second = tagger("scan", str(library))
    assert "0 new, 0 duplicate content, 13 unchanged, 0 failed" in second.out
    assert sql(db_url, "SELECT sha256, tagged_at FROM images ORDER BY sha256") == before


def test_changed_and_added_files_are_picked_up(
    tagger: Callable[..., Result], photo_dir: Path
) -> None:
    tagger("scan", str(photo_dir))
    target = photo_dir / "coral_parrot.jpg"
    shutil.copy(photo_dir / "coral_hot_dog.jpg", target)  # new content at an old path
    shutil.copy(photo_dir / "coral_cat_720p.jpg", photo_dir / "new cat.jpg")
    result = tagger("scan", str(photo_dir))
    assert "10 files: 0 new, 2 duplicate content, 8 unchanged, 0 failed" in result.out
    shown = json_out(tagger("show", "--format", "json", str(target)))
    assert shown["tags"][0]["label"] == "hotdog"  # type: ignore[index]


def test_rotated_photos_get_the_upright_twins_label(
    tagger: Callable[..., Result], photo_dir: Path
) -> None:
    tagger("scan", str(photo_dir))
    top1 = {
        name: json_out(
            tagger("show", "--format", "json", str(photo_dir / f"orientation_{name}.jpg"))
        )["tags"][0]["label"]  # type: ignore[index]
        for name in ("Portrait_1", "Portrait_3", "Portrait_6", "Portrait_8")
    }
    assert set(top1.values()) == {top1["Portrait_1"]}, top1


def test_resnet18_from_a_weights_file(
    tagger: Callable[..., Result], photo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from torchvision.models import resnet18

    torch.manual_seed(0)
    weights = tmp_path / "resnet18-seeded.pth"
    torch.save(resnet18(weights=None).state_dict(), weights)
    monkeypatch.setenv("TAGGER_MODEL__WEIGHTS_PATH", str(weights))
    result = tagger("scan", "--model", "resnet18", str(photo_dir / "coral_hot_dog.jpg"))
    assert "1 new" in result.out, result.err
    shown = json_out(tagger("show", "--format", "json", str(photo_dir / "coral_hot_dog.jpg")))
    direct = [t for t in shown["tags"] if not t["derived"]]  # type: ignore[index]
    assert shown["model"] == "resnet18" and len(direct) == 5  # type: ignore[index]
    # Switching back to the default model re-tags: stale results are detected by model.
    monkeypatch.delenv("TAGGER_MODEL__WEIGHTS_PATH")
    again = tagger("scan", str(photo_dir / "coral_hot_dog.jpg"))
    assert "1 new" in again.out


def test_deleted_files_are_marked_missing_then_pruned(
    tagger: Callable[..., Result], photo_dir: Path, db_url: str
) -> None:
    shutil.copy(photo_dir / "coral_cat_720p.jpg", photo_dir / "cat copy.jpg")
    assert tagger("scan", str(photo_dir)).code == 0
    (photo_dir / "coral_cat_720p.jpg").unlink()  # the copy still holds the content
    (photo_dir / "coral_hot_dog.jpg").unlink()  # the only path to its content
    assert tagger("scan", str(photo_dir)).code == 0

    cats = json_out(tagger("query", "--label", "tabby", "--min-score", "0", "--format", "json"))
    assert [Path(row["path"]).name for row in cats] == ["cat copy.jpg"]  # type: ignore[index]
    assert tagger("query", "--label", "hotdog", "--format", "paths").out == ""
    shown = json_out(tagger("show", str(photo_dir / "coral_hot_dog.jpg"), "--format", "json"))
    assert shown["missing_since"] is not None  # type: ignore[index]

    assert "Would remove 2 missing files and 1 images" in tagger("prune", "--dry-run").out
    assert "Removed 2 missing files and 1 images" in tagger("prune").out
    assert tagger("show", str(photo_dir / "coral_hot_dog.jpg")).code == 1
    assert sql(db_url, "select count(*) from tags where label = 'hotdog'") == [(0,)]
    assert sql(db_url, "select count(*) from files where missing_since is not null") == [(0,)]


def test_an_empty_or_unmounted_folder_marks_nothing_missing(
    tagger: Callable[..., Result], photo_dir: Path
) -> None:
    assert tagger("scan", str(photo_dir)).code == 0
    hidden = photo_dir.parent / "elsewhere"
    photo_dir.rename(hidden)
    photo_dir.mkdir()  # an empty mount point where the share used to be
    assert tagger("scan", str(photo_dir)).code == 0
    assert tagger("query", "--label", "hotdog", "--format", "paths").out.strip()
