"""ix_tags_wnid_score holds image_id and rank too: a label query ranks from the index alone

`tagger query label:dog` picks each image's best dog tag among some 28,000 at 100,000
images; with (wnid, score) only, each of them was a row lookup for its image_id and rank.
The index grows by 9% (40 to 44 MB there); (wnid, score) lookups use it as before.

Revision ID: ad06c2adb4fa
Revises: e3b8d41c7f20
Create Date: 2026-11-30 22:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "ad06c2adb4fa"
down_revision: str | None = "e3b8d41c7f20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_tags_wnid_score", table_name="tags")
    op.create_index("ix_tags_wnid_score", "tags", ["wnid", "score", "image_id", "rank"])


def downgrade() -> None:
    op.drop_index("ix_tags_wnid_score", table_name="tags")
    op.create_index("ix_tags_wnid_score", "tags", ["wnid", "score"])
