"""What several test modules share; fixtures live in conftest.py, values and helpers here."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent  # the checkout
PHOTOS = ROOT / "tests" / "photos"  # real photos, with their licences


@dataclass
class Result:
    """What one run of the `tagger` command gave."""

    code: int
    out: str
    err: str


def sql(url: str, statement: str, **params: Any) -> list[tuple[Any, ...]]:
    """The rows of one SQL statement (committed) on the database at `url`: for tests that
    look at the tables directly, on SQLite or PostgreSQL alike."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            result = connection.execute(text(statement), params)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def distinct_copies(folder: Path, count: int) -> None:
    """`count` files of different content: one photo, each with other bytes after its end."""
    data = (PHOTOS / "coral_cat_720p.jpg").read_bytes()
    for i in range(count):
        (folder / f"img_{i:03}.jpg").write_bytes(data + i.to_bytes(2, "big"))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width`x`height` pixels: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )
