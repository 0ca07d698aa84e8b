"""Turn an image file into the model's input: one small, upright, RGB, centre-cropped array.

Work is ordered to touch as few pixels as possible: JPEG `draft()` lets the decoder scale
by 1/2..1/8 for free, a single boxed resize does crop and scale together, and the EXIF
rotation is applied to the small result (a centre square crop commutes with it).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from tagger.errors import BadImage, SkipFile, Unreadable
from tagger.inference.specs import Geometry
from tagger.pipeline.hashing import open_regular
from tagger.records import Decoded, Failure, FileInfo, Hashed

log = logging.getLogger(__name__)

try:  # HEIC/HEIF is the optional extra `tagger[heif]`.
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - depends on the install
    pass

# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose).
UPRIGHT = {
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
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_MB = 1_000_000
_READ_BLOCK = 1 << 20
# We enforce our own limit (scan.max_pixels) right after reading the header, so that
# Pillow's global bomb check does not warn or refuse on its own terms.
Image.MAX_IMAGE_PIXELS = None
# Pillow warns (rather than raises) about e.g. a corrupt EXIF block; we read past it.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


class DecodeMemory:
    """The bytes of pixels all decode workers together may hold (scan.decode_memory).

    Each decode reserves what its header says it will need, and waits while others hold the
    rest: two big images never decode at once, small ones still run side by side. Before a
    big decode a marker naming the file is written to `markers`, and removed after; one
    left behind means the process died in that decode (the OOM killer leaves no other
    trace), and the next run records the file as failed (`crashed_decodes`).
    """

    def __init__(self, limit: int, markers: Path | None = None) -> None:
        self.limit = limit
        self._markers = markers
        self._held = 0
        self._free = threading.Condition()

    @contextmanager
    def reserve(self, need: int, hashed: Hashed) -> Iterator[None]:
        """Hold `need` bytes of the budget for the duration; refuse an image needing more
        than all of it."""
        if need > self.limit:
            raise BadImage(
                f"needs about {_megabytes(need)} MB to decode, over scan.decode_memory"
                f" ({_megabytes(self.limit)} MB)"
            )
        with self._free:
            self._free.wait_for(lambda: self._held + need <= self.limit)
            self._held += need
        marker = self._mark(hashed) if need * 4 >= self.limit else None
        try:
            yield
        finally:
            if marker is not None:
                marker.unlink(missing_ok=True)
            with self._free:
                self._held -= need
                self._free.notify_all()

    def _mark(self, hashed: Hashed) -> Path | None:
        if self._markers is None:
            return None
        marker = self._markers / hashed.sha256
        file = hashed.file
        try:
            self._markers.mkdir(parents=True, exist_ok=True)
            marker.write_text(
                json.dumps({"path": file.path, "size": file.size, "mtime_ns": file.mtime_ns})
            )
        except OSError as exc:  # no marker costs only the crash's record, not the image
            log.warning("cannot write %s: %s", marker, exc.strerror)
            return None
        return marker


def crashed_decodes(markers: Path) -> list[tuple[Path, Failure]]:
    """The decodes a previous process died in (its markers), as failures of their content,
    each with the marker to remove once the failure is stored."""
    found: list[tuple[Path, Failure]] = []
    try:
        names = sorted(markers.iterdir())
    except FileNotFoundError:
        return found
    for marker in names:
        try:
            held = json.loads(marker.read_text())
            file = FileInfo(str(held["path"]), int(held["size"]), int(held["mtime_ns"]))
        except (OSError, ValueError, KeyError, TypeError):  # half written: the kill came first
            marker.unlink(missing_ok=True)
            continue
        reason = (
            "the process died while decoding this image (out of memory?);"
            " not tried again until the file changes"
        )
        found.append((marker, Failure(file, reason, sha256=marker.name)))
    return found


def decode(
    hashed: Hashed, geometry: Geometry, max_pixels: int, memory: DecodeMemory | None = None
) -> Decoded:
    """Decode `hashed.file` for the model, or raise `BadImage` saying why it cannot be
    (`memory`: the budget shared with the other decode workers)."""
    if hashed.file.size == 0:
        raise BadImage("empty file (0 bytes)")

    def read() -> Decoded:
        with open_regular(hashed.file.path) as handle:
            return _decode_from(handle, hashed, geometry, max_pixels, memory)

    return _with_reasons(read)


def decode_bytes(data: bytes, geometry: Geometry, max_pixels: int) -> Decoded:
    """Decode an upload held in memory (`POST /predict`), with the same checks and reasons."""
    if not data:
        raise BadImage("empty file (0 bytes)")
    hashed = Hashed(FileInfo("<upload>", len(data), 0), hashlib.sha256(data).hexdigest())
    return _with_reasons(lambda: _decode_from(io.BytesIO(data), hashed, geometry, max_pixels))


def _decode_from(
    handle: BinaryIO,
    hashed: Hashed,
    geometry: Geometry,
    max_pixels: int,
    memory: DecodeMemory | None = None,
) -> Decoded:
    with Image.open(handle) as image:
        # Pillow reads and decodes 64 kB at a time, taking the GIL back after each step: a
        # 12 MP photo in 1 MB steps keeps the other decode worker's core busier (+3 to 5
        # points of the limit at 12 MP, docs/benchmarks.md).
        image.decodermaxblock = max(image.decodermaxblock, min(hashed.file.size, _READ_BLOCK))
        width, height = image.size
        if width * height > max_pixels:
            raise BadImage(
                f"too many pixels: {width}x{height} is over the limit of {max_pixels:,}"
                " (scan.max_pixels)"
            )
        return _decode_open(hashed, image, geometry, memory)


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


def _decode_open(
    hashed: Hashed, image: Image.Image, geometry: Geometry, memory: DecodeMemory | None = None
) -> Decoded:
    fmt = image.format or "unknown"
    width, height = image.size
    orientation = orientation_of(image)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    image.seek(0)  # the first frame of an animation
    if fmt == "JPEG":
        image.draft("RGB", (geometry.resize, geometry.resize))
    if memory is None:
        small = _shrink(image, geometry)
    else:
        with memory.reserve(decode_cost(image), hashed):
            small = _shrink(image, geometry)
    if orientation in UPRIGHT:
        small = small.transpose(UPRIGHT[orientation])
    pixels = np.asarray(small, dtype=np.uint8)
    return Decoded(hashed=hashed, pixels=pixels, width=width, height=height, format=fmt)


def _shrink(image: Image.Image, geometry: Geometry) -> Image.Image:
    """The pixels decoded, made RGB, cropped and scaled: the step that needs the memory."""
    rgb = _to_rgb(image)
    return rgb.resize(
        (geometry.crop, geometry.crop), geometry.resample, box=_centre_box(rgb.size, geometry)
    )


def decode_cost(image: Image.Image) -> int:
    """Bytes decoding `image` (opened, drafted, not loaded) holds at its peak, from the header:
    the decoded pixels plus the RGB copy `_to_rgb` makes, and its intermediates."""
    width, height = image.size
    mode = image.mode
    # Pillow holds 1 byte a pixel for one 8-bit band, 4 for more bands or 32-bit ones.
    decoded = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    if mode in _WIDE_MODES:  # a uint32 or float32 array, 8-bit greys, then RGB
        converted = 4 + 1 + 1 + 4
    elif mode in _ALPHA_MODES or "transparency" in image.info:  # RGBA, a mask, RGB
        converted = 4 + 1 + 4
    else:
        converted = 0 if mode == "RGB" else 4
    return width * height * (decoded + converted)


def _megabytes(size: int) -> str:
    return f"{(size + _MB - 1) // _MB:,}"


def orientation_of(image: Image.Image) -> int:
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
