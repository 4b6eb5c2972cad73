"""Alembic migrations: the migrated schema is the models' schema; upgrades keep history."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import Session, SQLModel, select

from appliance.storage.db import init_db, make_engine
from appliance.storage.models import Inspection
from appliance.storage.partitions import include_name


def inspection(decision: str, t: dt.datetime | None = None) -> Inspection:
    """One inspection row of source "s" under model "m", captured at ``t`` (now)."""
    return Inspection(
        source_id="s",
        t_capture=t or dt.datetime.now(dt.UTC),
        score=1,
        norm_score=0.5,
        decision=decision,
        model_version="m",
        latency_ms=1,
    )


def test_migrations_build_exactly_the_models_schema(db_url):
    engine = make_engine(db_url)
    init_db(engine)
    with engine.connect() as connection:
        opts = {"compare_type": True, "include_name": include_name(connection)}  # PostgreSQL's partitions left out
        diff = compare_metadata(MigrationContext.configure(connection, opts=opts), SQLModel.metadata)
    assert diff == [], f"models and migrations disagree; add a migration: {diff}"


def test_upgrading_again_keeps_the_data(db_url):
    engine = make_engine(db_url)
    init_db(engine)
    with Session(engine) as session:
        session.add(inspection("ng"))
        session.commit()
    init_db(make_engine(db_url))  # a restart, or an upgrade with no new revision
    with Session(engine) as session:
        assert len(session.exec(select(Inspection)).all()) == 1
    from alembic.script import ScriptDirectory

    from appliance.storage.db import MIGRATIONS

    with engine.connect() as connection:
        head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == head


def test_a_database_made_before_migrations_is_adopted_without_loss(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    first_schema = [
        t
        for name, t in SQLModel.metadata.tables.items()
        if name not in ("trainingjob", "sourceconfig", "sourcemodel", "thresholdsetting", "inspectionhour")
    ]
    SQLModel.metadata.create_all(engine, tables=first_schema)  # how builds before migrations made it
    with Session(engine) as session:
        session.add(inspection("ok"))
        session.commit()
    init_db(engine)
    assert {"alembic_version", "trainingjob"} <= set(inspect(engine).get_table_names())  # upgraded
    with Session(engine) as session:
        assert len(session.exec(select(Inspection)).all()) == 1


def test_partitioning_an_existing_database_keeps_every_row(db_url):
    """0011 (PostgreSQL: the inspections into partitions; both: the alert's foreign key goes) on a
    database with history: every row and id kept, each row in its partition, ids continue; and
    back down and up again."""
    from alembic import command

    from appliance.storage import store
    from appliance.storage.db import alembic_config

    engine = make_engine(db_url)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0010")
    now = dt.datetime.now(dt.UTC)
    captured = {
        "ok": [now, now - dt.timedelta(days=3), now - dt.timedelta(days=100)],
        "ng": [now - dt.timedelta(days=2)],
    }
    with Session(engine) as session:
        for decision, times in captured.items():
            for t in times:
                row = inspection(decision, t)
                session.add(row)
                session.flush()
                if decision == "ng":  # as that schema has it (later revisions add columns to the alert)
                    alert = sa.Table("alert", sa.MetaData(), autoload_with=session.connection())
                    values = store.new_alert(row, 0.5, None).model_dump(exclude={"id"})
                    session.execute(alert.insert().values({k: v for k, v in values.items() if k in alert.c}))
        session.commit()

    def stored() -> list[tuple]:
        with engine.connect() as connection:
            where = ", tableoid::regclass::text" if engine.dialect.name == "postgresql" else ""
            return [
                tuple(r)
                for r in connection.execute(text(f"SELECT id, decision, t_capture{where} FROM inspection ORDER BY id"))
            ]

    before = stored()
    init_db(engine)
    after = stored()
    assert [r[:3] for r in after] == [r[:3] for r in before]
    if engine.dialect.name == "postgresql":
        assert [r[3] for r in after] == [
            f"inspection_ok_p{now:%Y%m%d}",
            f"inspection_ok_p{now - dt.timedelta(days=3):%Y%m%d}",
            "inspection_ok_default",  # older than the 60 days the migration makes partitions for
            "inspection_flagged",
        ]
    with engine.connect() as connection:
        joined = connection.execute(
            text("SELECT count(*) FROM alert JOIN inspection ON inspection.id = alert.inspection_id")
        )
        assert joined.scalar() == 1
    with Session(engine) as session:
        row = inspection("ok", now)
        session.add(row)
        session.commit()
        assert row.id > max(r[0] for r in before)
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "0010")
    assert [r[:3] for r in stored()][: len(before)] == [r[:3] for r in before]
    init_db(engine)
    assert len(stored()) == len(before) + 1
    engine.dispose()
