"""The installed `tagger` run as a real process (closed or broken output, signals, logs as a
daemon writes them), and the damaged or foreign databases the hardening tests feed it."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers import Result

TAGGER = Path(sys.executable).parent / "tagger"  # the console script: main() as users run it


def run_tagger(*args: str, timeout: float = 120, **options: Any) -> Result:
    """`tagger ARGS` in a process of its own; `options` go to subprocess.run (stdout=...)."""
    options.setdefault("stdout", subprocess.PIPE)
    done = subprocess.run(
        [str(TAGGER), *args],
        stderr=subprocess.PIPE,
        timeout=timeout,
        check=False,
        **options,
    )
    out = done.stdout.decode(errors="replace") if isinstance(done.stdout, bytes) else ""
    return Result(done.returncode, out, done.stderr.decode(errors="replace"))


def run_in_shell(script: str, *args: str, timeout: float = 120) -> Result:
    """bash -c SCRIPT, with "$@" = `tagger ARGS` (for `>&-` and pipes into `head`)."""
    done = subprocess.run(
        ["bash", "-c", script, "bash", str(TAGGER), *args],
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return Result(
        done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    )


def one_error_line(result: Result) -> bool:
    """The whole of stderr is one `error: ...` line: no SQL, no traceback."""
    return result.err.startswith("error: ") and result.err.count("\n") == 1


def damage(db: Path, seed: int = 16) -> list[int]:
    """Random bytes over the root pages of tagger's tables and indexes, as a failing disk or
    a torn write leaves them: pages in the middle of the file; page 1 (the schema) and the
    schema version stay readable, so the damage is found only when the data is read."""
    connection = sqlite3.connect(db)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        roots = [
            page
            for (page,) in connection.execute(
                "SELECT rootpage FROM sqlite_master"
                " WHERE rootpage > 1 AND tbl_name != 'alembic_version'"
            )
        ]
    finally:
        connection.close()
    garbage = random.Random(seed)
    with db.open("r+b") as file:
        for page in roots:
            file.seek((page - 1) * page_size)
            file.write(garbage.randbytes(page_size))
    return roots


def foreign_database(path: Path) -> bytes:
    """Another program's SQLite file (rollback journal, a table of its own); its bytes."""
    connection = sqlite3.connect(path)
    try:
        connection.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
        connection.execute("INSERT INTO photos (name) VALUES ('holiday.jpg')")
        connection.commit()
    finally:
        connection.close()
    return path.read_bytes()
