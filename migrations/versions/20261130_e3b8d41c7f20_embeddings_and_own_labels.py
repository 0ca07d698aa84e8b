"""embeddings and own labels: per-image pooled features, and labels trained on them

Images tagged before this have no embedding: the next scan analyses them again.

Revision ID: e3b8d41c7f20
Revises: e3b7d41c9a05
Create Date: 2026-11-30 18:39:55.187291
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e3b8d41c7f20"
down_revision: str | None = "e3b7d41c9a05"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "own_labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("weights_sha256", sa.String(length=64), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("coefficients", sa.LargeBinary(), nullable=True),
        sa.Column("intercept", sa.Float(), nullable=True),
        sa.Column("accuracy", sa.Float(), nullable=True),
        sa.Column("trained_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_own_labels")),
        sa.UniqueConstraint("name", name=op.f("uq_own_labels_name")),
    )
    op.create_table(
        "embeddings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("weights_sha256", sa.String(length=64), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_embeddings_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_embeddings")),
        sa.UniqueConstraint("image_id", name=op.f("uq_embeddings_image_id")),
        sqlite_autoincrement=True,  # ids never reused: the vector index keys on them
    )
    op.create_index(
        "ix_embeddings_model_id", "embeddings", ["model", "weights_sha256", "id"], unique=False
    )
    op.create_table(
        "own_examples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("label_id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("positive", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["label_id"],
            ["own_labels.id"],
            name=op.f("fk_own_examples_label_id_own_labels"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_own_examples")),
        sa.UniqueConstraint("label_id", "sha256", name=op.f("uq_own_examples_label_id")),
    )


def downgrade() -> None:
    op.execute("DELETE FROM tags WHERE wnid LIKE 'own:%'")
    op.drop_table("own_examples")
    op.drop_index("ix_embeddings_model_id", table_name="embeddings")
    op.drop_table("embeddings")
    op.drop_table("own_labels")
