"""tags: WordNet id of every label, and derived (hierarchy) labels

Revision ID: 81c54f90a444
Revises: 5d1e0b7a9c21
Create Date: 2026-11-24 13:16:14.788562

Existing tags are the model's own: their wnid comes from their class index (the shipped
ImageNet-1k table). Derived labels (`dog`, `bird`, ...) appear when an image is tagged again;
see the README, "Labels and the WordNet hierarchy".
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tagger.labels.classes import imagenet_classes

revision: str = "81c54f90a444"
down_revision: str | None = "5d1e0b7a9c21"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

tags = sa.table(
    "tags",
    sa.column("class_index", sa.Integer()),
    sa.column("wnid", sa.String(16)),
    sa.column("derived", sa.Boolean()),
)


def upgrade() -> None:
    with op.batch_alter_table("tags", schema=None) as batch_op:
        batch_op.add_column(sa.Column("wnid", sa.String(length=16), nullable=True))
        batch_op.add_column(
            sa.Column("derived", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.alter_column("class_index", existing_type=sa.INTEGER(), nullable=True)
        batch_op.create_index("ix_tags_wnid_score", ["wnid", "score"], unique=False)

    op.get_bind().execute(
        tags.update()
        .where(tags.c.class_index == sa.bindparam("index"))
        .values(wnid=sa.bindparam("class_wnid")),
        [{"index": c.index, "class_wnid": c.wnid} for c in imagenet_classes()],
    )
    with op.batch_alter_table("tags", schema=None) as batch_op:
        batch_op.alter_column("wnid", existing_type=sa.String(length=16), nullable=False)


def downgrade() -> None:
    op.get_bind().execute(tags.delete().where(tags.c.derived == sa.true()))
    with op.batch_alter_table("tags", schema=None) as batch_op:
        batch_op.drop_index("ix_tags_wnid_score")
        batch_op.alter_column("class_index", existing_type=sa.INTEGER(), nullable=False)
        batch_op.drop_column("derived")
        batch_op.drop_column("wnid")
