"""A running appliance for tests: a small default detector (trained in seconds), a private broker,
SQLite or PostgreSQL, a synthetic line, the REST API through FastAPI's test client and a token for
every role."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fastapi.testclient import TestClient

from appliance.api import create_app
from appliance.runtime import Appliance
from appliance.settings import Settings, load_settings
from appliance.storage import store
from tests.helpers.broker import Broker
from tests.helpers.database import postgres_database
from tests.helpers.waiting import wait_for

SMALL = {"size": 64, "crop": None, "epochs": 2, "training_images": 60}  # the default detector, small


@dataclass
class RunningAppliance:
    app: Appliance
    client: TestClient
    tokens: dict[str, str]
    broker: Broker
    folder: Path

    def __iter__(self):  # app, client, tokens, broker, folder = running
        return iter((self.app, self.client, self.tokens, self.broker, self.folder))


def appliance_settings(folder: Path, broker_port: int, source: str, appliance_id: str, **extra) -> Settings:
    """Settings of a test appliance: the small detector, a free API port, one source, a private broker."""
    return load_settings(
        data_dir=folder,
        api_port=0,
        sources=[source],
        mqtt={"host": "127.0.0.1", "port": broker_port, "appliance_id": appliance_id},
        **{"detector": SMALL, **extra},
    )


def upload(client: TestClient, h: dict[str, str], bundle: Path) -> str:
    """Upload a model bundle through the API; its version."""
    with bundle.open("rb") as f:
        r = client.post("/models", files={"file": ("m.zip", f, "application/zip")}, headers=h)
    assert r.status_code == 201, r.text
    return r.json()["version"]


@contextlib.contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    """A fresh database URL: a SQLite file in ``folder`` or a new PostgreSQL database."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'a.db'}"
        return
    with postgres_database("appliance_api") as url:
        yield url


@contextlib.contextmanager
def running_appliance(
    folder: Path, db_kind: str, source: str, min_scored: int = 60, **extra
) -> Iterator[RunningAppliance]:
    """An appliance inspecting ``source`` until it has scored ``min_scored`` items, then yielded
    (``extra``: more settings)."""
    broker = Broker(folder)
    broker.start()
    try:
        with database(db_kind, folder) as db:
            settings = appliance_settings(folder, broker.port, source, "api", database_url=db, **extra)
            app = Appliance(settings, log=lambda line: None).start()
            try:
                tokens = {role: store.create_token(app.engine, name=role, role=role) for role in store.ROLES}
                assert wait_for(lambda: app.pipeline.status()[source]["scored"] >= min_scored, timeout=60)
                yield RunningAppliance(app, TestClient(create_app(app)), tokens, broker, folder)
            finally:
                app.stop()
    finally:
        broker.stop()
