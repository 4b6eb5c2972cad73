"""history and several nodes: hourly aggregates of inspections (inspectionhour), the raw rows
they count (inspection.rolled_up), partial indexes for the roll-up and for shared image files;
the node that claimed a job (trainingjob.node) and registered bundles' bytes (modelfile)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 08:00:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

String = sqlmodel.sql.sqltypes.AutoString
PARTIAL = {
    "ix_inspection_fresh": ("t_capture", "NOT rolled_up"),
    "ix_inspection_image_ref": ("image_ref", "image_ref IS NOT NULL"),
    "ix_inspection_heatmap_ref": ("heatmap_ref", "heatmap_ref IS NOT NULL"),
}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "rolled_up" not in {c["name"] for c in inspector.get_columns("inspection")}:
        # rows stored before the history existed are counted by the first roll-up
        op.add_column("inspection", sa.Column("rolled_up", sa.Boolean(), nullable=False, server_default=sa.false()))
    indexes = {i["name"] for i in inspector.get_indexes("inspection")}
    for name, (column, where) in PARTIAL.items():
        if name not in indexes:
            op.create_index(name, "inspection", [column], sqlite_where=sa.text(where), postgresql_where=sa.text(where))
    if "inspectionhour" not in inspector.get_table_names():
        op.create_table(
            "inspectionhour",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("source_id", String(length=200), nullable=False),
            sa.Column("model_version", String(length=100), nullable=False),
            sa.Column("hour", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
            sa.Column("first_capture", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
            sa.Column("n_ok", sa.Integer(), nullable=False),
            sa.Column("n_review", sa.Integer(), nullable=False),
            sa.Column("n_ng", sa.Integer(), nullable=False),
            sa.Column("ok_scores", sa.LargeBinary(), nullable=False),
            sa.Column("flagged_scores", sa.LargeBinary(), nullable=False),
            sa.Column("latencies", sa.LargeBinary(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("source_id", "model_version", "hour"),
        )
        op.create_index("ix_inspectionhour_hour", "inspectionhour", ["hour"], unique=False)
    if "node" not in {c["name"] for c in inspector.get_columns("trainingjob")}:
        op.add_column("trainingjob", sa.Column("node", String(length=100), nullable=False, server_default=""))
    if "modelfile" not in inspector.get_table_names():
        op.create_table(
            "modelfile",
            sa.Column("version", String(length=100), nullable=False),
            sa.Column("data", sa.LargeBinary(), nullable=False),
            sa.PrimaryKeyConstraint("version"),
        )


def downgrade() -> None:
    op.drop_table("modelfile")
    with op.batch_alter_table("trainingjob") as batch_op:
        batch_op.drop_column("node")
    op.drop_index("ix_inspectionhour_hour", table_name="inspectionhour")
    op.drop_table("inspectionhour")
    for name in PARTIAL:
        op.drop_index(name, table_name="inspection")
    with op.batch_alter_table("inspection") as batch_op:
        batch_op.drop_column("rolled_up")
