"""The bad-input corpus: every kind of file a NAS folder throws at tagger, with the reason
each bad one must be recorded with. tests/pipeline/test_bad_input.py scans it, and
tests/watch/test_daemon.py drops it into a watched folder."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers import PHOTOS

CAT = (PHOTOS / "coral_cat_720p.jpg").read_bytes()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that declares `width`x`height` pixels: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width * 3 + 1) * 2)  # two rows of the 60000
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def photo(size: tuple[int, int] | None = None) -> Image.Image:
    cat = Image.open(io.BytesIO(CAT)).convert("RGB")
    return cat.resize(size) if size else cat


def corrupt_exif(jpeg: bytes) -> bytes:
    """The photo with an APP1 Exif segment whose TIFF header and IFD are garbage."""
    junk = b"Exif\0\0MM\0*\xff\xff\xff\xf0" + os.urandom(64)
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(junk) + 2) + junk + jpeg[2:]


def make_corpus(folder: Path, outside: Path) -> tuple[dict[str, str], list[str]]:
    """Write the corpus; returns ({bad file: expected reason}, [odd but good files])."""
    bad: dict[str, str] = {}

    def add(name: str, data: bytes, reason: str) -> None:
        (folder / name).write_bytes(data)
        bad[name] = reason

    add("empty.jpg", b"", "empty file")
    add("truncated.jpg", CAT[: len(CAT) // 2], "damaged image data")
    add("truncated.png", encoded(photo(), "PNG")[:30000], "damaged image data")
    add("random.jpg", np.random.default_rng(1).bytes(50_000), "not an image")
    add("notes.png", b"shopping list: milk, eggs\n", "not an image")
    add("page.png", b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "not an image")
    add("evil\x1b[2J\nname.jpg", b"clears your terminal", "not an image")
    add("bomb.png", png_header_only(60_000, 60_000), "too many pixels: 60000x60000")
    add("huge.jpg", CAT + b"\0" * 3_000_000, "file too large")
    os.mkfifo(folder / "pipe.jpg")
    bad["pipe.jpg"] = "not a regular file (a FIFO)"
    (outside / "elsewhere.jpg").write_bytes(CAT)
    (folder / "outside.jpg").symlink_to(outside / "elsewhere.jpg")
    bad["outside.jpg"] = "a symlink, not followed"
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    bad["loop.jpg"] = "a symlink, not followed"
    (folder / "loopdir").symlink_to(folder, target_is_directory=True)  # not entered
    os.close(os.open(os.path.join(os.fsencode(folder), b"caf\xe9.jpg"), os.O_CREAT | os.O_WRONLY))
    bad["caf\\xe9.jpg"] = "not valid UTF-8"
    (folder / "x.jpg").mkdir()  # a folder with a photo's name is a folder

    good = ["one_pixel.png", "tall.png", "cmyk.jpg", "deep.png", "animated.gif", "bad_exif.jpg"]
    (folder / "one_pixel.png").write_bytes(encoded(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"))
    (folder / "tall.png").write_bytes(encoded(photo((1, 20_000)), "PNG"))
    (folder / "cmyk.jpg").write_bytes(encoded(photo().convert("CMYK"), "JPEG"))
    deep = np.asarray(photo().convert("L"), dtype=np.uint16) * 257  # 16 bits per pixel
    (folder / "deep.png").write_bytes(encoded(Image.fromarray(deep), "PNG"))
    frames = [photo((320, 240)), photo((320, 240)).rotate(180)]
    (folder / "animated.gif").write_bytes(
        encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    )
    (folder / "bad_exif.jpg").write_bytes(corrupt_exif(CAT))
    long_dir = folder / "/".join(["a" * 200] * 15)  # a path of about 3,000 characters
    long_dir.mkdir(parents=True)
    (long_dir / "deep_in_here.jpg").write_bytes(CAT)
    good.append(str((long_dir / "deep_in_here.jpg").relative_to(folder)))
    return bad, good
