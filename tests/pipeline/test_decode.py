from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps, features

from tagger.errors import BadImage
from tagger.inference.specs import Geometry
from tagger.pipeline.decode import decode
from tagger.pipeline.hashing import hash_file, stat_file
from tagger.records import Decoded
from tests.helpers import PHOTOS, png_declaring

GEOMETRY = Geometry()
LIMIT = 200_000_000


def run(path: Path, max_pixels: int = LIMIT) -> Decoded:
    return decode(hash_file(stat_file(str(path))), GEOMETRY, max_pixels)


def centre(decoded: Decoded) -> tuple[int, ...]:
    return tuple(int(v) for v in decoded.pixels[112, 112])


def test_output_is_the_model_input_size() -> None:
    decoded = run(PHOTOS / "coral_cat_720p.jpg")
    assert decoded.pixels.shape == (224, 224, 3) and decoded.pixels.dtype == np.uint8
    assert (decoded.width, decoded.height, decoded.format) == (1280, 720, "JPEG")


@pytest.mark.parametrize(
    ("mode", "color", "suffix", "expected"),
    [
        ("CMYK", (0, 255, 255, 0), ".jpg", (255, 0, 0)),
        ("L", 128, ".png", (128, 128, 128)),
        ("RGBA", (0, 0, 255, 0), ".png", (255, 255, 255)),  # fully transparent -> white
        ("RGBA", (0, 0, 255, 255), ".webp", (0, 0, 255)),
        ("LA", (0, 0), ".png", (255, 255, 255)),
        ("RGB", (0, 200, 0), ".bmp", (0, 200, 0)),
        ("RGB", (0, 200, 0), ".tiff", (0, 200, 0)),
    ],
)
def test_colour_modes_become_rgb(
    tmp_path: Path, mode: str, color: object, suffix: str, expected: tuple[int, ...]
) -> None:
    path = tmp_path / f"image{suffix}"
    Image.new(mode, (300, 200), color).save(
        path, **({"lossless": True} if suffix == ".webp" else {})
    )
    got = centre(run(path))
    assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) <= 3, got


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((50, 80), 0x8000, dtype=np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    assert centre(run(path)) == (128, 128, 128)


def test_palette_with_transparency_is_flattened_on_white(tmp_path: Path) -> None:
    path = tmp_path / "palette.gif"
    image = Image.new("P", (64, 64), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.info["transparency"] = 1
    image.save(path, transparency=1)
    assert centre(run(path)) == (255, 255, 255)


def test_animation_uses_the_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    red, _green, blue = centre(run(path))
    assert red > 200 and blue < 50


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF")
def test_avif(tmp_path: Path) -> None:
    path = tmp_path / "image.avif"
    Image.new("RGB", (128, 96), (0, 0, 200)).save(path, quality=95)
    red, _green, blue = centre(run(path))
    assert blue > 150 and red < 50


def test_heif_through_the_optional_extra(tmp_path: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    path = tmp_path / "phone.heic"
    Image.new("RGB", (128, 96), (0, 0, 200)).save(path, quality=90)
    decoded = run(path)
    assert decoded.format == "HEIF" and centre(decoded)[2] > 150


@pytest.mark.parametrize("rotated", ["Portrait_3", "Portrait_6", "Portrait_8", "Landscape_6"])
def test_exif_rotation_matches_the_upright_twin(rotated: str) -> None:
    upright = "Portrait_1" if rotated.startswith("Portrait") else "Landscape_1"
    a = run(PHOTOS / f"orientation_{upright}.jpg")
    b = run(PHOTOS / f"orientation_{rotated}.jpg")
    assert (a.width, a.height) == (b.width, b.height)
    # Each twin is its own JPEG encoding, so pixels differ a little; a wrong rotation
    # would differ by tens of levels.
    assert np.abs(a.pixels.astype(int) - b.pixels).mean() < 3
    # ...which is what ignoring the EXIF orientation gives:
    raw = Image.open(PHOTOS / f"orientation_{rotated}.jpg").convert("RGB")
    side = min(raw.size) * 224 / 256
    left, top = (raw.width - side) / 2, (raw.height - side) / 2
    ignored = np.asarray(raw.resize((224, 224), box=(left, top, left + side, top + side)))
    assert np.abs(a.pixels.astype(int) - ignored).mean() > 10


def test_draft_decode_is_close_to_a_full_decode() -> None:
    path = PHOTOS / "orientation_Portrait_1.jpg"
    full = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    side = min(full.size) * 224 / 256
    left, top = (full.width - side) / 2, (full.height - side) / 2
    reference = full.resize(
        (224, 224), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side)
    )
    diff = np.abs(np.asarray(reference).astype(int) - run(path).pixels).mean()
    assert diff < 1.5, diff


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"<html><body>not a picture</body></html>", "not an image"),
        (bytes(range(256)) * 40, "not an image"),
        (png_declaring(60000, 60000), "too many pixels"),
        ((PHOTOS / "coral_parrot.jpg").read_bytes()[:20000], "damaged image data"),
        # A BigTIFF whose first directory lies 4 EiB in: the seek fails with EINVAL (found by
        # fuzz/decode.py), which is the content's fault, not a read error worth retrying.
        (b"II+\x00\x08\x00\x00\x00" + (2**62).to_bytes(8, "little"), "damaged image data"),
    ],
    ids=["empty", "html", "random", "bomb", "truncated", "tiff-offset"],
)
def test_bad_files_raise_bad_image_with_a_reason(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(BadImage, match=reason):
        run(path)
