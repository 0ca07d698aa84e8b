"""Turn an image file into the model's input: one small, upright, RGB, centre-cropped array.

Work is ordered to touch as few pixels as possible: JPEG `draft()` lets the decoder scale
by 1/2..1/8 for free, a single boxed resize does crop and scale together, and the EXIF
rotation is applied to the small result (a centre square crop commutes with it).
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import warnings
from collections.abc import Callable
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from tagger.errors import BadImage, SkipFile, Unreadable
from tagger.inference.specs import Geometry
from tagger.pipeline.hashing import open_regular
from tagger.records import Decoded, FileInfo, Hashed

log = logging.getLogger(__name__)

try:  # HEIC/HEIF is the optional extra `tagger[heif]`.
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - depends on the install
    pass

# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ORIENTATION_TAG = 0x0112
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_WHITE = (255, 255, 255)
# We enforce our own limit (scan.max_pixels) right after reading the header, so that
# Pillow's global bomb check does not warn or refuse on its own terms.
Image.MAX_IMAGE_PIXELS = None
# Pillow warns (rather than raises) about e.g. a corrupt EXIF block; we read past it.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


def decode(hashed: Hashed, geometry: Geometry, max_pixels: int) -> Decoded:
    """Decode `hashed.file` for the model, or raise `BadImage` saying why it cannot be."""
    if hashed.file.size == 0:
        raise BadImage("empty file (0 bytes)")

    def read() -> Decoded:
        with open_regular(hashed.file.path) as handle:
            return _decode_from(handle, hashed, geometry, max_pixels)

    return _with_reasons(read)


def decode_bytes(data: bytes, geometry: Geometry, max_pixels: int) -> Decoded:
    """Decode an upload held in memory (`POST /predict`), with the same checks and reasons."""
    if not data:
        raise BadImage("empty file (0 bytes)")
    hashed = Hashed(FileInfo("<upload>", len(data), 0), hashlib.sha256(data).hexdigest())
    return _with_reasons(lambda: _decode_from(io.BytesIO(data), hashed, geometry, max_pixels))


def _decode_from(handle: BinaryIO, hashed: Hashed, geometry: Geometry, max_pixels: int) -> Decoded:
    with Image.open(handle) as image:
        width, height = image.size
        if width * height > max_pixels:
            raise BadImage(
                f"too many pixels: {width}x{height} is over the limit of {max_pixels:,}"
                " (scan.max_pixels)"
            )
        return _decode_open(hashed, image, geometry)


def _with_reasons(read: Callable[[], Decoded]) -> Decoded:
    """Turn what Pillow and the OS raise into `BadImage` (the content) or `Unreadable`."""
    try:
        return read()
    except SkipFile:
        raise
    except UnidentifiedImageError:
        raise BadImage("not an image, or a format tagger cannot read") from None
    except FileNotFoundError:
        raise Unreadable("file vanished while it was decoded") from None
    except OSError as exc:
        # Pillow's own "image file is truncated" and the like, or a seek past what the file
        # system allows, to an offset a damaged header gave (EINVAL): the content's fault.
        # A file system that fails reads with EINVAL failed the hash stage's read of every
        # byte first, which is a retried `Unreadable`.
        if exc.errno in (None, errno.EINVAL):
            raise BadImage(f"damaged image data: {_describe(exc)}") from None
        raise Unreadable(f"cannot read file: {exc.strerror}") from None  # EIO, ESTALE...
    except Exception as exc:  # Pillow's decoders raise many kinds for damaged data.
        raise BadImage(f"damaged image data: {_describe(exc)}") from None


def _decode_open(hashed: Hashed, image: Image.Image, geometry: Geometry) -> Decoded:
    fmt = image.format or "unknown"
    width, height = image.size
    orientation = _orientation(image)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    image.seek(0)  # the first frame of an animation
    if fmt == "JPEG":
        image.draft("RGB", (geometry.resize, geometry.resize))
    rgb = _to_rgb(image)
    small = rgb.resize(
        (geometry.crop, geometry.crop), geometry.resample, box=_centre_box(rgb.size, geometry)
    )
    if orientation in _UPRIGHT:
        small = small.transpose(_UPRIGHT[orientation])
    pixels = np.asarray(small, dtype=np.uint8)
    return Decoded(hashed=hashed, pixels=pixels, width=width, height=height, format=fmt)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation, or 1 when the EXIF block is missing or unreadable."""
    try:
        return int(image.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # A corrupt EXIF block must not cost us the pixels.
        log.debug("unreadable EXIF in %s; orientation ignored", getattr(image, "filename", "?"))
        return 1


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB, with transparency flattened onto white and 16-bit depth scaled down."""
    mode = image.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        wide = np.asarray(image).astype(np.uint32)
        return Image.fromarray((wide >> 8).clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        floats = np.nan_to_num(np.asarray(image, dtype=np.float32))
        scale = 255.0 if floats.max(initial=0.0) <= 1.0 else 1.0
        return Image.fromarray((floats * scale).clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, _WHITE)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image if mode == "RGB" else image.convert("RGB")


def _centre_box(size: tuple[int, int], geometry: Geometry) -> tuple[float, float, float, float]:
    """The source region that becomes the centre crop after scaling the shorter side."""
    width, height = size
    side = min(width, height) * geometry.crop / geometry.resize
    left, top = (width - side) / 2, (height - side) / 2
    return (left, top, left + side, top + side)


def _describe(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
