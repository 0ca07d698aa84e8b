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
    LargeBinary,
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
        # image_id and rank: a label query ranks its tags from the index alone (search.py)
        Index("ix_tags_wnid_score", "wnid", "score", "image_id", "rank"),
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


class Embedding(Base):
    """An image's pooled features from the model that tagged it: L2-normalised float16
    bytes (`dim` values), what similar photos and labels of one's own are computed from.
    The row id orders additions, so that the vector index (store/vectors.py) can tell
    what it has not seen yet."""

    __tablename__ = "embeddings"
    __table_args__ = (
        # what the vector index checks before each search: count and newest id, per model,
        # from the index alone (the rows are 2.5 kB each)
        Index("ix_embeddings_model_id", "model", "weights_sha256", "id"),
        {"sqlite_autoincrement": True},  # ids never reused (the vector index keys on them)
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), unique=True)
    model: Mapped[str] = mapped_column(String(64))
    weights_sha256: Mapped[str] = mapped_column(String(64))
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)

    image: Mapped[Image] = relationship()


class OwnLabel(Base):
    """A label a person trained (`tagger train`): a logistic regression on embeddings of one
    model, kept as numbers (coefficients as float32 bytes), never as a pickle. Its tags carry
    `wnid` = `own:<id>` (OWN_PREFIX), an id space apart from WordNet's."""

    __tablename__ = "own_labels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    model: Mapped[str] = mapped_column(String(64))
    weights_sha256: Mapped[str] = mapped_column(String(64))
    dim: Mapped[int] = mapped_column(Integer)
    # None until it has enough examples (photos marked on the web page, one at a time)
    coefficients: Mapped[bytes | None] = mapped_column(LargeBinary)
    intercept: Mapped[float | None] = mapped_column(Float)
    accuracy: Mapped[float | None] = mapped_column(Float)
    trained_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    examples: Mapped[list[OwnExample]] = relationship(
        back_populates="label", cascade="all, delete-orphan"
    )


class OwnExample(Base):
    """One photo of a label's training set, by content: an example (positive) or not."""

    __tablename__ = "own_examples"
    __table_args__ = (UniqueConstraint("label_id", "sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label_id: Mapped[int] = mapped_column(ForeignKey("own_labels.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(String(64))
    positive: Mapped[bool] = mapped_column(Boolean)

    label: Mapped[OwnLabel] = relationship(back_populates="examples")


OWN_PREFIX = "own:"  # the wnid of an own label's tags: own:<own_labels.id>
OWN_RANK = 1000  # own labels' tags rank from here (OWN_RANK + id): apart from the model's

# Answers leave out deleted paths until `tagger prune`.
PRESENT = File.missing_since.is_(None)
