"""daemons table (every `tagger watch` on a shared database), byte-wise path collation

Revision ID: e3b7d41c9a05
Revises: 81c54f90a444
Create Date: 2026-11-30 18:40:00

On PostgreSQL, `files.path` gets `COLLATE "C"`: the path range scans (a folder and what is
below it) and the path order are then byte-wise, as on SQLite, whatever the server's locale.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e3b7d41c9a05"
down_revision: str | None = "81c54f90a444"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "daemons",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("roots", sa.Text(), nullable=False),
        sa.Column("started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_daemons")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "files",
            "path",
            type_=sa.String(length=4096, collation="C"),
            existing_type=sa.String(length=4096),
            existing_nullable=False,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "files",
            "path",
            type_=sa.String(length=4096),
            existing_type=sa.String(length=4096, collation="C"),
            existing_nullable=False,
        )
    op.drop_table("daemons")
