"""A source string's credentials stay in the appliance: never in /sources (any role), the
database, MQTT (topics or payloads) or the log, and a restart still has them."""

from __future__ import annotations

import logging
import stat

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import SQLModel

from appliance.api import create_app
from appliance.runtime import Appliance
from appliance.storage import store
from tests.helpers.appliance import appliance_settings
from tests.helpers.broker import Subscriber
from tests.helpers.waiting import wait_for

SECRET = "s3cr3t-Pw"
CAMERA = f"rtsp://inspector:{SECRET}@127.0.0.1:9/stream?backoff=0.05&max_backoff=0.1"  # nothing listens on 9
CAMERA_ID = "rtsp://127.0.0.1:9/stream?backoff=0.05&max_backoff=0.1"


def database_text(engine) -> str:
    with engine.connect() as conn:
        return "\n".join(str(row) for table in SQLModel.metadata.sorted_tables for row in conn.execute(select(table)))


def test_source_credentials_never_leave_the_appliance(tmp_path, db_url, broker, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    lines: list[str] = []
    line = "synth:line?size=64&fps=20&defect_rate=0.5&seed=4"
    settings = appliance_settings(tmp_path, broker.port, line, "cred", database_url=db_url)
    everything = Subscriber(broker.port, ["#"])
    app = Appliance(settings, log=lines.append).start()
    try:
        tokens = {role: store.create_token(app.engine, name=role, role=role) for role in store.ROLES}
        client = TestClient(create_app(app))
        engineer = {"Authorization": f"Bearer {tokens['engineer']}"}
        added = client.post("/sources", json={"url": CAMERA}, headers=engineer)
        assert added.status_code == 201 and added.json()["source_id"] == CAMERA_ID
        sensor = f"mqtt://reader:{SECRET}@127.0.0.1:{broker.port}/plant/vib?window=4"
        assert client.post("/sources", json={"url": sensor, "source_id": "vib"}, headers=engineer).status_code == 201
        assert wait_for(lambda: app.pipeline.status()[CAMERA_ID]["errors"] >= 2, timeout=30)
        assert wait_for(lambda: any(t.endswith("state") and b"reconnecting" in p for t, p, _ in everything.messages))
        tested = client.post("/sources/test", json={"url": CAMERA}, headers=engineer)
        bad = client.post("/sources", json={"url": CAMERA + "&bogus=1"}, headers=engineer)
        assert bad.status_code == 400 and "bogus" in bad.json()["detail"]
        unauthenticated = [client.get("/metrics").text, client.get("/health/ready").text, client.get("/health").text]
        assert CAMERA_ID in unauthenticated[0]  # the camera is labelled by its id, without the password
        answers = [tested.text, bad.text, *unauthenticated] + [
            client.get("/sources", headers={"Authorization": f"Bearer {tokens[role]}"}).text for role in store.ROLES
        ]
        assert all(SECRET not in text for text in answers)
        assert "inspector:***@" in client.get("/sources", headers=engineer).text  # masked, not dropped
    finally:
        app.stop()
    again = Appliance(settings, log=lines.append).start()  # the saved sources come back, credentials included
    try:
        assert CAMERA_ID in again.pipeline.workers and "vib" in again.pipeline.workers
        assert SECRET in again.pipeline.workers[CAMERA_ID].source.target  # it can still log in
        secrets = tmp_path / "source-secrets.json"
        assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
        assert SECRET not in database_text(again.engine)
    finally:
        again.stop()
    everything.close()
    mqtt_text = "\n".join(f"{t} {p!r}" for t, p, _ in everything.messages)
    out, err = capfd.readouterr()
    assert everything.messages and SECRET not in mqtt_text
    assert SECRET not in "\n".join(lines) and SECRET not in caplog.text and SECRET not in out + err


def test_a_new_token_never_starts_with_a_dash(tmp_path, monkeypatch):
    """Tokens are pasted on command lines (``appliance console --token ...``), where a leading dash
    reads as an option."""
    import secrets

    from appliance.storage.db import init_db, make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'tokens.db'}")
    init_db(engine)
    drawn = iter(["-starts-with-a-dash", "Abc_-def"])
    monkeypatch.setattr(secrets, "token_urlsafe", lambda n: next(drawn))
    assert store.create_token(engine, name="line", role="operator") == "Abc_-def"
