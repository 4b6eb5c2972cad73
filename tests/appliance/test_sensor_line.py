"""A sensor line end to end: every vector model kind fitted with the CLI on 20 normal windows,
uploaded, promoted to a ``csv:`` source, and deciding its windows in the running appliance (real
broker, SQLite), with NG alerts on MQTT for the faulty stretches."""

from __future__ import annotations

import csv
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from appliance.api import create_app
from appliance.cli import main
from appliance.images import BAND, PLOT_WIDTH
from appliance.runtime import Appliance
from appliance.storage import store
from appliance.storage.models import Inspection
from models import bundle as bundle_io
from models.detector.vector import MODELS
from tests.helpers.appliance import appliance_settings, upload
from tests.helpers.broker import Subscriber
from tests.helpers.waiting import wait_for

WINDOW, HOP = 32, 16
# a gross fault (a channel offset by 1.7x its amplitude): 20 windows calibrate T2 as a 90 % upper
# bound of the 1 % quantile extrapolated from their tail, far above the scores they saw
FAULT = 3.0


def readings(path: Path, n: int, seed: int, faults: bool = False) -> Path:
    """Three channels: two phase-shifted sines and their sum, with noise; with ``faults``, the
    third channel is offset by ``FAULT`` on stretches of 48 rows."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 23.3
    a, b = np.sin(t), np.sin(t + 1.0)
    x = np.stack([a, b, a + b], axis=1) + 0.05 * rng.normal(size=(n, 3))
    if faults:
        for s in range(64, n - 48, 160):
            x[s : s + 48, 2] += FAULT
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["a", "b", "sum"])
        writer.writerows([[f"{v:.5f}" for v in row] for row in x])
    return path


def test_every_vector_kind_serves_a_csv_line_after_calibrating_on_20_windows(tmp_path: Path, broker) -> None:
    normal = readings(tmp_path / "normal.csv", WINDOW + 19 * HOP, seed=0)  # exactly 20 windows
    line = readings(tmp_path / "line.csv", 1600, seed=1, faults=True)
    bundles = {}
    for kind in MODELS:
        out = tmp_path / f"{kind}.zip"
        fit = ["detector", "fit", "--normal", str(normal), "--window", str(WINDOW), "--hop", str(HOP)]
        assert main([*fit, "--method", kind, "--epochs", "30", "-o", str(out)]) == 0
        bundles[kind] = out
    assert main(["detector", "fit", "--normal", str(normal), "--method", "draem", "-o", str(tmp_path / "x.zip")]) == 2

    settings = appliance_settings(tmp_path, broker.port, f"csv:{line}?window={WINDOW}&hop={HOP}&rate=400&loop=1", "s")
    app = Appliance(settings, log=lambda _: None).start()
    sub = Subscriber(broker.port, [app.topics.alerts])
    try:
        token = store.create_token(app.engine, name="engineer", role="engineer")
        client, h = TestClient(create_app(app)), {"Authorization": f"Bearer {token}"}
        (sid,) = app.pipeline.workers
        versions = []
        for kind, path in bundles.items():
            meta = bundle_io.load(path).meta
            assert meta["postprocess"]["calibration"]["n"] == 20, kind  # the threshold rests on all 20 windows
            assert meta["provenance"]["calibrated_on"].startswith("20 "), kind
            version = upload(client, h, path)
            versions.append(version)
            r = client.post(f"/models/{version}/promote", json={"reason": kind, "source_id": sid}, headers=h)
            assert r.status_code == 200, r.text

            def decided(v: str = version) -> list[Inspection]:
                with Session(app.engine) as session:
                    return session.exec(select(Inspection).where(Inspection.model_version == v)).all()

            assert wait_for(lambda: len(decided()) >= 40, timeout=60), kind  # more than one pass over a fault
            inspections = decided()
            assert all(np.isfinite(i.score) for i in inspections), kind
            assert {i.decision for i in inspections} >= {"ok", "ng"}, kind  # good stretches pass, faults do not
        # every kind's NG windows reached MQTT as alerts naming that kind's model
        assert wait_for(lambda: {a["model_version"] for a in sub.alerts()} >= set(versions), timeout=30)
        # what an operator opens from an alert, and the Live view, show the window as a plot of its
        # channels (one band each), not as a 3-pixel-high image
        alert = next(a for a in sub.alerts() if a["decision"] == "ng")
        assert alert["item"].startswith("line ")
        image = client.get(f"/inspections/{alert['inspection_id']}/image", headers=h)
        frame = client.get(f"/sources/{quote(sid, safe='')}/frame", headers=h)  # the id is the source's URL
        for response in (image, frame):
            assert response.status_code == 200 and response.headers["content-type"] == "image/png"
            picture = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
            assert picture.shape == (3 * BAND, PLOT_WIDTH, 3)
            assert (picture < 128).any(axis=2).sum() > 100  # drawn readings and labels on white
        with Session(app.engine) as session:  # the window's readings are kept beside the plot, as they came
            ref = session.get(Inspection, alert["inspection_id"]).image_ref
        values = cv2.imread(str(app.images.source(ref)), cv2.IMREAD_UNCHANGED)
        assert values.dtype == np.float32 and values.shape == (3, WINDOW)
    finally:
        sub.close()
        app.stop()
