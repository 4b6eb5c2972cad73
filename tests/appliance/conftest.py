"""Real services for appliance tests: databases (SQLite file, PostgreSQL) and Mosquitto brokers."""

from __future__ import annotations

import pytest

from tests.helpers.appliance import running_appliance
from tests.helpers.broker import Broker, port_open
from tests.helpers.database import postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh database: a SQLite file, or a PostgreSQL database created for this test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'appliance.db'}"
        return
    with postgres_database() as url:
        yield url


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def system_broker():
    if not port_open(1883):
        pytest.fail("Mosquitto is not running on 127.0.0.1:1883 (see README: how to start it)")
    return 1883


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def running(request, tmp_path_factory):
    """An appliance on a synthetic line (half defects), per database, shared by a test module."""
    folder = tmp_path_factory.mktemp("api")
    with running_appliance(folder, request.param, "synth:line?size=64&fps=50&defect_rate=0.5&seed=9") as running:
        yield running
