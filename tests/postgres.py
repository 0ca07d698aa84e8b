"""A throwaway PostgreSQL cluster for the tests: initdb and pg_ctl from Debian's
`postgresql` package, a socket in a temp folder (no TCP), dropped after the session.

initdb refuses to run as root, so as root the cluster runs as the `postgres` user (or
`nobody`), in a folder that user owns. Every test gets a database of its own."""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text

_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def binaries() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, or Debian's newest version's."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl", path=str(Path(found).parent)):
        return Path(found).parent
    for folder in _BIN_DIRS:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    return None


def _unprivileged_user() -> str | None:
    """Who runs the server: None for the current user, else a user initdb accepts."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root, but there is no `postgres` or `nobody` user")


@dataclass
class Cluster:
    """A running throwaway server; `new_database()` hands out URLs of fresh databases."""

    bin_dir: Path
    folder: Path = field(init=False)
    user: str | None = field(init=False)
    _names: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.user = _unprivileged_user()
        self.folder = Path(tempfile.mkdtemp(prefix="tagger-pg-"))
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        self.role = self.user or pwd.getpwuid(os.getuid()).pw_name

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        subprocess.run(
            [*prefix, *command],
            check=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
        )

    def start(self) -> None:
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.role,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            # A locale collation, as most servers have (ICU's English, punctuation ignored
            # like glibc's en_US): tagger's path ranges must not depend on it.
            "--locale-provider=icu",
            "--icu-locale=en-US-u-ka-shifted",
        )
        options = (
            f"-k {self.folder} -c listen_addresses='' -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.folder / "server.log"),
            "-w",
            "start",
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.role}@/{database}?host={self.folder}"

    def new_database(self) -> str:
        """A new empty database (copied from template0, so it has nothing of the others)."""
        name = f"t{os.getpid()}_{next(self._names)}"
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1].split("?", 1)[0]
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            engine.dispose()

    def stop(self) -> None:
        try:
            if self.data.exists():
                self._run(
                    str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"
                )
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
