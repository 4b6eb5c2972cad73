"""indexes for the lists consoles poll: a source's inspections newest first, alerts by state
newest first

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 05:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

INDEXES = {
    "inspection": ("ix_inspection_source_id_id", ["source_id", "id"]),
    "alert": ("ix_alert_state_id", ["state", "id"]),
}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table, (name, columns) in INDEXES.items():
        if name not in {i["name"] for i in inspector.get_indexes(table)}:
            op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for table, (name, _) in INDEXES.items():
        op.drop_index(name, table_name=table)
