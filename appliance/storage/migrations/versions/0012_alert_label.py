"""the alert keeps its inspection's label (a defect type, or "unlike the good parts"), so that the
alert list shows what was found without reading the partitioned inspections

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 16:10:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a database adopted from before migrations may have been made with this column already
    if "label" not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("alert")}:
        with op.batch_alter_table("alert", schema=None) as batch_op:
            batch_op.add_column(sa.Column("label", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.drop_column("label")
