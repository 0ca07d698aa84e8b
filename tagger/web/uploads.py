"""Uploads into the managed inbox: written atomically under a safe name, never elsewhere.

The name a browser sends is only a hint: it loses any folder, control characters and
leading dots, and a name already taken gets " (2)", " (3)" ... A half-written upload is a
hidden `.upload-*.part` file, which the daemon ignores and removes at its next start.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from tagger.errors import TaggerError

PART_PREFIX = ".upload-"
_CHUNK = 1 << 20
_SUFFIX_BY_FORMAT = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "GIF": ".gif",
    "WEBP": ".webp",
    "BMP": ".bmp",
    "TIFF": ".tif",
    "AVIF": ".avif",
    "HEIF": ".heic",
}


class TooLarge(TaggerError):
    """More bytes than web.max_upload_bytes."""


def receive(source: BinaryIO, inbox: Path, max_bytes: int) -> tuple[Path, str, int]:
    """Copy `source` to a hidden part file in `inbox`, flushed to disk; (part, sha256, size).

    Refuses (and removes) more than `max_bytes`."""
    inbox.mkdir(parents=True, exist_ok=True)
    part = inbox / f"{PART_PREFIX}{secrets.token_hex(8)}.part"
    digest, size = hashlib.sha256(), 0
    try:
        with open(part, "xb") as out:
            while chunk := source.read(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(f"over the limit of {max_bytes:,} bytes (web.max_upload_bytes)")
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return part, digest.hexdigest(), size


def safe_name(hint: str | None, image_format: str, extensions: Iterable[str]) -> str:
    """A plain file name from what the client sent, ending in a photo extension."""
    name = re.split(r"[/\\]", hint or "")[-1]
    name = "".join(c for c in unicodedata.normalize("NFC", name) if c.isprintable())
    name = name.strip().lstrip(".").strip() or "upload"
    while len(name.encode()) > 200:  # file systems count bytes (255); room for " (2)"
        name = Path(name).stem[:-1] + Path(name).suffix if len(Path(name).stem) > 1 else name[:-1]
    wanted = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    if Path(name).suffix.lower() not in wanted:
        name += _SUFFIX_BY_FORMAT.get(image_format, ".img")
    return name


def publish(part: Path, name: str) -> Path:
    """Give the part file its final name in the same folder, never replacing a file: the
    daemon sees a complete photo appear at once."""
    stem, suffix = Path(name).stem, Path(name).suffix
    for n in range(1, 10_000):
        target = part.parent / (name if n == 1 else f"{stem} ({n}){suffix}")
        try:
            os.link(part, target)  # fails if the name is taken, unlike rename
        except FileExistsError:
            continue
        part.unlink()
        _fsync_folder(part.parent)
        return target
    raise TaggerError(f"no free name for {name} in the inbox")


def remove_leftovers(inbox: Path) -> int:
    """Part files a killed upload left behind; returns how many were removed."""
    removed = 0
    for leftover in inbox.glob(f"{PART_PREFIX}*.part"):
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
