"""Alembic migrations: the migrated schema is the models' schema; upgrades keep history."""

from __future__ import annotations

import datetime as dt

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import Session, SQLModel, select

from appliance.storage.db import init_db, make_engine
from appliance.storage.models import Inspection


def test_migrations_build_exactly_the_models_schema(db_url):
    engine = make_engine(db_url)
    init_db(engine)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), SQLModel.metadata)
    assert diff == [], f"models and migrations disagree; add a migration: {diff}"


def test_upgrading_again_keeps_the_data(db_url):
    engine = make_engine(db_url)
    init_db(engine)
    with Session(engine) as session:
        session.add(
            Inspection(
                source_id="s",
                t_capture=dt.datetime.now(dt.UTC),
                score=1,
                norm_score=0.5,
                decision="ng",
                model_version="m",
                latency_ms=1,
            )
        )
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
        session.add(
            Inspection(
                source_id="s",
                t_capture=dt.datetime.now(dt.UTC),
                score=1,
                norm_score=0.5,
                decision="ok",
                model_version="m",
                latency_ms=1,
            )
        )
        session.commit()
    init_db(engine)
    assert {"alembic_version", "trainingjob"} <= set(inspect(engine).get_table_names())  # upgraded
    with Session(engine) as session:
        assert len(session.exec(select(Inspection)).all()) == 1
