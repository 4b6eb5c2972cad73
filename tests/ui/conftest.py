"""A real appliance for the console tests: SQLite, the system Mosquitto, the REST API on a free
port, a fixed folder of synthetic parts (so the stored scores stop changing once inspected), two
registered detector versions and a token for every role."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from appliance.runtime import Appliance
from appliance.settings import load_settings
from appliance.storage import recipes as recipes_db
from appliance.storage import store
from connectors.factory import build_source
from connectors.synthetic import SyntheticLine
from models.inference import Inferencer
from tests.helpers.appliance import SMALL
from tests.helpers.broker import free_port, port_open
from tests.helpers.console import page_path

PARTS = 80


@dataclass
class Running:
    app: Appliance
    url: str
    tokens: dict[str, str]
    source_id: str
    versions: tuple[str, str]  # (active at start, registered candidate)

    def api(self, role: str = "admin") -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.tokens[role]}"}, timeout=30)


@pytest.fixture(scope="session")
def appliance(tmp_path_factory) -> Running:
    if not port_open(1883):
        pytest.fail("Mosquitto is not running on 127.0.0.1:1883; start it (see README, 'Tests')")
    data = tmp_path_factory.mktemp("console")
    parts = data / "parts"
    parts.mkdir()
    images = [part.image for part in SyntheticLine(64, defect_rate=0.5, seed=11).take(PARTS)]
    for i, image in enumerate(images):
        cv2.imwrite(str(parts / f"{i:04d}.png"), image)
    source = f"folder:{parts}?poll=0.2"
    settings = load_settings(
        data_dir=data / "var",
        detector=SMALL,
        sources=[source],
        api_port=free_port(),
        keep_ok_images=1.0,  # every image kept, so verdicts and retraining have images to use
        teach_interval_s=0,  # a source in teach mode keeps every frame (the teach tests add one)
        drift={"window": 20, "reference": 40},  # the drift watch learns on the folder's first half
        mqtt={"host": "127.0.0.1", "port": 1883, "appliance_id": f"console-{uuid.uuid4().hex[:6]}"},
    )
    app = Appliance(settings, log=lambda line: None)
    app.models_dir.mkdir(parents=True)
    first = app.train_default()
    app.activate(first)
    # the first-start model judges synthetic sources only; these parts are synthetic, in a folder
    sid = build_source(source).source_id
    version = app.register(first)
    recipes_db.bind(app.engine, source_id=sid, version=version, actor="test", reason="synthetic parts")
    # a two-epoch model scores every part alike: its calibrated T2 would flag none of them, so an
    # engineer's thresholds (kept for this source and version) put the top 40 % NG, the next 20 % in review
    model = Inferencer(first)
    scores = [r.score for r in model.predict_batch(images)]
    t1, t2 = (float(q) for q in np.quantile(scores, [0.4, 0.6]))
    recipes_db.set_thresholds(
        app.engine, source_id=sid, version=version, t1=t1, t2=t2, old=model.thresholds, actor="test", reason="parts"
    )
    time.sleep(1.1)  # versions are stamped to the second
    second = app.train_default()
    candidate = app.register(second)
    app.start()
    tokens = {role: store.create_token(app.engine, name=f"test {role}", role=role) for role in store.ROLES}
    running = Running(
        app, f"http://127.0.0.1:{app.api_port}", tokens, source, (app.recipe_for(None).version, candidate)
    )
    with running.api() as api:
        deadline = time.monotonic() + 60
        while api.get("/inspections", params={"limit": 1}).json()["count"] < PARTS:
            assert time.monotonic() < deadline, "the appliance did not inspect the parts folder"
            time.sleep(0.2)
    yield running
    app.stop()


@pytest.fixture
def console(appliance, monkeypatch):
    """``console(role, page)``: the console signed in with that role's token, on that page."""
    from streamlit.testing.v1 import AppTest

    root = Path(__file__).resolve().parents[2]

    def open_console(role: str = "engineer", page: str | None = None) -> AppTest:
        monkeypatch.setenv("APPLIANCE_API_URL", appliance.url)
        monkeypatch.setenv("APPLIANCE_TOKEN", appliance.tokens[role])
        at = AppTest.from_file(str(root / "ui" / "app.py"), default_timeout=60)
        at.run()
        if page:
            at.switch_page(page_path(page))
            at.run()
        assert not at.exception, at.exception
        return at

    return open_console
