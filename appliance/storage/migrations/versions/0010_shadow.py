"""shadow mode: candidate models in shadow on a source (shadowbinding) and what they said about
each frame beside the source's model (shadowresult)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 14:00:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

String = sqlmodel.sql.sqltypes.AutoString
UTC = sqlmodel.sql.sqltypes.UTCDateTime
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    tables = sa.inspect(op.get_bind()).get_table_names()
    if "shadowbinding" not in tables:
        op.create_table(
            "shadowbinding",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("source_id", String(length=200), nullable=False),
            sa.Column("model_version", String(length=100), nullable=False),
            sa.Column("started_at", UTC(), nullable=False),
            sa.Column("started_by", String(length=100), nullable=False),
            sa.Column("reason", String(), nullable=False),
            sa.Column("ended_at", UTC(), nullable=True),
            sa.Column("ended_by", String(length=100), nullable=True),
            sa.Column("outcome", String(length=20), nullable=True),
            sa.Column("summary", String(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_shadowbinding_source_id", "shadowbinding", ["source_id"], unique=False)
        op.create_index("ix_shadowbinding_model_version", "shadowbinding", ["model_version"], unique=False)
    if "shadowresult" not in tables:
        op.create_table(
            "shadowresult",
            sa.Column("id", BigId, autoincrement=True, nullable=False),
            sa.Column("binding_id", sa.Integer(), nullable=False),
            sa.Column("source_id", String(length=200), nullable=False),
            sa.Column("t_capture", UTC(), nullable=False),
            sa.Column("score", sa.Float(), nullable=False),
            sa.Column("norm_score", sa.Float(), nullable=False),
            sa.Column("decision", String(length=10), nullable=False),
            sa.Column("label", String(length=100), nullable=True),
            sa.Column("latency_ms", sa.Float(), nullable=False),
            sa.Column("heatmap_ref", String(length=300), nullable=True),
            sa.Column("inspection_id", BigId, nullable=True),
            sa.Column("active_version", String(length=100), nullable=False),
            sa.Column("active_decision", String(length=10), nullable=False),
            sa.Column("active_score", sa.Float(), nullable=False),
            sa.Column("active_norm_score", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_shadowresult_binding_id", "shadowresult", ["binding_id"], unique=False)
        op.create_index("ix_shadowresult_t_capture", "shadowresult", ["t_capture"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_shadowresult_t_capture", table_name="shadowresult")
    op.drop_index("ix_shadowresult_binding_id", table_name="shadowresult")
    op.drop_table("shadowresult")
    op.drop_index("ix_shadowbinding_model_version", table_name="shadowbinding")
    op.drop_index("ix_shadowbinding_source_id", table_name="shadowbinding")
    op.drop_table("shadowbinding")
