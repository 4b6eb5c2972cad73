"""Real databases for tests: a PostgreSQL database made for one test (or module) and dropped after;
an inspection stored as the pipeline stores it."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import uuid
from collections.abc import Iterator
from typing import Any

PG_ADMIN_URL = os.environ.get("APPLIANCE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def postgres_database(prefix: str = "appliance_test", admin_url: str = PG_ADMIN_URL) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database on the server of ``admin_url`` (a database
    there to connect to), dropped (with its connections) afterwards."""
    import psycopg

    admin_url = admin_url.replace("postgresql+psycopg://", "postgresql://")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def record(engine: Any, source_id: str, decision: str, score: float = 1.0, topics: Any = None, **fields: Any):
    """One inspection (and its alert, if flagged) stored as the pipeline stores it: (inspection,
    alert or None). ``fields`` set more of the inspection's (item, model_version, t1, t2, …)."""
    from appliance.alerts.schema import Topics, alert_message
    from appliance.storage import store
    from appliance.storage.models import Inspection

    topics = topics or Topics()
    values = {"model_version": "m", "latency_ms": 1, "norm_score": 0.6 if decision != "ok" else 0.1} | fields
    inspection = Inspection(
        source_id=source_id, t_capture=dt.datetime.now(dt.UTC), score=score, decision=decision, **values
    )
    return store.record_inspection(
        engine,
        inspection=inspection,
        threshold=0.5,
        alert_topic=topics.alerts,
        build_message=lambda a, i: alert_message(a, i, topics),
    )
