"""The database tables. Alembic migrations in `migrations/` must produce exactly these."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Stable constraint names make migrations portable (SQLite batch mode, PostgreSQL).
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Paths compare byte by byte, as SQLite does: the range scans of `rows.under` and the path
# order must not follow a locale's collation, which ignores "/" or sorts "0" before "a".
PATH = String(4096).with_variant(String(4096, collation="C"), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ImageStatus:
    TAGGED = "tagged"
    FAILED = "failed"


class Image(Base):
    """One distinct content (by SHA-256), classified once however many paths hold it."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(16))
    model: Mapped[str | None] = mapped_column(String(64))
    weights_sha256: Mapped[str | None] = mapped_column(String(64))
    tagged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)

    tags: Mapped[list[Tag]] = relationship(
        back_populates="image", cascade="all, delete-orphan", order_by="Tag.rank"
    )


class File(Base):
    """A path on disk and the content it held when last seen."""

    __tablename__ = "files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(PATH, unique=True)
    image_id: Mapped[int | None] = mapped_column(
        ForeignKey("images.id", ondelete="SET NULL"), index=True
    )
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Set when the file itself could not be read (no content to record an image for).
    error: Mapped[str | None] = mapped_column(Text)
    # Set when the path was deleted or moved away; `tagger prune` removes such rows.
    missing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    image: Mapped[Image | None] = relationship()


class Tag(Base):
    """A label of an image with its score: a class the model gave (ranks 1..5, best first),
    or, marked `derived`, a WordNet ancestor scored with its classes' summed probability
    (ranks after the model's, best first)."""

    __tablename__ = "tags"
    __table_args__ = (
        UniqueConstraint("image_id", "rank"),
        Index("ix_tags_class_index_score", "class_index", "score"),
        Index("ix_tags_wnid_score", "wnid", "score"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(128), index=True)
    class_index: Mapped[int | None] = mapped_column(Integer)  # None when derived
    score: Mapped[float] = mapped_column(Float)
    rank: Mapped[int] = mapped_column(Integer)
    wnid: Mapped[str] = mapped_column(String(16))  # WordNet 3.0 noun synset, "n02084071"
    derived: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    image: Mapped[Image] = relationship(back_populates="tags")


class Daemon(Base):
    """A running `tagger watch`, so that `tagger status` lists every machine writing to a
    shared database: its row is kept fresh through the writer, and deleted at a clean stop
    (one left by a crash grows stale)."""

    __tablename__ = "daemons"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # a UUID, per run
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    roots: Mapped[str] = mapped_column(Text)  # JSON list of the watched folders
    started: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    state: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)  # JSON: the status file's counts, queue, ...


# Answers leave out deleted paths until `tagger prune`.
PRESENT = File.missing_since.is_(None)
