"""Database engines: a SQLite file (WAL) by default, PostgreSQL with a URL."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import create_engine

from appliance.storage import models  # noqa: F401  (registers the tables)


def make_engine(url: str) -> Engine:
    """``sqlite:///var/appliance.db`` or ``postgresql://user@host/db`` (driven by psycopg 3)."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):  # WAL: readers never block the writer
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    # a database that went away must fail fast (readiness, the pipeline), not hang for minutes
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 3})


T = TypeVar("T")


def padded(values: Collection[T]) -> list[T]:
    """``values`` for an ``IN (…)`` list, lengthened to the next power of two by repeating one.

    A statement's text names each value of an IN list (``IN (?, ?, ?)``), so every distinct
    length is a statement of its own, and the drivers keep the statements they prepare: Python's
    sqlite3 128 per connection, psycopg 3 up to 100 per connection on the server. Each minute's
    history rollup, a different number of rows each time, made the appliance's resident memory
    creep by about 25 MB an hour on SQLite (``benchmarks/soak_bench.py``; 6 MB an hour padded).
    Lengths padded to powers of two make 14 texts for up to 8,192 values, and the same rows
    match: a repeated value selects nothing more."""
    out = list(values)
    if len(out) > 1:
        out += out[-1:] * ((1 << (len(out) - 1).bit_length()) - len(out))
    return out


MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def init_db(engine: Engine) -> None:
    """Bring the schema to the newest migration (a new database gets every table; an old one is
    upgraded in place, keeping its history), and on PostgreSQL make today's and the next days'
    inspection partitions (a node started after days off must not send today to the default one)."""
    import datetime as dt

    from alembic import command
    from sqlalchemy import inspect

    from appliance.storage import partitions

    with engine.begin() as connection:
        tables = set(inspect(connection).get_table_names())
        config = alembic_config(connection)
        if tables and "alembic_version" not in tables and "inspection" in tables:
            command.stamp(config, "0001")  # created before migrations existed: the initial schema
        command.upgrade(config, "head")
    partitions.ensure(engine, first=dt.datetime.now(dt.UTC).date())
