"""Similar photos, near-duplicates and labels of one's own: the real commands, the real
bundled model, real photos (tests/photos, the calibration photos, and where this machine has
it the shared ImageNet sample, which is read in place, never copied into the project)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import PHOTOS, ROOT, Result

CALIBRATION = ROOT / "tagger" / "data" / "calibration"
IMAGENET = ROOT.parent / "shared" / "imagenet-sample"
needs_imagenet = pytest.mark.skipif(
    not IMAGENET.is_dir(), reason="the shared ImageNet sample is not on this machine"
)
Tagger = Callable[..., Result]


def near_copies(folder: Path) -> None:
    """The cat and the hot dog, with copies that are not byte-identical."""
    shutil.copy(PHOTOS / "coral_cat_720p.jpg", folder / "cat.jpg")
    shutil.copy(PHOTOS / "coral_hot_dog.jpg", folder / "hot_dog.jpg")
    cat = Image.open(PHOTOS / "coral_cat_720p.jpg")
    width, height = cat.size
    cat.resize((width // 3, height // 3)).save(folder / "cat_small.jpg", quality=60)
    crop = (int(width * 0.05), int(height * 0.05), int(width * 0.95), int(height * 0.95))
    cat.crop(crop).save(folder / "cat_crop.jpg", quality=90)
    hot_dog = Image.open(PHOTOS / "coral_hot_dog.jpg")
    hot_dog.resize((hot_dog.width // 2, hot_dog.height // 2)).save(
        folder / "hot_dog_small.jpg", quality=50
    )


def names(rows: list[dict[str, object]]) -> list[str]:
    return [Path(str(row["path"])).name for row in rows]


def similar(tagger: Tagger, photo: str | Path, *more: str) -> list[dict[str, object]]:
    result = tagger("similar", str(photo), "--format", "json", *more)
    assert result.code == 0, result.err
    rows: list[dict[str, object]] = json.loads(result.out)
    return rows


def test_similar_finds_copies_first_never_itself_nor_dropped_paths(
    tagger: Tagger, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    near_copies(photos)
    assert tagger("scan", str(photos)).code == 0
    rows = similar(tagger, photos / "cat.jpg")
    assert names(rows)[:2] == ["cat_crop.jpg", "cat_small.jpg"]
    assert "cat.jpg" not in names(rows)
    scores = [float(str(row["similarity"])) for row in rows]
    assert scores == sorted(scores, reverse=True)
    assert len(similar(tagger, photos / "cat.jpg", "--limit", "1")) == 1
    assert names(similar(tagger, photos / "cat.jpg", "--min-similarity", "0.8")) == [
        "cat_crop.jpg",
        "cat_small.jpg",
    ]
    # by content too, and the same answer
    sha = str(rows[0]["sha256"])
    assert "cat_crop.jpg" not in names(similar(tagger, sha))
    # a deleted photo is never an answer, even before the index knows
    (photos / "cat_crop.jpg").unlink()
    assert tagger("scan", str(photos)).code == 0
    assert "cat_crop.jpg" not in names(similar(tagger, photos / "cat.jpg"))
    # a photo not in the library is analysed on the spot
    outside = tmp_path / "elsewhere.jpg"
    shutil.copy(photos / "cat_small.jpg", outside)
    Image.open(outside).rotate(5).save(outside, quality=80)
    assert names(similar(tagger, outside))[0] == "cat_small.jpg"
    missing = tagger("similar", "0" * 64)
    assert missing.code == 1 and missing.err.startswith("error: ")


@needs_imagenet
def test_similar_on_a_cat_ranks_the_other_cats_above_the_hot_dogs(
    tagger: Tagger, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("coral_cat_720p.jpg", "coral_hot_dog.jpg", "coral_parrot.jpg"):
        shutil.copy(PHOTOS / name, photos / name)
    for name in ("n02123159_tiger_cat", "n02123597_Siamese_cat", "n07697537_hotdog"):
        shutil.copy(IMAGENET / f"{name}.JPEG", photos / f"{name}.jpg")
    assert tagger("scan", str(photos)).code == 0
    ranked = names(similar(tagger, photos / "coral_cat_720p.jpg"))
    for cat in ("n02123159_tiger_cat.jpg", "n02123597_Siamese_cat.jpg"):
        for hot_dog in ("coral_hot_dog.jpg", "n07697537_hotdog.jpg"):
            assert ranked.index(cat) < ranked.index(hot_dog), ranked


def test_near_duplicates_group_resized_recompressed_and_cropped_copies(
    tagger: Tagger, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    near_copies(photos)
    shutil.copy(CALIBRATION / "coral_pets.jpg", photos / "pets.jpg")
    with Image.open(PHOTOS / "coral_cat_720p.jpg") as cat:  # turned in its pixels, no EXIF
        cat.transpose(Image.Transpose.ROTATE_90).save(photos / "cat_turned.jpg", quality=90)
    if IMAGENET.is_dir():  # two different cats must stay apart
        shutil.copy(IMAGENET / "n02123597_Siamese_cat.JPEG", photos / "siamese.jpg")
    assert tagger("scan", str(photos)).code == 0
    result = tagger("duplicates", "--similar", "--format", "json")
    assert result.code == 0, result.err
    groups = sorted(
        sorted(Path(p).name for p in group["paths"]) for group in json.loads(result.out)
    )
    assert groups == [
        ["cat.jpg", "cat_crop.jpg", "cat_small.jpg", "cat_turned.jpg"],
        ["hot_dog.jpg", "hot_dog_small.jpg"],
    ]
    strict = json.loads(tagger("duplicates", "--similar", "0.99", "--format", "json").out)
    assert strict == []
    table = tagger("duplicates", "--similar")
    assert "4 alike" in table.out and "cat_small.jpg" in table.out
    assert tagger("duplicates").err.strip() == "no duplicates"  # byte-identical: none


def test_the_index_is_rebuilt_when_deleted_stale_or_behind(tagger: Tagger, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    near_copies(photos)
    assert tagger("scan", str(photos)).code == 0
    first = names(similar(tagger, photos / "cat.jpg"))
    data = tmp_path / "xdg-data" / "tagger"
    (index,) = data.glob("vectors-*.usearch")
    (record,) = data.glob("vectors-*.json")
    index.unlink()
    assert names(similar(tagger, photos / "cat.jpg")) == first
    assert index.exists()
    # a crash between the index's save and its record's: the record does not match
    record.write_text(json.dumps({"count": 1, "max_id": 1}))
    assert names(similar(tagger, photos / "cat.jpg")) == first
    # rows committed that the index never saw (a crash after the commit): caught up
    shutil.copy(PHOTOS / "coral_parrot.jpg", photos / "parrot.jpg")
    assert tagger("scan", str(photos)).code == 0
    assert "parrot.jpg" in names(similar(tagger, photos / "cat.jpg"))
    assert json.loads(record.read_text())["count"] == 6
    # a damaged file
    index.write_bytes(b"not an index")
    assert "parrot.jpg" in names(similar(tagger, photos / "cat.jpg"))
    # rows removed (prune): rebuilt without them
    (photos / "parrot.jpg").unlink()
    assert tagger("scan", str(photos)).code == 0
    assert "parrot.jpg" not in names(similar(tagger, photos / "cat.jpg"))
    assert tagger("prune").code == 0
    assert "parrot.jpg" not in names(similar(tagger, photos / "cat.jpg"))
    assert json.loads(record.read_text())["count"] == 5


def test_a_library_without_embeddings_yet(tagger: Tagger, tmp_path: Path) -> None:
    """Tagged before embeddings were stored: nothing breaks, status says so, a scan fills in."""
    photos = tmp_path / "photos"
    photos.mkdir()
    near_copies(photos)
    assert tagger("scan", str(photos)).code == 0
    with sqlite3.connect(tmp_path / "tagger.db") as db:
        db.execute("DELETE FROM embeddings")
    assert "5 tagged images have no embedding yet" in tagger("status").out
    result = tagger("similar", str(photos / "cat.jpg"))
    assert result.code == 0 and "has an embedding yet" in result.err  # analysed on the spot
    sha = json.loads(tagger("show", str(photos / "cat.jpg"), "--format", "json").out)["sha256"]
    by_content = tagger("similar", sha)
    assert by_content.code == 1 and "no embedding yet" in by_content.err
    assert tagger("duplicates", "--similar").err.startswith("no near-duplicates")
    assert "no photo has an embedding" in tagger("train", "x", "--examples", str(photos)).err
    assert "hotdog" in tagger("query", "label:hotdog").out
    assert "5 new" in tagger("scan", str(photos)).out
    assert "no embedding" not in tagger("status").out
    assert names(similar(tagger, photos / "cat.jpg"))[0] == "cat_crop.jpg"


def test_a_label_of_ones_own_tags_the_library_and_new_photos(
    tagger: Tagger, tmp_path: Path
) -> None:
    geysers, others = tmp_path / "geysers", tmp_path / "others"
    geysers.mkdir()
    others.mkdir()
    for photo in sorted(PHOTOS.glob("orientation_*.jpg"))[:5]:
        shutil.copy(photo, geysers / photo.name)
    for photo in CALIBRATION.glob("coral_*.jpg"):
        shutil.copy(photo, others / photo.name)
    assert tagger("scan", str(geysers), str(others)).code == 0
    too_few = tagger(
        "train", "old faithful", "--examples", str(geysers / "orientation_Landscape_1.jpg")
    )
    assert too_few.code == 1 and "too few examples: 1" in too_few.err
    clash = tagger("train", "hotdog", "--examples", str(geysers))
    assert clash.code == 1 and "a label of the model already" in clash.err
    trained = tagger(
        "train", "old faithful", "--examples", str(geysers), "--negatives", str(others)
    )
    assert trained.code == 0, trained.err
    assert "5 examples and 9 negatives" in trained.out and "5 photos carry it" in trained.out
    found = tagger("query", "label:old faithful", "--format", "json")
    assert sorted(names(json.loads(found.out))) == sorted(p.name for p in geysers.iterdir())
    assert "old faithful (own)" in tagger("labels").out
    assert tagger("xmp", "--mode", "beside", "label:old faithful").code == 0
    sidecar = (geysers / "orientation_Landscape_1.jpg.xmp").read_text()
    assert "<rdf:li>old faithful</rdf:li>" in sidecar and "tagger|old faithful" in sidecar
    assert json.loads(tagger("labels", "--own", "--format", "json").out)[0]["examples"] == 5
    # a new photo is labelled as it is tagged; a new cat is not
    later = tmp_path / "later"
    later.mkdir()
    shutil.copy(PHOTOS / "orientation_Portrait_8.jpg", later / "held_out.jpg")
    shutil.copy(PHOTOS / "coral_parrot.jpg", later / "parrot.jpg")
    assert tagger("scan", str(later)).code == 0
    found = json.loads(
        tagger("query", "label:old faithful", "path:*later*", "--format", "json").out
    )
    assert names(found) == ["held_out.jpg"]
    # without --negatives the library is sampled (leaving out what looks like the examples)
    assert tagger("train", "old faithful", "--examples", str(geysers)).code == 0
    found = json.loads(tagger("query", "label:old faithful", "--format", "json").out)
    assert "held_out.jpg" in names(found) and "parrot.jpg" not in names(found)
    # without --examples it is retrained on its stored training set
    again = tagger("train", "old faithful")
    assert again.code == 0 and "on 5 examples" in again.out, again.err
    unknown = tagger("train", "nothing yet")
    assert unknown.code == 1 and "give --examples" in unknown.err
    assert tagger("untrain", "old faithful").code == 0
    assert "(own)" not in tagger("labels").out
    gone = tagger("query", "label:old faithful")
    assert gone.code == 1
    assert "no label of your own" in tagger("untrain", "old faithful").err


@needs_imagenet
def test_a_label_trained_on_a_handful_finds_held_out_photos_of_its_kind(
    tagger: Tagger, tmp_path: Path
) -> None:
    """Dogs (ImageNet classes 151-268) against everything else, from the shared sample."""
    photos = sorted(IMAGENET.glob("n*.JPEG"))
    dogs = [p for p in photos if 151 <= _index(p) <= 268][:24]
    rest = [p for p in photos if p not in dogs and not 118 <= _index(p) <= 300][:48]
    folders = {name: tmp_path / name for name in ("dogs", "not", "held_dogs", "held_not")}
    for folder in folders.values():
        folder.mkdir()
    for i, photo in enumerate(dogs):
        shutil.copy(photo, folders["dogs" if i < 8 else "held_dogs"] / photo.name)
    for i, photo in enumerate(rest):
        shutil.copy(photo, folders["not" if i < 16 else "held_not"] / photo.name)
    assert tagger("scan", str(tmp_path)).code == 0
    trained = tagger(
        "train", "doggo", "--examples", str(folders["dogs"]), "--negatives", str(folders["not"])
    )
    assert trained.code == 0, trained.err
    reported = float(trained.out.split("accuracy ")[1].split("%")[0]) / 100
    tagged = set(names(json.loads(tagger("query", "label:doggo", "--format", "json").out)))
    held = [(p.name, True) for p in folders["held_dogs"].iterdir()]
    held += [(p.name, False) for p in folders["held_not"].iterdir()]
    right = sum((name in tagged) == is_dog for name, is_dog in held)
    assert right / len(held) >= reported - 0.1, (right, len(held), reported)


def _index(photo: Path) -> int:
    """The ImageNet class index of a sample photo, from the shared README's order."""
    order = sorted(p.name.split("_")[0] for p in IMAGENET.glob("n*.JPEG"))
    return 2 * order.index(photo.name.split("_")[0])


def test_train_without_scikit_learn_says_how_to_get_it(
    tagger: Tagger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in PHOTOS.glob("*.jpg"):
        shutil.copy(photo, photos / photo.name)
    assert tagger("scan", str(photos)).code == 0
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now fails
    result = tagger("train", "views", "--examples", str(photos))
    assert result.code == 1
    assert result.err == "error: training a label needs scikit-learn: pip install 'tagger[train]'\n"
