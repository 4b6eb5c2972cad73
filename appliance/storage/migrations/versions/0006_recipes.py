"""recipes: a source's own model, thresholds per (source, model version), what each inspection
was decided with and the source's name for the item

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 01:40:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

String = sqlmodel.sql.sqltypes.AutoString


def _columns(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    tables = set(sa.inspect(op.get_bind()).get_table_names())
    if "sourcemodel" not in tables:
        op.create_table(
            "sourcemodel",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("source_id", String(length=200), nullable=False),
            sa.Column("model_version", String(length=100), nullable=False),
            sa.Column("bound_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
            sa.Column("bound_by", String(length=100), nullable=False),
            sa.Column("reason", String(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("sourcemodel", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_sourcemodel_source_id"), ["source_id"], unique=False)
            batch_op.create_index(batch_op.f("ix_sourcemodel_bound_at"), ["bound_at"], unique=False)
    if "thresholdsetting" not in tables:
        op.create_table(
            "thresholdsetting",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("source_id", String(length=200), nullable=False),
            sa.Column("model_version", String(length=100), nullable=False),
            sa.Column("t1", sa.Float(), nullable=False),
            sa.Column("t2", sa.Float(), nullable=False),
            sa.Column("set_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
            sa.Column("set_by", String(length=100), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("source_id", "model_version"),
        )
        with op.batch_alter_table("thresholdsetting", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_thresholdsetting_model_version"), ["model_version"], unique=False)
    # thresholds set per model version before (0004) become the version's setting on every source
    if {"t1", "t2"} <= _columns("modelversion"):
        op.execute(
            "INSERT INTO thresholdsetting (source_id, model_version, t1, t2, set_at, set_by) "
            "SELECT '', version, t1, t2, COALESCE(activated_at, created_at), 'migration 0006' FROM modelversion "
            "WHERE t1 IS NOT NULL AND t2 IS NOT NULL"
        )
        with op.batch_alter_table("modelversion", schema=None) as batch_op:
            batch_op.drop_column("t2")
            batch_op.drop_column("t1")
    added = {
        "inspection": [("item", String(length=300)), ("t1", sa.Float()), ("t2", sa.Float())],
        "alert": [("item", String(length=300))],
    }
    for table, columns in added.items():
        present = _columns(table)
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, kind in columns:
                if name not in present:
                    batch_op.add_column(sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    for table, names in (("alert", ["item"]), ("inspection", ["t2", "t1", "item"])):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name in names:
                batch_op.drop_column(name)
    with op.batch_alter_table("modelversion", schema=None) as batch_op:
        batch_op.add_column(sa.Column("t1", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("t2", sa.Float(), nullable=True))
    op.drop_table("thresholdsetting")
    with op.batch_alter_table("sourcemodel", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sourcemodel_bound_at"))
        batch_op.drop_index(batch_op.f("ix_sourcemodel_source_id"))
    op.drop_table("sourcemodel")
