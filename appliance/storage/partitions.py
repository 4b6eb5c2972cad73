"""PostgreSQL: the inspection table in partitions, so a day of a fast line goes with one ``DROP``.

The layout (made by migration 0011)::

    inspection                    PARTITION BY LIST (decision)
      inspection_flagged          review, ng: kept for good with their alerts (no day partitions)
      inspection_ok               ok: PARTITION BY RANGE (t_capture)
        inspection_ok_pYYYYMMDD   one UTC day each, made a few days ahead by :func:`ensure`
        inspection_ok_default     rows no day partition takes (a clock far off, a day written back
                                  from a spool after its partition went): batched deletes
      inspection_other            any other decision (none today)

A day's partition goes once the whole day is past the raw window (so raw OK rows stay up to a day
longer than the window on PostgreSQL) and every row in it is rolled up: it is detached, the files
its rows referred to are reported in batches (they are no longer referenced from the table, so the
caller deletes those no other row uses) and it is dropped. A pass that dies between the detach and
the drop leaves a detached table, which the next pass finishes. Partition maintenance is
serialised between nodes by an advisory lock; a node that finds it taken skips its turn. DDL waits
at most ``LOCK_TIMEOUT`` for its lock (it must not queue the line's writes behind a long read):
what it could not do is done on a later pass.

SQLite has none of this (batched deletes, :func:`appliance.storage.history.delete_raw`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

PARENT = "inspection_ok"  # the partitioned table of OK rows
PREFIX = "inspection_ok_p"  # + YYYYMMDD
AHEAD = 2  # days made ahead of today: a missed pass or two never sends a day to the default
LOCK_TIMEOUT = "2s"
LOCK_KEY = 0x1A5_0011  # pg_advisory_lock key of partition maintenance (any constant the app owns)
BATCH = 5_000
LIKE = PREFIX.replace("_", r"\_") + "%"  # LIKE pattern of the day partitions' names


def partitioned(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "postgresql"


def day_name(day: dt.date) -> str:
    return f"{PREFIX}{day:%Y%m%d}"


def day_of(name: str) -> dt.date:
    return dt.datetime.strptime(name[len(PREFIX) :], "%Y%m%d").replace(tzinfo=dt.UTC).date()


def _start(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def partition_tables(connection: Connection) -> set[str]:
    """Every table that is (or was: detached, not dropped yet) an inspection partition; schema
    comparisons leave them out (the models know the parent only)."""
    if not partitioned(connection):
        return set()
    rows = connection.execute(
        text(
            "SELECT relname FROM pg_class WHERE relkind IN ('r', 'p') AND relnamespace = current_schema()::regnamespace"
            " AND (relispartition OR relname LIKE :prefix)"
        ),
        {"prefix": LIKE},
    )
    return {name for (name,) in rows}


def include_name(connection: Connection):
    """Alembic's ``include_name`` filter that leaves the partitions out of schema comparisons."""
    parts = partition_tables(connection)
    return lambda name, kind, _parent: not (kind == "table" and name in parts)


def _days(connection: Connection, *, attached: bool) -> list[str]:
    """The day partitions attached to ``inspection_ok`` (or the detached leftovers), oldest first."""
    query = (
        "SELECT c.relname FROM pg_class c WHERE c.relkind = 'r' AND c.relname LIKE :prefix"
        " AND c.relnamespace = current_schema()::regnamespace"
        " AND c.relispartition = :attached ORDER BY c.relname"
    )
    names = connection.execute(text(query), {"prefix": LIKE, "attached": attached}).scalars()
    return [n for n in names if len(n) == len(PREFIX) + 8]


def _ddl(engine: Engine, sql: str) -> bool:
    """Run one DDL statement in its own transaction, waiting at most LOCK_TIMEOUT for its locks;
    False (logged) if it could not be done now."""
    try:
        with engine.begin() as connection:
            connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            connection.execute(text(sql))
        return True
    except DBAPIError as exc:
        log.warning("partition maintenance postponed (%s): %s", sql, str(exc.orig).strip().splitlines()[0])
        return False


class _Maintenance:
    """Partition maintenance by one node at a time (a session-level advisory lock held on one
    connection for the duration; a node that finds it taken does nothing)."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.connection, self.held = engine, None, False

    def __enter__(self) -> bool:
        self.connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self.held = bool(self.connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar())
        return self.held

    def __exit__(self, *exc: object) -> None:
        try:
            if self.held:
                self.connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
        except DBAPIError:  # the database went away: so did the session, and its lock with it
            self.connection.invalidate()
        finally:
            self.connection.close()


def ensure(engine: Engine, *, first: dt.date, last: dt.date | None = None) -> list[str]:
    """Make the day partitions from ``first`` to ``last`` (default: ``first`` + AHEAD days) that
    do not exist yet; returns the names made. A day whose rows already sit in the default
    partition is left there (PostgreSQL refuses the new partition; logged)."""
    if not partitioned(engine):
        return []
    last = last or first + dt.timedelta(days=AHEAD)
    made = []
    with _Maintenance(engine) as mine:
        if not mine:
            return []
        with engine.connect() as connection:
            existing = set(_days(connection, attached=True)) | set(_days(connection, attached=False))
        day = first
        while day <= last:
            name = day_name(day)
            if name not in existing:
                lo, hi = _start(day).isoformat(), _start(day + dt.timedelta(days=1)).isoformat()
                if _ddl(engine, f"CREATE TABLE {name} PARTITION OF {PARENT} FOR VALUES FROM ('{lo}') TO ('{hi}')"):
                    made.append(name)
            day += dt.timedelta(days=1)
    return made


def oldest_start(engine: Engine) -> dt.datetime | None:
    """The start of the oldest attached day partition: rows captured before it (other than the
    flagged ones) can only be in the default partitions."""
    with engine.connect() as connection:
        days = _days(connection, attached=True)
    return _start(day_of(days[0])) if days else None


def drop_expired(engine: Engine, *, before: dt.datetime) -> Iterator[tuple[list[str], int]]:
    """Drop the day partitions that end at or before ``before`` and whose rows are all rolled up
    (and finish any a previous pass detached); yields, per batch, the image references its rows
    held (already unreferenced by the table) and, once per partition, how many rows went."""
    if not partitioned(engine):
        return
    with _Maintenance(engine) as mine:
        if not mine:
            return
        with engine.connect() as connection:
            leftovers = _days(connection, attached=False)
            expired = [
                n for n in _days(connection, attached=True) if _start(day_of(n) + dt.timedelta(days=1)) <= before
            ]
        for name in leftovers:
            yield from _drop_detached(engine, name)
        for name in expired:
            with engine.connect() as connection:
                pending = connection.execute(text(f"SELECT EXISTS (SELECT 1 FROM {name} WHERE NOT rolled_up)")).scalar()
            if pending:  # the roll-up has not counted all of it yet: next pass
                continue
            if _ddl(engine, f"ALTER TABLE {PARENT} DETACH PARTITION {name}"):
                yield from _drop_detached(engine, name)


def _drop_detached(engine: Engine, name: str) -> Iterator[tuple[list[str], int]]:
    """Report the distinct image references of a detached day table a batch at a time (keyset on
    the partial indexes of the references), then drop it."""
    for column in ("image_ref", "heatmap_ref"):
        last = ""
        while True:
            with engine.connect() as connection:
                refs = list(
                    connection.execute(
                        text(
                            f"SELECT DISTINCT {column} FROM {name} WHERE {column} IS NOT NULL AND {column} > :last"
                            f" ORDER BY {column} LIMIT {BATCH}"
                        ),
                        {"last": last},
                    ).scalars()
                )
            if not refs:
                break
            yield refs, 0
            last = refs[-1]
    with engine.connect() as connection:
        rows = int(connection.execute(text(f"SELECT count(*) FROM {name}")).scalar())
    if _ddl(engine, f"DROP TABLE {name}"):
        yield [], rows


def status(engine: Engine) -> dict[str, object] | None:
    """What an engineer checks (``GET /settings``): the first and last day partition, how many,
    detached ones not dropped yet, and the default partition's rows (PostgreSQL's estimate: a count
    would read it all). Rows piling up there mean partitions are not being made: see the log.
    None on SQLite."""
    if not partitioned(engine):
        return None
    with engine.connect() as connection:
        days = _days(connection, attached=True)
        detached = _days(connection, attached=False)
        estimate = connection.execute(
            text("SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE relname = 'inspection_ok_default'")
        ).scalar()
    return {
        "days": len(days),
        "first_day": day_of(days[0]).isoformat() if days else None,
        "last_day": day_of(days[-1]).isoformat() if days else None,
        "detached": detached,
        "default_rows_estimate": int(estimate or 0),
    }
