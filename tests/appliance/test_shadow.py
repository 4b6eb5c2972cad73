"""Shadow mode on the live line: a candidate scores every frame the source's model scores, raises
no alerts and publishes nothing; the comparison (agreement, rates per hour and shift, judged
alerts, disagreements with both heat maps) is read through the API, kept when the shadow is
promoted or stopped; retention ages its results out with their files."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

import numpy as np
import pytest
from sqlmodel import Session, select

from appliance.retention import retain
from appliance.storage import recipes as recipes_db
from appliance.storage.models import Alert, Inspection, OutboxMessage, ShadowResult, utcnow
from tests.helpers.appliance import running_appliance
from tests.helpers.waiting import wait_for

SOURCE = "synth:line?size=64&fps=40&defect_rate=0.3&seed=21"


@pytest.mark.parametrize("db_kind", ["sqlite", "postgresql"])
def test_a_candidate_in_shadow_is_compared_on_live_frames_then_promoted(tmp_path, db_kind):
    with running_appliance(tmp_path, db_kind, SOURCE, min_scored=10) as r:
        app, client, tokens, _, _ = r
        h = {"Authorization": f"Bearer {tokens['engineer']}"}
        active = app.recipes.get(SOURCE).version
        candidate = app.register(app.train_default())
        # the candidate, stricter than the model in charge: 60 % of the parts seen so far flagged
        with Session(app.engine) as session:
            scores = [i.score for i in session.exec(select(Inspection)).all()]
        t1, t2 = (float(q) for q in np.quantile(scores, [0.4, 0.7]))
        recipes_db.set_thresholds(
            app.engine, source_id=SOURCE, version=candidate, t1=t1, t2=t2, old=(t1, t2), actor="test",
            reason="a stricter candidate",
        )  # fmt: skip
        body = {"source_id": SOURCE, "reason": "prove it on the line"}
        assert client.post(f"/models/{active}/shadow", json=body, headers=h).status_code == 409  # judges already
        assert client.post("/models/nope/shadow", json=body, headers=h).status_code == 404
        r = client.post(f"/models/{candidate}/shadow", json=body, headers=h)
        assert r.status_code == 201, r.text
        assert r.json()["binding"]["state"] == "running"
        assert client.post(f"/models/{candidate}/shadow", json=body, headers=h).status_code == 409  # one per source
        assert wait_for(lambda: app.pipeline.status()[SOURCE]["shadow_version"] == candidate)

        def compared() -> dict:
            (c,) = client.get(f"/models/{candidate}/shadow", headers=h).json()
            return c

        assert wait_for(lambda: compared()["frames"] >= 150 and compared()["disagreements"], timeout=60)
        # an operator judges two of the model's alerts
        alerts = client.get("/alerts", headers=h).json()["data"]
        with Session(app.engine) as session:
            shadowed = {row.inspection_id for row in session.exec(select(ShadowResult)).all()}
        judged = [a for a in alerts if a["inspection_id"] in shadowed][:2]
        for alert, verdict in zip(judged, ("confirmed", "false_positive"), strict=False):
            assert (
                client.post(f"/alerts/{alert['id']}/verdict", json={"verdict": verdict}, headers=h).status_code == 200
            )
        c = compared()
        assert c["binding"]["source_id"] == SOURCE and c["binding"]["model_version"] == candidate
        assert sum(sum(row.values()) for row in c["confusion"].values()) == c["frames"]
        assert 0 < c["agreement"] < 1, c["confusion"]
        assert c["only_shadow_flagged"] > 0 and c["alert_rate"]["shadow"] > c["alert_rate"]["active"]
        assert sum(hour["frames"] for hour in c["hours"]) == c["frames"]
        assert sum(shift["frames"] for shift in c["shifts"]) == c["frames"]
        assert len(c["scores"]["active"]) == len(c["scores"]["shadow"]) == c["frames"]
        assert c["verdicts"]["confirmed"]["n"] + c["verdicts"]["false_positive"]["n"] == len(judged)
        item = c["disagreements"][0]
        assert item["decision"] != item["active_decision"]
        for key in ("image_url", "active_heatmap_url", "shadow_heatmap_url"):
            got = client.get(urlsplit(item[key]).path, headers=h)
            assert got.status_code == 200 and got.content[:4] == b"\x89PNG", (key, got.status_code)
        with Session(app.engine) as session:
            rows = session.exec(select(ShadowResult)).all()
            inspections = {i.id: i for i in session.exec(select(Inspection)).all()}
            # the shadow saw the frames the model saw, with the model's decision beside its own
            assert all(inspections[s.inspection_id].decision == s.active_decision for s in rows)
            assert all(s.active_version == active for s in rows)
            # and raised nothing, published nothing
            assert not session.exec(select(Alert).where(Alert.model_version == candidate)).all()
            assert not [m for m in session.exec(select(OutboxMessage)).all() if candidate in m.payload]
        # promoted from the comparison: it judges the source now, the comparison is kept
        r = client.post(f"/models/{candidate}/promote", json=body, headers=h)
        assert r.status_code == 200 and r.json()["model_version"] == candidate, r.text
        assert app.recipes.get(SOURCE).version == candidate and app.recipes.get(SOURCE).shadow is None
        (kept,) = client.get(f"/models/{candidate}/shadow", headers=h).json()
        assert kept["binding"]["state"] == "promoted" and kept["frames"] >= c["frames"]
        # the old model in shadow beside the new one, then stopped: kept as stopped
        assert client.post(f"/models/{active}/shadow", json=body, headers=h).status_code == 201
        r = client.post(f"/models/{active}/shadow/stop", json=body, headers=h)
        assert r.status_code == 200 and r.json()["binding"]["state"] == "stopped", r.text
        assert client.post(f"/models/{active}/shadow/stop", json=body, headers=h).status_code == 404
        audit = [a["action"] for a in client.get("/audit", headers=h).json()]
        assert audit.count("shadow_start") == 2 and audit.count("shadow_end") == 2
        # retention ages shadow results out with the raw window, with their heat maps
        heat = {s.heatmap_ref for s in rows if s.heatmap_ref}
        assert heat and all(app.images.path(ref).exists() for ref in heat)
        app.pipeline.stop()  # the line stopped: nothing is written into the days retention drops
        later = utcnow() + dt.timedelta(days=8)
        week, month = dt.timedelta(days=7), dt.timedelta(days=30)
        retain(app.engine, app.images, raw_window=week, max_age=month, max_bytes=10**12, now=later)
        with Session(app.engine) as session:
            assert not session.exec(select(ShadowResult).where(ShadowResult.t_capture < later)).all()
            # files are content-addressed: one the same as a kept alert's heat map stays with it
            kept_refs = {ref for i in session.exec(select(Inspection)).all() for ref in (i.image_ref, i.heatmap_ref)}
            kept_refs |= {s.heatmap_ref for s in session.exec(select(ShadowResult)).all()}
        assert all(app.images.path(ref).exists() == (ref in kept_refs) for ref in heat)
        assert heat - kept_refs, "no shadow heat map was deleted"
