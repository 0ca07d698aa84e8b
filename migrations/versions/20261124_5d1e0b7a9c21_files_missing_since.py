"""files.missing_since: deleted or moved-away paths are marked, not forgotten

Revision ID: 5d1e0b7a9c21
Revises: c6a4a7939f82
Create Date: 2026-11-24 13:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5d1e0b7a9c21"
down_revision: str | None = "c6a4a7939f82"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("missing_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_column("missing_since")
