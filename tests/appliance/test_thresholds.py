"""The threshold preview replays stored scores through the line's own decision, debounce included."""

from __future__ import annotations

import datetime as dt

from appliance.alerts.schema import Topics, alert_message
from appliance.images import ImageStore
from appliance.pipeline import Pipeline
from appliance.recipes import Recipes
from appliance.storage import store
from appliance.storage.db import init_db, make_engine
from appliance.storage.models import Inspection
from appliance.thresholds import preview
from models.decision import Thresholds

SCORES = [0.9, 0.1, 0.9, 0.9, 0.1, 0.6, 0.9, 0.95, 0.2, 0.9]


def stored(engine, scores, source="cam"):
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)
    topics = Topics()
    for i, score in enumerate(scores):
        inspection = Inspection(
            source_id=source,
            t_capture=start + dt.timedelta(seconds=i),
            score=score,
            norm_score=score,
            decision="ok",
            model_version="v",
            latency_ms=1.0,
        )
        store.record_inspection(
            engine,
            inspection=inspection,
            threshold=0.8,
            alert_topic=topics.alerts,
            build_message=lambda a, i: alert_message(a, i, topics, ""),
        )


def test_preview_counts_what_the_line_would_decide_with_and_without_debounce(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    init_db(engine)
    stored(engine, SCORES)
    candidate = Thresholds(0.5, 0.8)
    plain = preview(engine, thresholds=candidate, hours=1)
    assert plain["inspections"] == len(SCORES)
    ng = sum(s >= 0.8 for s in SCORES)
    assert round(plain["ng_per_hour"] * plain["hours"]) == ng
    # the pipeline's own debounce on the same sequence: what the line would have stored
    line = Pipeline(
        engine, Recipes(engine, tmp_path / "models"), Topics(), ImageStore(tmp_path / "img"), debounce=(2, 3)
    )
    raw = ["ng" if s >= 0.8 else "review" if s >= 0.5 else "ok" for s in SCORES]
    debounced = [line._debounced("cam", d) for d in raw]
    replay = preview(engine, thresholds=candidate, hours=1, debounce=(2, 3))
    assert round(replay["ng_per_hour"] * replay["hours"]) == debounced.count("ng") < ng
    assert round(replay["review_per_hour"] * replay["hours"]) == debounced.count("review")
    flagged = [round(r["alerts_per_hour"] * r["hours"]) for r in (plain, replay)]
    assert flagged[0] == flagged[1] == sum(s >= 0.5 for s in SCORES)  # debounce turns NG into review, not OK


def test_thresholds_an_engineer_sets_survive_a_restart_and_a_swap(tmp_path, broker):
    import json

    from fastapi.testclient import TestClient

    from appliance.api import create_app
    from appliance.runtime import Appliance
    from tests.helpers.appliance import appliance_settings
    from tests.helpers.broker import Subscriber
    from tests.helpers.waiting import wait_for

    settings = appliance_settings(tmp_path, broker.port, "synth:line?size=64&fps=5&seed=3", "thr")
    app = Appliance(settings, log=lambda line: None).start()
    retained = Subscriber(broker.port, [app.topics.threshold])
    try:
        token = store.create_token(app.engine, name="eng", role="engineer")
        client = TestClient(create_app(app))
        h = {"Authorization": f"Bearer {token}"}
        first = client.get("/thresholds", headers=h).json()
        body = {"t1": first["t1"] * 1.5, "t2": first["t2"] * 2, "reason": "commissioning"}
        assert client.put("/thresholds", json=body, headers=h).status_code == 200
        assert wait_for(lambda: any(json.loads(p)["t2"] == body["t2"] for p in retained.payloads("threshold")))
        announced = json.loads(retained.payloads("threshold")[-1])  # the newest retained: what the line uses
        assert announced["model_version"] == first["model_version"] and announced["t2"] == body["t2"]
    finally:
        app.stop()
        retained.close()
    again = Appliance(settings, log=lambda line: None).start()
    try:
        assert again.recipe_for(None).thresholds.as_tuple() == (body["t1"], body["t2"])  # not the bundle's calibration
        again.promote(first["model_version"], actor="test", reason="swap in again")
        assert again.recipe_for(None).thresholds.as_tuple() == (body["t1"], body["t2"])
    finally:
        again.stop()
