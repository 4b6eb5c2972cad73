"""drift watch: each source's reference frames per model version (driftreference) and its drift
events (driftevent)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 14:00:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

String = sqlmodel.sql.sqltypes.AutoString
UTC = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    tables = sa.inspect(op.get_bind()).get_table_names()
    if "driftreference" not in tables:
        op.create_table(
            "driftreference",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("source_id", String(length=200), nullable=False),
            sa.Column("model_version", String(length=100), nullable=False),
            sa.Column("features", String(), nullable=False),
            sa.Column("created_at", UTC(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("source_id", "model_version"),
        )
    if "driftevent" not in tables:
        op.create_table(
            "driftevent",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("source_id", String(length=200), nullable=False),
            sa.Column("model_version", String(length=100), nullable=False),
            sa.Column("state", String(length=20), nullable=False),
            sa.Column("created_at", UTC(), nullable=False),
            sa.Column("detail", String(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_driftevent_source_id", "driftevent", ["source_id"], unique=False)
        op.create_index("ix_driftevent_created_at", "driftevent", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_driftevent_created_at", table_name="driftevent")
    op.drop_index("ix_driftevent_source_id", table_name="driftevent")
    op.drop_table("driftevent")
    op.drop_table("driftreference")
