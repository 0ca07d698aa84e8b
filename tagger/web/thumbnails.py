"""Thumbnails for the web page: made on demand from the original photo, cached as JPEG.

The page shows many photos at two sizes; decoding a 24-megapixel original for every grid
tile would be far too slow, so each thumbnail is made once and kept on disk. The cache is
bounded: when it grows past its limit, the least recently used thumbnails (oldest mtime; a
hit touches it) go until it is back under 90%, so that eviction runs rarely.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import threading
import time
import zlib
from pathlib import Path

from PIL import Image

from tagger.errors import SkipFile

# Importing decode registers HEIC and lifts Pillow's own pixel limit, as for tagging.
from tagger.pipeline.decode import UPRIGHT, orientation_of
from tagger.pipeline.hashing import open_regular

SIZES: tuple[int, ...] = (256, 1024)  # the sizes the page asks for: grid tiles and the photo page

_MAX_PIXELS = 200_000_000  # checked from the header, before any pixel is decoded
_QUALITY = 85
_EVICT_TO = 0.9  # of max_bytes: each eviction frees enough to be rare
_STALE_TEMP_S = 3600  # a temporary file this old was left by a crash, not a maker at work
_STRIPES = 64
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CACHED_NAME = re.compile(r"[0-9a-f]{64}-[0-9]+\.jpg")
_TEMP_SUFFIX = ".tmp"
_WHITE = (255, 255, 255)
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


class ThumbnailError(Exception):
    """The source could not be made into a thumbnail (damaged, vanished)."""


class Thumbnails:
    """A folder of JPEG thumbnails, keyed by content hash and size, at most `max_bytes` big.

    Safe to share between threads. The running total is an estimate kept in memory (one scan
    of the folder at first use); every eviction rescans and corrects it.
    """

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self._folder = folder
        self._max_bytes = max_bytes
        self._lock = threading.Lock()  # guards _total and eviction
        self._total: int | None = None
        # Striped locks: makers of one thumbnail wait for each other instead of all decoding
        # it, without a lock per key to create and clean up.
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]

    def get(self, sha256: str, source: Path, size: int) -> Path:
        """The cached JPEG of the image `sha256` (read from `source` if not cached yet), its
        longest side at most `size` (never upscaled), upright (EXIF orientation applied), RGB
        (transparency flattened on white). Raises ValueError for a size not in SIZES or a sha256
        that is not 64 lowercase hex; ThumbnailError when the source cannot be decoded."""
        path = self._path(sha256, size)
        self._ensure_total()
        if _touch(path):
            return path
        stripe = self._stripes[zlib.crc32(path.name.encode()) % _STRIPES]
        with stripe:
            if _touch(path):  # another thread made it while this one waited
                return path
            written = _write_atomically(path, _make_thumbnail(source, size))
        self._account(path, written)
        return path

    def _path(self, sha256: str, size: int) -> Path:
        """Where the thumbnail lives; the checks keep a request from naming any other path."""
        if not isinstance(size, int) or isinstance(size, bool) or size not in SIZES:
            raise ValueError(f"thumbnail size must be one of {SIZES}, not {size!r}")
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise ValueError(f"not a SHA-256 (64 lowercase hex digits): {sha256!r}")
        return self._folder / sha256[:2] / f"{sha256}-{size}.jpg"

    def _ensure_total(self) -> None:
        """Scan once, before this instance writes anything, so no new file is counted twice."""
        if self._total is not None:
            return
        with self._lock:
            if self._total is None:
                self._total = sum(size for _, size, _ in self._scan())

    def _account(self, made: Path, written: int) -> None:
        with self._lock:
            self._total = (self._total or 0) + written
            if self._total > self._max_bytes:
                self._total = self._evict(keep=made)

    def _evict(self, keep: Path) -> int:
        """Delete the least recently used thumbnails until under 90% of the limit; the new total.

        `keep`, the thumbnail just made for a caller, stays even if it alone is over the limit.
        """
        files = sorted(self._scan())
        total = sum(size for _, size, _ in files)
        target = self._max_bytes * _EVICT_TO
        for _, size, path in files:
            if total <= target:
                break
            if path == keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            total -= size
        return total

    def _scan(self) -> list[tuple[int, int, Path]]:
        """(mtime_ns, bytes, path) of every cached thumbnail; removes a crash's stale temp files."""
        found: list[tuple[int, int, Path]] = []
        stale_before = time.time() - _STALE_TEMP_S
        try:
            shards = [entry for entry in os.scandir(self._folder) if entry.is_dir()]
        except FileNotFoundError:
            return found
        for shard in shards:
            with contextlib.suppress(FileNotFoundError), os.scandir(shard.path) as entries:
                for entry in entries:
                    with contextlib.suppress(FileNotFoundError):
                        st = entry.stat(follow_symlinks=False)
                        if _CACHED_NAME.fullmatch(entry.name):
                            found.append((st.st_mtime_ns, st.st_size, Path(entry.path)))
                        elif entry.name.endswith(_TEMP_SUFFIX) and st.st_mtime < stale_before:
                            os.unlink(entry.path)
        return found


def _touch(path: Path) -> bool:
    """Mark a cached thumbnail as just used; False when it is not cached."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    return True


def _make_thumbnail(source: Path, size: int) -> Image.Image:
    """Decode `source` into an upright RGB image whose longest side is at most `size`."""
    try:
        with open_regular(os.fspath(source)) as handle, Image.open(handle) as image:
            width, height = image.size
            if width * height > _MAX_PIXELS:
                raise ThumbnailError(
                    f"too many pixels: {width}x{height} is over the limit of {_MAX_PIXELS:,}"
                )
            orientation = orientation_of(image)
            image.seek(0)  # the first frame of an animation
            if image.format == "JPEG":
                image.draft("RGB", (size, size))  # let the decoder scale by 1/2..1/8 for free
            small = _workable(image)
            small.thumbnail((size, size), Image.Resampling.LANCZOS)
            flat = _flatten(small)
            return flat.transpose(UPRIGHT[orientation]) if orientation in UPRIGHT else flat
    except ThumbnailError:
        raise
    except SkipFile as exc:  # vanished, or replaced by something that is not a file
        raise ThumbnailError(f"cannot read the photo: {exc.reason}") from None
    except Exception as exc:  # Pillow's decoders raise many kinds for damaged data
        raise ThumbnailError(f"cannot decode the photo: {type(exc).__name__}") from None


def _workable(image: Image.Image) -> Image.Image:
    """A mode that resizes well: RGBA where there is transparency, else RGB.

    Palette and 1-bit images would be resized with NEAREST, and 16-bit ones would clip to white.
    """
    if image.mode in _SIXTEEN_BIT_MODES:
        return image.convert("I").point(lambda value: value * (1 / 256)).convert("RGB")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")


def _flatten(image: Image.Image) -> Image.Image:
    """RGB with any transparency laid on white, as the page's background."""
    if image.mode == "RGB":
        return image
    flat = Image.new("RGB", image.size, _WHITE)
    flat.paste(image, mask=image.getchannel("A"))
    return flat


def _write_atomically(path: Path, image: Image.Image) -> int:
    """Save under a temporary name beside `path`, then rename: no reader sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.stem}.{secrets.token_hex(8)}{_TEMP_SUFFIX}"
    # Not mkstemp: its 0600 would ignore the umask the thumbnails are meant to have.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            image.save(out, "JPEG", quality=_QUALITY, progressive=False)
            out.flush()
            os.fsync(out.fileno())  # else a power cut may leave an empty file, served forever
            written = out.tell()
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return written
