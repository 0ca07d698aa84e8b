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
    """Columns padded by display width: a Chinese character takes two columns of a terminal."""
    header = [column.upper() for column in columns]
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(map(width, column)) for column in zip(header, *cells, strict=True)]
    return "\n".join(_line(line, widths) for line in [header, *cells])


def width(text: str) -> int:
    """Columns `text` takes in a terminal (wcwidth; escaped names are plain ASCII)."""
    if text.isascii():  # printable ASCII (cells are escaped): one column each, and fast
        return len(text)
    from wcwidth import wcswidth  # imported when needed: most tables are plain ASCII

    return max(wcswidth(text), len(text))


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    padded = (
        c.ljust(w) if c.isascii() else c + " " * (w - width(c))
        for c, w in zip(cells, widths, strict=True)
    )
    return "  ".join(padded).rstrip()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    # A file name must not be able to move the cursor or recolour the terminal.
    return text if text.isprintable() else ascii(text)[1:-1]
