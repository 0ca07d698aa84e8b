"""The web page's thumbnail cache, on real photos and real files in tmp_path."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

from tagger.web.thumbnails import SIZES, ThumbnailError, Thumbnails
from tests.helpers import PHOTOS

CAT = PHOTOS / "coral_cat_720p.jpg"  # 1280x720, no EXIF orientation
ROOMY = 10**9  # a limit no test here reaches


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def open_thumbnail(path: Path) -> Image.Image:
    image = Image.open(path)
    assert image.format == "JPEG"
    assert image.mode == "RGB"
    return image


def rgb_at(image: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    red, green, blue = image.convert("RGB").getpixel((x, y))  # type: ignore[misc]
    return red, green, blue


def mean_difference(one: Image.Image, other: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(one, other)).mean) / 3


def test_longest_side_is_bounded_and_aspect_kept(tmp_path: Path) -> None:
    cache = Thumbnails(tmp_path / "thumbs", ROOMY)
    key = sha("cat")

    small = cache.get(key, CAT, 256)
    large = cache.get(key, CAT, 1024)

    assert small == tmp_path / "thumbs" / key[:2] / f"{key}-256.jpg"
    assert large == tmp_path / "thumbs" / key[:2] / f"{key}-1024.jpg"
    assert open_thumbnail(small).size == (256, 144)
    assert open_thumbnail(large).size == (1024, 576)
    assert SIZES == (256, 1024)


def test_a_small_source_is_never_upscaled(tmp_path: Path) -> None:
    source = tmp_path / "small.png"
    Image.new("RGB", (100, 50), (10, 200, 30)).save(source)

    path = Thumbnails(tmp_path / "thumbs", ROOMY).get(sha("small"), source, 256)

    assert open_thumbnail(path).size == (100, 50)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """Orientation 6 means "rotate 90 degrees clockwise to view": the left edge comes on top."""
    stored = Image.new("RGB", (300, 100), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 100, 100))  # red on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 6
    source = tmp_path / "rotated.jpg"
    stored.save(source, exif=exif)

    thumb = open_thumbnail(Thumbnails(tmp_path / "thumbs", ROOMY).get(sha("r"), source, 256))

    assert thumb.size == (85, 256)
    red, _, blue = rgb_at(thumb, 42, 20)
    assert red > 200 and blue < 60  # the stored left edge is now the top
    red, _, blue = rgb_at(thumb, 42, 235)
    assert blue > 200 and red < 60


def test_a_real_rotated_photo_matches_its_upright_twin(tmp_path: Path) -> None:
    cache = Thumbnails(tmp_path / "thumbs", ROOMY)

    upright = open_thumbnail(cache.get(sha("1"), PHOTOS / "orientation_Portrait_1.jpg", 256))
    rotated = open_thumbnail(cache.get(sha("6"), PHOTOS / "orientation_Portrait_6.jpg", 256))

    assert upright.size == rotated.size == (171, 256)
    assert mean_difference(upright, rotated) < 10


def test_transparency_is_flattened_on_white(tmp_path: Path) -> None:
    source = tmp_path / "alpha.png"
    image = Image.new("RGBA", (400, 200), (0, 0, 0, 0))  # transparent black
    image.paste((255, 0, 0, 255), (0, 0, 200, 200))  # opaque red on the left
    image.save(source)

    thumb = open_thumbnail(Thumbnails(tmp_path / "thumbs", ROOMY).get(sha("a"), source, 256))

    assert thumb.size == (256, 128)
    assert min(rgb_at(thumb, 230, 64)) > 245  # white where it was transparent
    red, green, blue = rgb_at(thumb, 30, 64)
    assert red > 240 and green < 20 and blue < 20


def test_an_animation_gives_its_first_frame(tmp_path: Path) -> None:
    source = tmp_path / "anim.gif"
    first, second = Image.new("RGB", (60, 40), (255, 0, 0)), Image.new("RGB", (60, 40), (0, 0, 255))
    first.save(source, save_all=True, append_images=[second], duration=100, loop=0)

    thumb = open_thumbnail(Thumbnails(tmp_path / "thumbs", ROOMY).get(sha("g"), source, 256))

    red, _, blue = rgb_at(thumb, 30, 20)
    assert red > 240 and blue < 20


def test_heic_is_read_when_pillow_heif_is_installed(tmp_path: Path) -> None:
    pytest.importorskip("pillow_heif")
    source = tmp_path / "cat.heic"
    Image.open(CAT).save(source, format="HEIF")

    thumb = open_thumbnail(Thumbnails(tmp_path / "thumbs", ROOMY).get(sha("h"), source, 256))

    assert thumb.size == (256, 144)


def test_a_hit_does_not_open_the_source_and_marks_it_used(tmp_path: Path) -> None:
    source = tmp_path / "cat.jpg"
    shutil.copy(CAT, source)
    cache = Thumbnails(tmp_path / "thumbs", ROOMY)
    made = cache.get(sha("cat"), source, 256)
    os.utime(made, (1_000_000, 1_000_000))
    source.rename(tmp_path / "gone.jpg")

    again = cache.get(sha("cat"), source, 256)

    assert again == made
    assert open_thumbnail(again).size == (256, 144)
    assert made.stat().st_mtime > time.time() - 60  # touched: now the most recently used


@pytest.mark.parametrize(
    "content",
    [CAT.read_bytes()[:5000], b"not an image at all", b""],
    ids=["truncated JPEG", "not an image", "empty"],
)
def test_a_damaged_source_raises_and_leaves_nothing(tmp_path: Path, content: bytes) -> None:
    source = tmp_path / "damaged.jpg"
    source.write_bytes(content)
    folder = tmp_path / "thumbs"

    with pytest.raises(ThumbnailError):
        Thumbnails(folder, ROOMY).get(sha("d"), source, 256)

    assert files_under(folder) == []


def test_a_vanished_source_raises(tmp_path: Path) -> None:
    with pytest.raises(ThumbnailError, match="vanished"):
        Thumbnails(tmp_path / "thumbs", ROOMY).get(sha("v"), tmp_path / "missing.jpg", 256)


def test_too_many_pixels_is_refused_from_the_header(tmp_path: Path) -> None:
    """A PNG whose header claims 20000x10001 pixels, with no pixel data to decode at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 20_000, 10_001, 8, 2, 0, 0, 0)
    source = tmp_path / "bomb.png"
    source.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))

    with pytest.raises(ThumbnailError, match="too many pixels"):
        Thumbnails(tmp_path / "thumbs", ROOMY).get(sha("b"), source, 256)


@pytest.mark.parametrize("size", [128, 0, -256, 2048, 256.0, True])
def test_a_size_the_page_does_not_use_is_refused(tmp_path: Path, size: int) -> None:
    folder = tmp_path / "thumbs"
    with pytest.raises(ValueError, match="size"):
        Thumbnails(folder, ROOMY).get(sha("s"), CAT, size)
    assert files_under(folder) == []


@pytest.mark.parametrize(
    "key",
    [
        sha("x").upper(),
        sha("x")[:63],
        sha("x") + "0",
        "../" + sha("x")[3:],
        "/" + sha("x")[1:],
        sha("x")[:62] + "/.",
        "g" * 64,
        "",
    ],
)
def test_a_key_that_is_not_a_sha256_is_refused(tmp_path: Path, key: str) -> None:
    folder = tmp_path / "thumbs"
    with pytest.raises(ValueError, match="SHA-256"):
        Thumbnails(folder, ROOMY).get(key, CAT, 256)
    assert not (tmp_path / "thumbs").exists()


def thumbnail_bytes(tmp_path: Path) -> int:
    """What one 256 thumbnail of the cat photo weighs (the encoder is deterministic)."""
    return Thumbnails(tmp_path / "measure", ROOMY).get(sha("m"), CAT, 256).stat().st_size


def test_least_recently_used_thumbnails_are_evicted(tmp_path: Path) -> None:
    one = thumbnail_bytes(tmp_path)
    max_bytes = int(one * 2.5)
    cache = Thumbnails(tmp_path / "thumbs", max_bytes)
    paths = {}

    for name in ["a", "b", "c"]:  # c goes over the limit: a, the oldest, is evicted
        paths[name] = cache.get(sha(name), CAT, 256)
        time.sleep(0.02)  # distinct mtimes even on a coarse clock
    cache.get(sha("b"), CAT, 256)  # a hit: b is now more recent than c
    time.sleep(0.02)
    paths["d"] = cache.get(sha("d"), CAT, 256)  # over again: c is the least recently used

    kept = files_under(tmp_path / "thumbs")
    assert kept == sorted([paths["b"], paths["d"]])
    assert sum(path.stat().st_size for path in kept) <= max_bytes


def test_thumbnails_from_an_earlier_run_are_counted(tmp_path: Path) -> None:
    one = thumbnail_bytes(tmp_path)
    folder = tmp_path / "thumbs"
    earlier = Thumbnails(folder, ROOMY)
    for name in ["a", "b", "c"]:
        earlier.get(sha(name), CAT, 256)
        time.sleep(0.02)

    newest = Thumbnails(folder, int(one * 2.5)).get(sha("d"), CAT, 256)

    kept = files_under(folder)
    assert kept == sorted([newest, earlier.get(sha("c"), CAT, 256)])


def test_temporary_files_left_by_a_crash_are_removed_at_first_use(tmp_path: Path) -> None:
    shard = tmp_path / "thumbs" / "ab"
    shard.mkdir(parents=True)
    stale, fresh = shard / ".stale.0123.tmp", shard / ".fresh.4567.tmp"
    stale.write_bytes(b"half a jpeg")
    fresh.write_bytes(b"a jpeg being written")  # by another process, perhaps
    os.utime(stale, (time.time() - 7200, time.time() - 7200))

    Thumbnails(tmp_path / "thumbs", ROOMY).get(sha("t"), CAT, 256)

    assert not stale.exists()
    assert fresh.exists()


def test_the_newest_thumbnail_is_kept_even_when_it_alone_is_over_the_limit(tmp_path: Path) -> None:
    cache = Thumbnails(tmp_path / "thumbs", 1000)
    first = cache.get(sha("a"), CAT, 256)
    second = cache.get(sha("b"), CAT, 256)

    assert files_under(tmp_path / "thumbs") == [second]
    assert not first.exists()


def test_concurrent_makers_of_one_thumbnail_give_one_valid_jpeg(tmp_path: Path) -> None:
    folder = tmp_path / "thumbs"
    cache = Thumbnails(folder, ROOMY)
    start = threading.Barrier(4)
    results: list[Path] = []
    errors: list[BaseException] = []

    def make() -> None:
        start.wait()
        try:
            results.append(cache.get(sha("same"), CAT, 1024))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=make, name=f"thumbnail-maker-{i}") for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors
    assert len(results) == 4 and len(set(results)) == 1
    assert files_under(folder) == results[:1]  # no temporary file left behind
    thumb = open_thumbnail(results[0])
    thumb.load()
    assert thumb.size == (1024, 576)
