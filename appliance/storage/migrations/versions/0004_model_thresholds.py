"""thresholds set for a model version

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 23:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a database adopted from before migrations may have been made with these columns already
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("modelversion")}
    with op.batch_alter_table("modelversion", schema=None) as batch_op:
        for name in ("t1", "t2"):
            if name not in present:
                batch_op.add_column(sa.Column(name, sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("modelversion", schema=None) as batch_op:
        batch_op.drop_column("t2")
        batch_op.drop_column("t1")
