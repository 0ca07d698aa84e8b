"""What several test modules share; fixtures live in conftest.py, values and helpers here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the checkout
PHOTOS = ROOT / "tests" / "photos"  # real photos, with their licences


@dataclass
class Result:
    """What one run of the `tagger` command gave."""

    code: int
    out: str
    err: str


def distinct_copies(folder: Path, count: int) -> None:
    """`count` files of different content: one photo, each with other bytes after its end."""
    data = (PHOTOS / "coral_cat_720p.jpg").read_bytes()
    for i in range(count):
        (folder / f"img_{i:03}.jpg").write_bytes(data + i.to_bytes(2, "big"))
