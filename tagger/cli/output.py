"""Rows printed as a table for people, or JSON, CSV or bare paths for other programs."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

FORMATS = ("table", "json", "csv", "paths")


def render(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(list(rows), indent=2, ensure_ascii=False)
    if fmt == "paths":
        return "\n".join(str(row["path"]) for row in rows)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(
            buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue().rstrip("\n")
    return table(rows, columns)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Columns padded by display width: a Chinese character takes two columns of a terminal.
    Built column by column (a query can print 100,000 rows)."""
    padded = []
    for name in columns:
        cells = [name.upper(), *(_cell(row.get(name)) for row in rows)]
        size = max(map(width, cells))
        padded.append([c.ljust(size) if c.isascii() else _pad(c, size) for c in cells])
    return "\n".join(line.rstrip() for line in map("  ".join, zip(*padded, strict=True)))


def width(text: str) -> int:
    """Columns `text` takes in a terminal (wcwidth; escaped names are plain ASCII)."""
    if text.isascii():  # printable ASCII (cells are escaped): one column each, and fast
        return len(text)
    from wcwidth import wcswidth  # imported when needed: most tables are plain ASCII

    return max(wcswidth(text), len(text))


def _pad(text: str, size: int) -> str:
    return text + " " * (size - width(text))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    # A file name must not be able to move the cursor or recolour the terminal.
    return text if text.isprintable() else ascii(text)[1:-1]
