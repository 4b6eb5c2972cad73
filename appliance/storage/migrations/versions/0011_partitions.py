"""PostgreSQL: the inspection table partitioned (flagged rows apart, OK rows by UTC day) so that a
day past the raw window goes with one DROP; alert.inspection_id loses its foreign key (PostgreSQL
cannot refer to one column of a partitioned table, and SQLite follows so the schema is one)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 17:00:00

The existing rows are copied into the partitioned table in this migration (one INSERT … SELECT:
minutes for tens of millions of rows; the appliance is stopped while it migrates). See
:mod:`appliance.storage.partitions` for the layout and its upkeep.
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

FK_NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}
DAYS_BACK = 60  # day partitions made for the existing OK rows at most this far back (older: default)


def _index_defs(bind, table: str) -> list[tuple[str, str]]:
    rows = bind.execute(
        sa.text(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = CAST(:t AS regclass) AND NOT i.indisprimary ORDER BY c.relname"
        ),
        {"t": table},
    )
    return [(name, definition) for name, definition in rows]


def _drop_alert_fk(bind) -> None:
    for fk in sa.inspect(bind).get_foreign_keys("alert"):
        if fk["referred_table"] == "inspection":
            if bind.dialect.name == "postgresql":
                op.drop_constraint(fk["name"], "alert", type_="foreignkey")
            else:  # SQLite's is unnamed: name it by convention to drop it (the table is rebuilt)
                with op.batch_alter_table("alert", naming_convention=FK_NAMES) as batch:
                    batch.drop_constraint("fk_alert_inspection_id_inspection", type_="foreignkey")


def upgrade() -> None:
    bind = op.get_bind()
    _drop_alert_fk(bind)
    if bind.dialect.name != "postgresql":
        return
    indexes = _index_defs(bind, "inspection")  # their CREATE statements name "inspection": run on the new one
    sequence = bind.execute(sa.text("SELECT pg_get_serial_sequence('inspection', 'id')")).scalar()
    for name, _ in indexes:
        op.execute(f'DROP INDEX "{name}"')
    op.execute("ALTER TABLE inspection DROP CONSTRAINT inspection_pkey")
    op.execute("ALTER TABLE inspection RENAME TO inspection_unpartitioned")
    op.execute(
        "CREATE TABLE inspection (LIKE inspection_unpartitioned INCLUDING DEFAULTS) PARTITION BY LIST (decision)"
    )
    op.execute("ALTER TABLE inspection ADD CONSTRAINT inspection_pkey PRIMARY KEY (id, decision, t_capture)")
    op.execute("CREATE TABLE inspection_flagged PARTITION OF inspection FOR VALUES IN ('review', 'ng')")
    op.execute("CREATE TABLE inspection_ok PARTITION OF inspection FOR VALUES IN ('ok') PARTITION BY RANGE (t_capture)")
    op.execute("CREATE TABLE inspection_ok_default PARTITION OF inspection_ok DEFAULT")
    op.execute("CREATE TABLE inspection_other PARTITION OF inspection DEFAULT")
    today = dt.datetime.now(dt.UTC).date()
    oldest = bind.execute(sa.text("SELECT min(t_capture) FROM inspection_unpartitioned WHERE decision = 'ok'")).scalar()
    day = max(oldest.astimezone(dt.UTC).date(), today - dt.timedelta(days=DAYS_BACK)) if oldest else today
    while day <= today + dt.timedelta(days=2):
        lo = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        op.execute(
            f"CREATE TABLE inspection_ok_p{day:%Y%m%d} PARTITION OF inspection_ok"
            f" FOR VALUES FROM ('{lo.isoformat()}') TO ('{(lo + dt.timedelta(days=1)).isoformat()}')"
        )
        day += dt.timedelta(days=1)
    op.execute("INSERT INTO inspection SELECT * FROM inspection_unpartitioned")
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY inspection.id")
    op.execute("DROP TABLE inspection_unpartitioned")
    for _, definition in indexes:
        op.execute(definition)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        indexes = _index_defs(bind, "inspection")
        sequence = bind.execute(sa.text("SELECT pg_get_serial_sequence('inspection', 'id')")).scalar()
        for name, _ in indexes:
            op.execute(f'DROP INDEX "{name}"')
        op.execute("ALTER TABLE inspection DROP CONSTRAINT inspection_pkey")
        op.execute("ALTER TABLE inspection RENAME TO inspection_partitioned")
        op.execute("CREATE TABLE inspection (LIKE inspection_partitioned INCLUDING DEFAULTS)")
        op.execute("INSERT INTO inspection SELECT * FROM inspection_partitioned")
        op.execute("ALTER TABLE inspection ADD CONSTRAINT inspection_pkey PRIMARY KEY (id)")
        op.execute(f"ALTER SEQUENCE {sequence} OWNED BY inspection.id")
        op.execute("DROP TABLE inspection_partitioned CASCADE")
        for _, definition in indexes:
            op.execute(definition)
        op.create_foreign_key(None, "alert", "inspection", ["inspection_id"], ["id"])
    else:
        with op.batch_alter_table("alert", naming_convention=FK_NAMES) as batch:
            batch.create_foreign_key("fk_alert_inspection_id_inspection", "inspection", ["inspection_id"], ["id"])
