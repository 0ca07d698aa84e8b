"""Property: whatever bytes arrive, decode returns the model's input or raises BadImage."""

from __future__ import annotations

import io
import os
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tagger.errors import BadImage
from tagger.inference.specs import Geometry
from tagger.pipeline.decode import decode
from tagger.pipeline.hashing import hash_file, stat_file
from tests.helpers import PHOTOS

EXAMPLES = int(os.environ.get("TAGGER_FUZZ_EXAMPLES", "150"))  # python -m fuzz.decode raises it
MAX_PIXELS = 20_000_000
_WORK = tempfile.TemporaryDirectory(prefix="tagger-fuzz-")


def _seeds() -> list[bytes]:
    """Small real images in each format tagger reads: the starting points for mutation."""
    cat = Image.open(PHOTOS / "coral_cat_720p.jpg").convert("RGB")
    small = cat.resize((48, 32))
    out = []
    for fmt, image, options in [
        ("JPEG", small, {"quality": 80, "exif": Image.Exif()}),
        ("PNG", small.convert("RGBA"), {}),
        ("GIF", small.convert("P"), {}),
        ("WEBP", small, {}),
        ("BMP", small, {}),
        ("TIFF", small, {}),
    ]:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        out.append(buffer.getvalue())
    return out


SEEDS = _seeds()


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "int"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "int" and len(data) >= at + 4:  # sizes and offsets in headers live here
            data[at : at + 4] = draw(
                st.sampled_from([b"\xff\xff\xff\xff", b"\0\0\0\0", b"\x7f\xff\xff\xff"])
            )
    return bytes(data)


def decodes_or_refuses(data: bytes) -> None:
    path = Path(_WORK.name) / "sample"
    path.write_bytes(data)
    try:
        decoded = decode(hash_file(stat_file(str(path))), Geometry(), MAX_PIXELS)
    except BadImage as bad:
        assert bad.reason and "\n" not in bad.reason
        return
    assert decoded.pixels.shape == (224, 224, 3) and decoded.pixels.dtype == np.uint8
    assert decoded.width > 0 and decoded.height > 0


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=20),  # a hang guard, not a speed check
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes(data: bytes) -> None:
    decodes_or_refuses(data)


@FUZZ
@given(mutated_images())
def test_mutated_real_images(data: bytes) -> None:
    decodes_or_refuses(data)
