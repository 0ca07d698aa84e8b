"""Several `tagger watch` on one shared (PostgreSQL) database: a lock per watched folder, and
the `daemons` table through which `tagger status` sees every one of them.

On SQLite one daemon owns the database (a file lock beside it, watch/status.py) and its
status file says everything; these are for the databases that several machines share."""

from __future__ import annotations

import json
import logging
import socket
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, func, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from tagger.errors import TaggerError
from tagger.records import utcnow
from tagger.store.database import Store
from tagger.store.schema import Daemon

log = logging.getLogger(__name__)
# The first key of tagger's advisory locks (two int4 keys: this, then the folder's hash),
# so that another application's advisory locks on the same database never meet ours.
_LOCK_SPACE = 0x7A6767  # "tgg"


_FRESH_S = 60  # a heartbeat younger than this: that daemon is alive


def _nested(one: str, other: str) -> bool:
    """One folder inside the other (not the same: that one's lock says so)."""
    return one != other and (
        one.startswith(other.rstrip("/") + "/") or other.startswith(one.rstrip("/") + "/")
    )


def shared(store: Store) -> bool:
    """Whether several daemons may write to this database (one per folder)."""
    return store.engine.dialect.name == "postgresql"


class FolderLocks:
    """One PostgreSQL advisory lock per watched folder, held by a connection of its own for
    the daemon's life: the server releases them when that connection ends, so a daemon
    killed on one machine leaves no stale lock behind for the next."""

    def __init__(self, store: Store, roots: Sequence[str]) -> None:
        self._store = store
        self._roots = list(roots)
        self._connection: Connection | None = None

    def __enter__(self) -> FolderLocks:
        self._connection = self._take()
        try:
            self._refuse_overlaps(self._connection)
        except BaseException:
            self._connection.close()
            self._connection = None
            raise
        return self

    def _refuse_overlaps(self, connection: Connection) -> None:
        """A folder inside another daemon's (or around it) would be walked, swept and
        tagged by both: refused while that daemon's heartbeat is fresh."""
        rows = connection.execute(
            select(Daemon.host, Daemon.roots).where(
                Daemon.heartbeat > func.now() - timedelta(seconds=_FRESH_S)
            )
        ).all()
        for host, listed in rows:
            for theirs in json.loads(listed):
                for mine in self._roots:
                    if _nested(mine, theirs):
                        raise TaggerError(
                            f"{mine} overlaps {theirs}, which tagger watch on {host} watches"
                            " in this database: give each daemon folders of its own"
                        )

    def _take(self) -> Connection:
        # Autocommit: the locks belong to the session; no transaction is left open for days.
        connection = self._store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            for root in self._roots:
                taken = connection.scalar(
                    text("SELECT pg_try_advisory_lock(:space, hashtext(:root))"),
                    {"space": _LOCK_SPACE, "root": root},
                )
                if not taken:
                    raise TaggerError(
                        f"another `tagger watch` is already watching {root} on this database"
                    )
        except BaseException:
            connection.close()  # and with it every lock taken so far
            raise
        return connection

    def alive(self) -> bool:
        """Whether the connection that holds the locks still answers."""
        if self._connection is None:
            return False
        try:
            self._connection.scalar(text("SELECT 1"))
        except Exception:
            return False
        return True

    def keep(self) -> None:
        """Take the locks again if their connection was lost (a server restart, a network
        cut): raises TaggerError if another daemon took one of the folders meanwhile; while
        the server cannot be reached, tries again at the next call."""
        if self.alive():
            return
        if self._connection is not None:
            with suppress(Exception):
                self._connection.close()
            self._connection = None
        try:
            self._connection = self._take()
        except SQLAlchemyError as exc:
            log.warning("cannot reach the database to keep the folder locks: %s", exc)
            return
        log.warning("the database connection holding the folder locks was lost; retaken")

    def __exit__(self, *_: object) -> None:
        if self._connection is not None:
            with suppress(Exception):  # the server or the connection is gone: so are the locks
                self._connection.execute(text("SELECT pg_advisory_unlock_all()"))
            self._connection.close()
            self._connection = None


@dataclass
class DaemonRecord:
    """What one daemon says of itself in the `daemons` table."""

    roots: list[str]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    host: str = field(default_factory=socket.gethostname)
    started: datetime = field(default_factory=utcnow)


def beat(session: Session, record: DaemonRecord, status: dict[str, Any]) -> None:
    """Insert or refresh this daemon's row (a one-off write, on the writer thread)."""
    row = session.get(Daemon, record.id)
    if row is None:
        row = Daemon(
            id=record.id,
            host=record.host,
            pid=int(status.get("pid", 0)),
            roots=json.dumps(record.roots),
            started=record.started,
        )
        session.add(row)
    row.heartbeat = utcnow()
    row.state = str(status.get("state", "running"))[:32]
    row.detail = json.dumps(status)
    session.flush()
    # The server's clock: the machines' clocks need not agree for `tagger status` to judge.
    session.execute(update(Daemon).where(Daemon.id == record.id).values(heartbeat=func.now()))


def claim(session: Session, record: DaemonRecord) -> int:
    """Forget the rows of daemons that watched one of our folders: we hold its lock, so they
    are dead (killed, or lost with their machine). Returns how many were forgotten."""
    mine = set(record.roots)
    dead = [
        row.id
        for row in session.scalars(select(Daemon))
        if row.id != record.id and mine & set(json.loads(row.roots))
    ]
    if dead:
        session.execute(delete(Daemon).where(Daemon.id.in_(dead)))
    return len(dead)


def leave(session: Session, daemon_id: str) -> None:
    """A clean stop: the row goes."""
    session.execute(delete(Daemon).where(Daemon.id == daemon_id))


def daemons(store: Store) -> list[dict[str, Any]]:
    """Every daemon that writes to this database, with the seconds since its last heartbeat
    (by the server's clock, not this machine's), oldest first."""
    age = func.now() - Daemon.heartbeat if shared(store) else None
    with store.session() as session:
        rows = session.execute(
            select(Daemon, age if age is not None else Daemon.heartbeat).order_by(
                Daemon.started, Daemon.id
            )
        ).all()
    found = []
    for row, since in rows:
        seconds = since.total_seconds() if isinstance(since, timedelta) else None
        found.append(
            json.loads(row.detail)
            | {
                "id": row.id,
                "host": row.host,
                "pid": row.pid,
                "roots": json.loads(row.roots),
                "heartbeat": row.heartbeat.timestamp(),
                "heartbeat_age": seconds,
            }
        )
    return found
