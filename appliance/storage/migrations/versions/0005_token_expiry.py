"""token expiry

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 23:40:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a database adopted from before migrations may have been made with this column already
    if "expires_at" not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("apitoken")}:
        with op.batch_alter_table("apitoken", schema=None) as batch_op:
            batch_op.add_column(sa.Column("expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("apitoken", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
