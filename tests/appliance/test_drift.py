"""Drift watch: a line whose lighting dims step by step is called drifting within a bounded number
of frames, an unchanged line is not over a long run; the state is stored, audited, published
(retained) and survives a restart; at the appliance level through a folder source, the API and a
real broker."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy import stats
from sqlmodel import Session, select

from appliance.alerts.schema import Topics
from appliance.api import create_app
from appliance.cli import main
from appliance.drift import DriftWatch
from appliance.runtime import Appliance
from appliance.storage import store
from appliance.storage.db import init_db, make_engine
from appliance.storage.models import AuditLog, DriftEvent, Inspection, OutboxMessage, utcnow
from models.drift import DriftConfig
from tests.helpers.appliance import appliance_settings, upload
from tests.helpers.parts import good_part, make_parts
from tests.helpers.waiting import wait_for

CONFIG = DriftConfig(window=50, reference=200)


def frames(rng: np.random.Generator, n: int, light: float = 1.0, t1: float | None = None, shift: float = 0.0):
    """Good parts under ``light`` (1: as the reference saw them), each with its inspection: scores
    of a gamma law (moved up by ``shift``), decided against ``t1`` when given (OK otherwise)."""
    for _ in range(n):
        image = np.clip(good_part(64, rng) * light, 0, 255).astype(np.uint8)
        score = float(rng.gamma(2.0, 0.1)) + shift
        decision = "ok" if t1 is None or score < t1 else "review"
        yield image, Inspection(
            source_id="cam", t_capture=utcnow(), score=score, norm_score=0.1, decision=decision,
            model_version="m1", latency_ms=1.0, t1=t1, t2=None if t1 is None else 10 * t1,
        )  # fmt: skip


def feed(watch: DriftWatch, items, until: str = "drifting") -> int | None:
    """Observe frames; the index of the one after which the source turned ``until``, if it did."""
    for i, (image, inspection) in enumerate(items):
        watch.observe(image, inspection)
        if watch.source_status("cam", "m1")["state"] == until:
            return i
    return None


def test_dimming_light_is_caught_within_a_bound_and_an_unchanged_line_stays_quiet(db_url):
    engine = make_engine(db_url)
    init_db(engine)
    rng = np.random.default_rng(0)
    topics = Topics(appliance_id="drift")
    watch = DriftWatch(engine, topics, CONFIG)
    assert feed(watch, frames(rng, CONFIG.reference)) is None
    assert watch.source_status("cam", "m1")["state"] == "stable"
    # a long unchanged run: 60 windows, none drifted
    assert feed(watch, frames(rng, 60 * CONFIG.window)) is None
    assert watch.source_status("cam", "m1")["windows_tested"] == 60
    # the lighting dims by 4 % every 25 frames
    dimming = (item for step in range(1, 40) for item in frames(rng, 25, light=0.96**step))
    fired = feed(watch, dimming)
    assert fired is not None and fired < 4 * CONFIG.window, f"drift seen {fired} frames after the light began to dim"
    with Session(engine) as session:
        (event,) = session.exec(select(DriftEvent)).all()
        assert event.state == "drifting" and "brightness" in json.loads(event.detail)["reason"]
        detail = json.loads(event.detail)
        assert len(detail["before"]["brightness"]) == CONFIG.reference
        assert len(detail["after"]["brightness"]) == CONFIG.window
        assert any("lighting" in h for h in detail["hints"])
        (message,) = session.exec(select(OutboxMessage).where(OutboxMessage.topic == topics.drift("cam"))).all()
        assert message.retain and json.loads(message.payload)["state"] == "drifting"
        assert json.loads(message.payload)["event"] == event.id
        assert session.exec(select(AuditLog).where(AuditLog.action == "drift")).first() is not None
    # a restart knows the state and the reference: no learning, still drifting
    watch = DriftWatch(engine, topics, CONFIG)
    assert watch.source_status("cam", "m1")["state"] == "drifting"
    # the light comes back: stable after `recover` windows without drift
    assert feed(watch, frames(rng, (CONFIG.recover + 1) * CONFIG.window), until="stable") is not None
    with Session(engine) as session:
        assert [e.state for e in session.exec(select(DriftEvent).order_by(DriftEvent.id)).all()] == [
            "drifting",
            "stable",
        ]
    # another model version learns its own reference
    assert watch.source_status("cam", "m2")["state"] == "learning"


def test_moving_the_review_threshold_is_not_a_drift_and_a_score_shift_still_is(db_url):
    """The reference learned with T1 at the 90th percentile of the good parts' scores; an operator
    then lowers T1 to the 60th percentile (40 % of good parts flagged: the OK scores alone would
    move the KS distance by 0.33) or raises it to the 99.9th: no drift in 10 windows either way
    (the default window and reference). A real shift of the scores (up by half their mean) is
    still caught with T1 raised. A reference stored before the cut was kept (OK scores only) still
    loads and tests."""
    engine = make_engine(db_url)
    init_db(engine)
    rng = np.random.default_rng(5)
    law = stats.gamma(2.0, scale=0.1)
    config = DriftConfig()
    watch = DriftWatch(engine, Topics(appliance_id="drift"), config)
    assert feed(watch, frames(rng, config.reference, t1=law.ppf(0.9))) is None
    for quantile in (0.6, 0.999):
        assert feed(watch, frames(rng, 10 * config.window, t1=law.ppf(quantile))) is None
        (score,) = [t for t in watch.source_status("cam", "m1")["last_test"] if t["feature"] == "score"]
        assert score["n_after"] < config.window * min(quantile, 0.9) * 1.2  # one cut for both sides
        assert score["n_before"] < config.reference * min(quantile, 0.9) * 1.2
        below = watch.source_status("cam", "m1")["score_below"]
        assert below == pytest.approx(law.ppf(min(quantile, 0.9)))
    fired = feed(watch, frames(rng, 10 * config.window, t1=law.ppf(0.999), shift=0.1))
    assert fired is not None and fired < 2 * config.window
    with Session(engine) as session:
        (event,) = session.exec(select(DriftEvent)).all()
        detail = json.loads(event.detail)
        assert "score" in detail["reason"] and detail["score_below"] == pytest.approx(law.ppf(0.9), rel=1e-6)
        assert max(detail["before"]["score"] + detail["after"]["score"]) <= law.ppf(0.9) * 1.0001  # 5 digits kept
    # a reference stored before: OK scores only, no cut
    store.save_drift_reference(
        engine, source_id="cam", model_version="m0", features={"score": list(law.rvs(300, random_state=rng))}
    )
    watch = DriftWatch(engine, Topics(appliance_id="drift"), config)
    old = (replace_version(item, "m0") for item in frames(rng, 5 * config.window, t1=law.ppf(0.999)))
    for image, inspection in old:
        watch.observe(image, inspection)
    status = watch.source_status("cam", "m0")
    assert status["windows_tested"] == 5 and status["state"] == "stable"


def replace_version(item, version: str):
    image, inspection = item
    inspection.model_version = version
    return image, inspection


def test_drift_of_a_folder_source_through_the_appliance_api_and_broker(tmp_path: Path, broker) -> None:
    """Parts dropped into a watched folder; the lighting dims: the API says drifting, the event
    has its before / after values, ``mosquitto_sub`` reads the retained state, a reset learns anew
    (audited) and a restart keeps what was set."""
    root = make_parts(tmp_path / "parts", train=60, test_good=4, per_defect=1, size=64)
    bundle = tmp_path / "m.zip"
    fit = ["detector", "fit", "--normal", str(root / "train" / "good"), "--size", "64", "--method", "autoencoder"]
    assert main([*fit, "--epochs", "3", "--false-alarm-rate", "0.05", "-o", str(bundle)]) == 0
    line = tmp_path / "line"
    line.mkdir()
    drift = {"window": 40, "reference": 80}
    settings = appliance_settings(tmp_path, broker.port, f"folder:{line}?poll=0.1", "drift", drift=drift)
    rng = np.random.default_rng(1)
    written = [0]

    def drop(n: int, light: float = 1.0) -> None:
        for _ in range(n):
            image = np.clip(good_part(64, rng) * light, 0, 255).astype(np.uint8)
            cv2.imwrite(str(line / f"{written[0]:05d}.png"), image)
            written[0] += 1

    app = Appliance(settings, log=lambda _: None).start()
    try:
        (sid,) = app.pipeline.workers
        token = store.create_token(app.engine, name="eng", role="engineer")
        client, h = TestClient(create_app(app)), {"Authorization": f"Bearer {token}"}
        version = upload(client, h, bundle)
        body = {"reason": "commissioning", "source_id": sid}
        assert client.post(f"/models/{version}/promote", json=body, headers=h).status_code == 200
        drop(80 + 120)  # the reference, then three unchanged windows

        def scored() -> int:
            return app.pipeline.status()[sid]["scored"]

        assert wait_for(lambda: scored() >= written[0], timeout=60)
        (state,) = client.get("/drift", headers=h).json()
        assert state["state"] == "stable" and state["windows_tested"] == 3, state
        t1 = client.get("/thresholds", params={"source_id": sid}, headers=h).json()["t1"]
        assert state["score_below"] == pytest.approx(t1)  # T1 never moved: the cut is T1
        for step in range(1, 7):
            drop(20, light=0.93**step)
        assert wait_for(lambda: client.get("/drift", headers=h).json()[0]["state"] == "drifting", timeout=60)
        events = client.get("/drift/events", headers=h).json()
        assert [e["state"] for e in events] == ["drifting"]
        event = client.get(f"/drift/events/{events[0]['id']}", headers=h).json()
        drifted = {t["feature"] for t in event["tests"] if t["drifted"]}
        assert "brightness" in drifted
        assert len(event["before"]["brightness"]) == 80 and len(event["after"]["brightness"]) == 40
        assert max(event["before"]["score"] + event["after"]["score"]) <= event["score_below"] * 1.0001  # 5 digits kept
        # what a subscriber that connects now reads: the retained state
        assert wait_for(lambda: store.outbox_backlog(app.engine, topic_prefix=app.topics.own) == 0, timeout=20)
        out = subprocess.run(
            ["mosquitto_sub", "-p", str(broker.port), "-t", f"{app.topics.base}/events/drift/#", "-C", "1", "-W", "5"],
            capture_output=True,
            text=True,
            timeout=15,
        )
        retained = json.loads(out.stdout)
        assert retained["state"] == "drifting" and retained["source_id"] == sid and retained["event"] == events[0]["id"]
    finally:
        app.stop()
    # restarted: still drifting (nothing relearned under the dim light)
    app = Appliance(settings, log=lambda _: None).start()
    try:
        client = TestClient(create_app(app))
        (state,) = client.get("/drift", headers=h).json()
        assert state["state"] == "drifting" and state["reference_frames"] == 80
        # the engineer says the new light is normal: learning anew, announced stable, audited
        r = client.post(f"/drift/{quote(sid, safe='')}/reset", json={"reason": "new lamp fitted"}, headers=h)
        assert r.status_code == 200 and r.json()["state"] == "learning", r.text
        assert client.get("/drift/events", headers=h).json()[0]["state"] == "stable"
        audit = client.get("/audit", headers=h).json()
        assert any(a["action"] == "drift_reset" and a["reason"] == "new lamp fitted" for a in audit)
        assert client.post("/drift/nope/reset", json={"reason": "typo"}, headers=h).status_code == 404
    finally:
        app.stop()
