"""The REST API against a running appliance (real broker, SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers.broker import Subscriber
from tests.helpers.waiting import wait_for


def auth(tokens, role):
    return {"Authorization": f"Bearer {tokens[role]}"}


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def test_health_metrics_and_first_admin_token(running):
    app, client, tokens, _, tmp = running
    health = client.get("/health").json()
    assert health["status"] == "alive" and health["scored"] >= 60 and "synth" not in str(health)
    assert client.get("/health/ready").json() == {"status": "ready"}
    metrics = client.get("/metrics").text
    assert "appliance_frames_total" in metrics
    acknowledged = re.search(r'appliance_mqtt_messages_total\{answer="acknowledged"\} (\d+)', metrics)
    assert acknowledged and int(acknowledged.group(1)) > 0  # the status and source states at least
    assert 'appliance_mqtt_messages_total{answer="refused"} 0' in metrics
    token_file = tmp / "admin-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert (
        client.get("/sources", headers={"Authorization": f"Bearer {token_file.read_text().strip()}"}).status_code == 200
    )
    assert "/inspections" in client.get("/openapi.json").json()["paths"]
    settings = client.get("/settings", headers=auth(tokens, "engineer")).json()
    assert settings["mqtt"]["keepalive"] == app.broker_settings.keepalive == app.settings.mqtt.keepalive == 30
    parts = settings["retention"]["partitions"]  # PostgreSQL: today's and the next days' made at start
    if app.engine.dialect.name == "postgresql":
        today = dt.datetime.now(dt.UTC).date()
        assert parts["days"] >= 3 and parts["last_day"] >= (today + dt.timedelta(days=2)).isoformat()
        assert parts["detached"] == [] and parts["default_rows_estimate"] == 0
    else:
        assert parts is None


@pytest.mark.parametrize(
    "headers,status,message",
    [
        ({}, 401, "missing bearer token"),
        ({"Authorization": "Bearer nope"}, 401, "invalid or revoked token"),
        ({"Authorization": "Basic abc"}, 401, "missing bearer token"),
    ],
)
def test_bad_tokens_get_401(running, headers, status, message):
    _, client, _, _, _ = running
    response = client.get("/inspections", headers=headers)
    assert response.status_code == status and message in response.json()["detail"]


def test_roles_limit_what_a_token_may_do(running):
    _, client, tokens, _, _ = running
    body = {"t1": 0.5, "t2": 0.6, "reason": "test"}
    assert client.get("/thresholds", headers=auth(tokens, "viewer")).status_code == 200
    denied = client.put("/thresholds", json=body, headers=auth(tokens, "operator"))
    assert denied.status_code == 403 and "engineer role" in denied.json()["detail"]
    assert client.post("/sources", json={"url": "synth:line"}, headers=auth(tokens, "viewer")).status_code == 403


def test_inspect_an_image_and_bad_inputs_get_4xx(running):
    _, client, tokens, _, _ = running
    from connectors.synthetic import SyntheticLine

    image = SyntheticLine(size=64, seed=5).next().image
    ok = client.post(
        "/inspect", files={"file": ("part.png", png(image), "image/png")}, headers=auth(tokens, "operator")
    )
    assert ok.status_code == 200 and ok.json()["decision"] in ("ok", "review", "ng")
    corrupt = client.post(
        "/inspect", files={"file": ("x.png", b"\x89PNG broken", "image/png")}, headers=auth(tokens, "operator")
    )
    assert corrupt.status_code == 400 and "not a readable image" in corrupt.json()["detail"]
    rgba = np.dstack([image, image, image, np.full_like(image, 255)])  # converted, not refused
    converted = client.post(
        "/inspect", files={"file": ("x.png", png(rgba), "image/png")}, headers=auth(tokens, "operator")
    )
    assert converted.status_code == 200 and converted.json()["score"] == pytest.approx(ok.json()["score"], rel=1e-3)
    blank = client.post(  # no part in the frame: nothing local to find, unlike every good part
        "/inspect",
        files={"file": ("blank.png", png(np.full_like(image, 128)), "image/png")},
        headers=auth(tokens, "operator"),
    )
    assert blank.status_code == 200 and blank.json()["decision"] == "ng"
    assert blank.json()["label"] == "unlike the good parts"
    heights = cv2.imencode(".tiff", image.astype(np.float32) / 10)[1].tobytes()  # a 3-D sensor's frame
    other_kind = client.post(
        "/inspect", files={"file": ("h.tiff", heights, "image/tiff")}, headers=auth(tokens, "operator")
    )
    assert other_kind.status_code == 422 and "fitted on images of counts" in other_kind.json()["detail"]
    huge = client.post(
        "/inspect",
        files={"file": ("big.png", b"0" * (21 * 1024 * 1024), "image/png")},
        headers=auth(tokens, "operator"),
    )
    assert huge.status_code == 413
    vector = client.post("/inspect/vector", json={"values": [1.0, 2.0]}, headers=auth(tokens, "operator"))
    assert vector.status_code == 422
    nan = client.post(
        "/inspect/vector",
        content=b'{"values": [NaN]}',
        headers={**auth(tokens, "operator"), "Content-Type": "application/json"},
    )
    assert nan.status_code == 422
    beyond = client.post("/inspect/vector", json={"values": [1.0, 1e39]}, headers=auth(tokens, "operator"))
    assert beyond.status_code == 422 and beyond.json()["detail"][0]["loc"] == ["body", "values", 1]  # names the item


def test_inspections_filters_images_and_alert_workflow(running):
    app, client, tokens, _, _ = running
    headers = auth(tokens, "operator")
    page = client.get("/inspections", params={"limit": 5}, headers=headers).json()
    assert len(page["data"]) == 5 and page["count"] >= 60

    def first_flagged():
        for decision in ("ng", "review"):
            found = client.get("/inspections", params={"decision": decision, "limit": 1}, headers=headers).json()
            if found["data"]:
                return found["data"][0]
        return None

    # the two-epoch test model flags few parts (scores 0.50-0.59): the first may come after frame 60
    assert wait_for(lambda: first_flagged() is not None, timeout=30), "nothing flagged in 30 s (half are defective)"
    inspection = first_flagged()
    image = client.get(f"/inspections/{inspection['id']}/image", headers=headers)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert client.get(f"/inspections/{inspection['id']}/heatmap", headers=headers).status_code == 200
    assert client.get("/inspections/999999", headers=headers).status_code == 404
    alerts = client.get("/alerts", params={"state": "open"}, headers=headers).json()
    assert alerts["count"] >= 1
    alert_id = alerts["data"][0]["id"]
    acked = client.post(f"/alerts/{alert_id}/acknowledge", headers=headers).json()
    assert acked["state"] == "acknowledged" and acked["acknowledged_by"]
    verdict = client.post(f"/alerts/{alert_id}/verdict", json={"verdict": "confirmed"}, headers=headers).json()
    assert verdict["state"] == "confirmed"
    bad = client.post(f"/alerts/{alert_id}/verdict", json={"verdict": "maybe"}, headers=headers)
    assert bad.status_code == 422
    assert client.post("/alerts/999999/acknowledge", headers=headers).status_code == 404
    source = alerts["data"][0]["source_id"]
    every = client.get("/alerts", params={"limit": 1000}, headers=headers).json()
    for decision in ("ng", "review"):
        page = client.get(
            "/alerts", params={"source_id": [source, "no-such-source"], "decision": decision}, headers=headers
        ).json()
        mine = [a for a in every["data"] if a["source_id"] == source and a["decision"] == decision]
        assert page["count"] >= len(mine) and {a["decision"] for a in page["data"]} <= {decision}
        assert page["open"] >= sum(a["state"] == "open" for a in mine)  # the line goes on raising alerts
    assert every["open"] < every["count"]  # one confirmed above
    refused = client.get("/alerts", params={"decision": "ok"}, headers=headers)
    assert refused.status_code == 422 and "decision" in refused.text


def test_alerts_export_as_csv_every_match(running):
    """The console's export: every alert that matches, not a page of them, as a spreadsheet
    reads it (text that would start a formula stays text)."""
    import csv
    import io

    from tests.helpers.database import record

    app, client, tokens, _, _ = running
    items = ['=HYPERLINK("http://x")', *(f"part {i}" for i in range(59))]  # more than a page (50)
    for item in items:
        record(app.engine, "export-test", "ng", 0.9, app.topics, item=item, t1=0.3, t2=0.6)
    headers = auth(tokens, "viewer")
    answer = client.get("/alerts/export.csv", params={"source_id": "export-test"}, headers=headers)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert re.match(r'attachment; filename="alerts-\d{8}-\d{6}\.csv"', answer.headers["content-disposition"])
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [r["item"] for r in rows] == [*reversed(items[1:]), "'" + items[0]]  # newest first, all 60
    assert rows[0]["decision"] == "ng" and float(rows[0]["threshold"]) == 0.5 and rows[0]["state"] == "open"
    assert rows[0]["created_at"].endswith("+00:00")
    ng = client.get("/alerts/export.csv", params={"decision": "ng", "source_id": "export-test"}, headers=headers)
    assert ng.text == answer.text
    review = client.get(
        "/alerts/export.csv", params={"decision": "review", "source_id": "export-test"}, headers=headers
    )
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    after = client.get("/alerts/export.csv", params={"since": later}, headers=headers)
    header = answer.text.splitlines()[0]
    assert review.text.strip() == after.text.strip() == header == ",".join(rows[0])
    refused = client.get("/alerts/export.csv", params={"decision": "ok"}, headers=headers)
    assert refused.status_code == 422 and "decision" in refused.text
    assert client.get("/alerts/export.csv").status_code == 401


def test_a_query_parameter_a_route_does_not_read_is_refused_not_ignored(running):
    """PUT /thresholds takes its source in the body: ``?source_id=`` would have set the default
    model's thresholds for every source. Refused with 422 naming it, nothing changed."""
    app, client, tokens, _, _ = running
    before = app.recipe_for(None).thresholds.as_tuple()
    body = {"t1": before[0] * 1.1, "t2": before[1] * 1.2, "reason": "for one source only"}
    answer = client.put("/thresholds", params={"source_id": "cam-7"}, json=body, headers=auth(tokens, "engineer"))
    assert answer.status_code == 422
    (error,) = answer.json()["detail"]
    assert error["loc"] == ["query", "source_id"] and "JSON body" in error["msg"]
    assert app.recipe_for(None).thresholds.as_tuple() == before
    typo = client.get("/inspections", params={"limt": 5}, headers=auth(tokens, "viewer"))
    assert typo.status_code == 422 and "'limt'" in typo.json()["detail"][0]["msg"]
    assert "limit" in typo.json()["detail"][0]["msg"]  # what the route does take
    assert client.get("/inspections", params={"limit": 5}, headers=auth(tokens, "viewer")).status_code == 200
    assert client.get("/alerts", params={"decision": "ng"}, headers=auth(tokens, "viewer")).status_code == 200


@pytest.mark.parametrize(
    ("route", "field", "value"),
    [
        ("/inspections", "since", "9999-12-31T23:00:00-05:00"),  # in UTC: year 10000
        ("/alerts/export.csv", "until", "0001-01-01T00:30:00+01:00"),  # in UTC: year 0
    ],
)
def test_a_time_filter_that_has_no_utc_time_is_refused(running, route, field, value):
    """Found by the schema fuzzer: such a time failed the database's conversion (500)."""
    _, client, tokens, _, _ = running
    answer = client.get(route, params={field: value}, headers=auth(tokens, "viewer"))
    assert answer.status_code == 422
    (error,) = answer.json()["detail"]
    assert error["loc"] == ["query", field] and "outside the times that can be stored" in error["msg"]
    zoned = client.get(route, params={field: "2026-12-07T12:00:00+01:00"}, headers=auth(tokens, "viewer"))
    assert zoned.status_code == 200


def test_thresholds_set_audit_publish_and_preview(running):
    app, client, tokens, broker, _ = running
    sub = Subscriber(broker.port, [app.topics.threshold])
    try:
        current = client.get("/thresholds", headers=auth(tokens, "viewer")).json()
        new = {"t1": current["t1"] * 1.5, "t2": current["t2"] * 2, "reason": "fewer false alarms on night shift"}
        assert client.put("/thresholds", json=new, headers=auth(tokens, "engineer")).status_code == 200
        assert app.recipe_for(None).thresholds.as_tuple() == (new["t1"], new["t2"])
        audit = client.get("/audit", headers=auth(tokens, "engineer")).json()[0]
        assert audit["action"] == "set_thresholds" and audit["reason"] == new["reason"]
        scope = {"source_id": None, "model_version": current["model_version"]}
        assert audit["old"] == {"t1": current["t1"], "t2": current["t2"], **scope}
        assert audit["new"] == {"t1": new["t1"], "t2": new["t2"], **scope}
        import json

        def published_t2() -> float | None:  # the retained message of the old pair may come first
            payloads = sub.payloads("/config/threshold")
            return json.loads(payloads[-1])["t2"] if payloads else None

        assert wait_for(lambda: published_t2() == new["t2"]), published_t2()
        bad = client.put("/thresholds", json={"t1": 2, "t2": 1, "reason": "oops"}, headers=auth(tokens, "engineer"))
        assert bad.status_code == 422 and "must not exceed" in bad.json()["detail"]
        # the preview replays stored scores: compare with counting them here
        from sqlmodel import Session, select

        from appliance.storage.models import Inspection

        preview = client.post(
            "/thresholds/preview", json={"t1": 0.3, "t2": 0.6, "hours": 1}, headers=auth(tokens, "viewer")
        ).json()
        with Session(app.engine) as session:  # the scores of the line's model, as the preview replays them
            query = select(Inspection.score).where(Inspection.model_version == current["model_version"])
            scores = np.array(session.exec(query).all())
        assert preview["inspections"] == len(scores) or preview["inspections"] <= len(scores)
        ng = int((scores >= 0.6).sum())
        assert preview["ng_per_hour"] * preview["hours"] == pytest.approx(ng, abs=2)
        # the hourly history counts the same rows (the newest, not rolled up yet, as incomplete hours)
        asked = dt.datetime.now(dt.UTC)
        hourly = client.get("/inspections/hourly", params={"hours": 2}, headers=auth(tokens, "viewer")).json()
        answered = dt.datetime.now(dt.UTC)
        assert sum(h["inspections"] for h in hourly) >= len(scores)
        with Session(app.engine) as session:
            sources = set(session.exec(select(Inspection.source_id).distinct()).all())
        assert {h["source_id"] for h in hourly} == sources
        # an hour is complete once it has ended (a run across the hour's turn has one of each)
        for h in hourly:
            end = dt.datetime.fromisoformat(h["hour"]).replace(tzinfo=dt.UTC) + dt.timedelta(hours=1)
            assert (end <= answered) if h["complete"] else (end > asked), h
        assert not hourly[-1]["complete"]
    finally:
        sub.close()


def test_sources_can_be_added_and_removed(running):
    _, client, tokens, _, _ = running
    headers = auth(tokens, "engineer")
    added = client.post("/sources", json={"url": "synth:line?size=64&fps=5", "source_id": "extra"}, headers=headers)
    assert added.status_code == 201 and added.json()["source_id"] == "extra"
    assert "extra" in client.get("/sources", headers=headers).json()
    bad = client.post("/sources", json={"url": "synth:line?speed=2"}, headers=headers)
    assert bad.status_code == 400 and "unknown option 'speed'" in bad.json()["detail"]
    assert client.delete("/sources/extra", headers=headers).status_code == 204
    assert client.delete("/sources/extra", headers=headers).status_code == 404


def test_model_registry_upload_promote_rollback_download(running, tmp_path):
    app, client, tokens, _, _ = running
    from models import bundle as bundle_io

    headers = auth(tokens, "engineer")
    models = client.get("/models", headers=headers).json()
    active = [m for m in models if m["status"] == "active"]
    assert len(active) == 1 and active[0]["metrics"]["calibration"]["t2"] > 0
    original = active[0]["version"]
    # a second version of the same network: a bundle whose thresholds and version differ
    bundle = bundle_io.load(app.models_dir / active[0]["filename"])
    bundle.meta["version"] = f"v-{uuid.uuid4().hex[:6]}"
    bundle.meta["postprocess"]["calibration"]["t2"] *= 1.1
    candidate_file = tmp_path / "candidate.zip"
    bundle.save(candidate_file)
    uploaded = client.post(
        "/models", files={"file": ("c.zip", candidate_file.read_bytes(), "application/zip")}, headers=headers
    )
    assert uploaded.status_code == 201 and uploaded.json()["status"] == "candidate"
    version = uploaded.json()["version"]
    promoted = client.post(
        f"/models/{version}/promote", json={"reason": "retrained on new normal data"}, headers=headers
    )
    assert promoted.status_code == 200 and app.recipe_for(None).version == version
    assert wait_for(
        lambda: (
            client.get("/inspections", params={"limit": 1}, headers=headers).json()["data"][0]["model_version"]
            == version
        )
    )
    statuses = {m["version"]: m["status"] for m in client.get("/models", headers=headers).json()}
    assert statuses[version] == "active" and statuses[original] == "retired"
    rolled = client.post("/models/rollback", json={"reason": "too many false alarms"}, headers=headers)
    assert rolled.status_code == 200 and rolled.json()["model_version"] == original
    assert app.recipe_for(None).version == original
    audit = client.get("/audit", headers=headers).json()
    assert [a["action"] for a in audit[:2]] == ["activate_model", "activate_model"]
    download = client.get(f"/models/{version}/download", headers=headers)
    assert download.status_code == 200 and download.content[:2] == b"PK"
    onnx_bytes = client.get(f"/models/{version}/onnx", headers=headers)
    assert onnx_bytes.status_code == 200 and len(onnx_bytes.content) > 1000


def test_bad_model_uploads_and_promotions(running, tmp_path):
    app, client, tokens, _, _ = running
    headers = auth(tokens, "engineer")
    corrupt = client.post(
        "/models", files={"file": ("x.zip", b"PK\x03\x04 not really", "application/zip")}, headers=headers
    )
    assert corrupt.status_code == 422 and "not a model bundle" in corrupt.json()["detail"]
    assert client.post("/models/nope/promote", json={"reason": "test"}, headers=headers).status_code == 404
    assert client.get("/models/nope/download", headers=headers).status_code == 404
    denied = client.post("/models/x/promote", json={"reason": "test"}, headers=auth(tokens, "operator"))
    assert denied.status_code == 403
    assert not list(app.models_dir.glob("upload-*"))  # nothing left behind by refused uploads


def test_plc_trigger_handshake_over_mqtt_and_rest(running):
    import json

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    app, client, tokens, broker, _ = running
    source = app.settings.sources[0]
    sub = Subscriber(broker.port, [f"{app.topics.base}/trigger/response"])
    plc = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    plc.connect("127.0.0.1", broker.port)
    plc.loop_start()
    try:
        plc.publish(app.topics.trigger, json.dumps({"request_id": "r-1", "source_id": source}), qos=1)
        assert wait_for(lambda: len(sub.payloads("/trigger/response")) >= 2)
        replies = [json.loads(p) for p in sub.payloads("/trigger/response")]
        assert replies[0] == {"request_id": "r-1", "state": "ready"}
        assert replies[1]["state"] == "result" and replies[1]["decision"] in ("ok", "review", "ng")
        assert (
            client.get(f"/inspections/{replies[1]['inspection_id']}", headers=auth(tokens, "viewer")).status_code == 200
        )
        plc.publish(f"{app.topics.trigger}/ack", json.dumps({"request_id": "r-1"}), qos=1)
        assert wait_for(lambda: "r-1" in app.trigger.acks)
        plc.publish(app.topics.trigger, json.dumps({"request_id": "r-2", "source_id": "nope"}), qos=1)
        plc.publish(app.topics.trigger, b"not json", qos=1)
        assert wait_for(lambda: sum('"error"' in p.decode() for p in sub.payloads("/trigger/response")) >= 2)
    finally:
        plc.loop_stop()
        sub.close()
    from urllib.parse import quote

    rest = client.post(f"/sources/{quote(source, safe='')}/trigger", headers=auth(tokens, "operator"))
    assert rest.status_code == 200 and rest.json()["decision"] in ("ok", "review", "ng")
    assert client.post("/sources/nope/trigger", headers=auth(tokens, "operator")).status_code == 404


def wait_job(client, tokens, job_id, timeout=180):
    import time

    headers = auth(tokens, "viewer")
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.get(f"/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.3)
    msg = f"job {job_id} did not finish: {job}"
    raise AssertionError(msg)


def zip_of_frames(n: int, seed: int = 21) -> bytes:
    import io
    import zipfile

    from connectors.synthetic import SyntheticLine

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, part in enumerate(SyntheticLine(size=64, defect_rate=0.0, seed=seed).take(n)):
            zf.writestr(f"frames/{i:03d}.png", png(part.image))
    return buf.getvalue()


def upload_frames(client, headers: dict, prefix: str, n: int) -> str:
    """A dataset of ``n`` good synthetic parts uploaded as a zip; its name."""
    name = f"{prefix}-{uuid.uuid4().hex[:4]}"
    uploaded = client.post(
        "/datasets/upload",
        params={"name": name},
        files={"file": ("normal.zip", zip_of_frames(n), "application/zip")},
        headers=headers,
    )
    assert uploaded.status_code == 201 and uploaded.json()["images"] == n, uploaded.text
    return name


def retrain_on(client, headers: dict, dataset: str, epochs: int):
    """Start a retraining on that dataset alone."""
    return client.post(
        "/jobs/retrain",
        json={"epochs": epochs, "include_ok": False, "include_false_positives": False, "datasets": [dataset]},
        headers=headers,
    )


def test_retraining_job_yields_a_compared_candidate(running):
    app, client, tokens, _, _ = running
    headers = auth(tokens, "engineer")
    name = upload_frames(client, headers, "night", 60)
    assert any(d["name"] == name for d in client.get("/datasets", headers=headers).json())
    started = retrain_on(client, headers, name, epochs=2)
    assert started.status_code == 202 and started.json()["status"] in ("queued", "running")
    job = wait_job(client, tokens, started.json()["id"])
    assert job["status"] == "succeeded", client.get(f"/jobs/{job['id']}/log", headers=headers).text
    result = job["result"]
    assert {"active", "candidate"} <= set(result["comparison"]) and result["normal_images"] == 60
    assert result["comparison"]["candidate"]["false_alarm_rate"] is not None
    models = {m["version"]: m for m in client.get("/models", headers=headers).json()}
    assert models[result["candidate_version"]]["status"] == "candidate"
    log = client.get(f"/jobs/{job['id']}/log", headers=headers).text
    assert "epoch 2/2" in log
    assert "retrain job started (niceness 10, 1 BLAS thread: a line is inspecting)" in log  # the line's share
    assert result["review_band_images"] == {"calibrated_on": 0, "compared_on": 0}  # no recent OK items asked for


def test_a_retraining_that_cannot_have_enough_images_is_refused_before_it_is_queued(running):
    _, client, tokens, _, _ = running
    headers = auth(tokens, "engineer")
    jobs = len(client.get("/jobs", headers=headers).json())
    refused = client.post(
        "/jobs/retrain", json={"epochs": 1, "max_images": 10, "include_false_positives": False}, headers=headers
    )
    assert refused.status_code == 422, refused.text
    assert re.fullmatch(
        r"only \d+ new normal images; retraining needs at least 40: the line keeps [\d.]+ % of its OK images "
        r"\(keep_ok_images\); wait for more, mark false positives as such, or upload a dataset of normal images",
        refused.json()["detail"],
    ), refused.json()["detail"]
    assert len(client.get("/jobs", headers=headers).json()) == jobs  # nothing queued


def test_a_job_refused_for_its_input_says_why_in_its_message_and_keeps_the_traceback_in_its_log(running):
    import shutil

    from appliance.datasets.library import dataset_dir

    app, client, tokens, _, _ = running
    headers = auth(tokens, "engineer")
    name = upload_frames(client, headers, "gone", 45)
    started = retrain_on(client, headers, name, epochs=1)
    assert started.status_code == 202, started.text
    shutil.rmtree(dataset_dir(app.data, name))  # its images gone from the disk before the worker reads them
    job = wait_job(client, tokens, started.json()["id"])
    assert job["status"] == "failed"  # the console shows this sentence
    gone = f"{dataset_dir(app.data, name, must_exist=False)} is not a folder"  # or, read first, none decodes:
    assert job["message"] in (gone, "only 0 of 45 new normal images can be read; retraining needs 40"), job["message"]
    log = client.get(f"/jobs/{job['id']}/log", headers=headers).text
    assert "Traceback (most recent call last)" in log and log.rstrip().endswith(job["message"])


def unjudged_review_items(engine, what) -> list:
    """``what`` of the stored review items whose alerts nobody judged yet."""
    from sqlmodel import Session, col, select

    from appliance.storage.models import Alert, Inspection

    with Session(engine) as session:
        return session.exec(
            select(what)
            .select_from(Inspection)
            .join(Alert, Alert.inspection_id == Inspection.id)
            .where(Inspection.decision == "review", col(Alert.state).in_(("open", "acknowledged")))
        ).all()


def test_the_review_band_is_calibrated_on_never_trained_on_in_retraining_and_in_collected_datasets(tmp_path):
    """The OK items are the good parts below the active T1. A dataset collected from recent OK
    items takes the unjudged review items of the same span into its ``calibrate`` folder; teaching
    from it and retraining on it calibrate (and test) on them and never train on them. Retraining
    on recent OK items takes them too, in the share the line keeps OK images (here all)."""
    import csv
    import time

    from sqlmodel import func

    from appliance.storage.models import Inspection
    from tests.helpers.appliance import SMALL, running_appliance

    source = "synth:line?size=64&fps=50&defect_rate=0.1&seed=6"
    wide_band = {**SMALL, "false_alarm_rate": 0.03}  # T1 at 30 %: a review band the small model surely fills
    with running_appliance(tmp_path, "sqlite", source, min_scored=300, keep_ok_images=1.0, detector=wide_band) as (
        app,
        client,
        tokens,
        *_,
    ):
        headers = auth(tokens, "engineer")
        made = client.post(
            "/datasets", json={"name": "recent", "include_false_positives": False}, headers=headers
        )  # every OK image so far (up to 1,000), and the review items of the same span
        assert made.status_code == 201, made.text
        collected, band = made.json()["images"], made.json()["calibrate_only"]
        assert collected >= 150 and band >= 10
        folder = app.data / "datasets" / "recent"
        with (folder / "calibration.csv").open() as f:
            listed = [row[0] for row in csv.reader(f)][1:]
        assert len(listed) == made.json()["calibrate_only"] and all(r.startswith("calibrate/") for r in listed)
        refs = unjudged_review_items(app.engine, Inspection.image_ref)  # each one an unjudged review item's image
        assert {Path(r).stem for r in listed} <= {Path(r).stem for r in refs if r}

        taught = client.post(
            "/jobs/teach",
            json={"source_id": source, "source": "dataset", "dataset": "recent", "size": 64, "method": "autoencoder"}
            | {"epochs": 2},
            headers=headers,
        )
        assert taught.status_code == 202, taught.text
        job = wait_job(client, tokens, taught.json()["id"])
        assert job["status"] == "succeeded", client.get(f"/jobs/{job['id']}/log", headers=headers).text
        result = job["result"]
        used = result["calibrate_only_images"]
        assert used["calibrated_on"] > 0 and used["tested_on"] > 0 and sum(used.values()) < band
        held = result["report"]["good_images"] - used["tested_on"]
        assert result["train_images"] + held + result["twins_set_aside"] == collected  # the band is never trained on
        metrics = {m["version"]: m for m in client.get("/models", headers=headers).json()}[result["candidate_version"]][
            "metrics"
        ]
        assert metrics["calibration"]["n"] > used["calibrated_on"]
        assert "to calibrate on only" in client.get(f"/jobs/{job['id']}/log", headers=headers).text

        app.pipeline.remove_source(source)  # what the jobs read stays put
        # one of the dataset's review items is judged a defect after the collection: never calibrated on again
        from sqlmodel import Session, select

        from appliance.storage.models import Alert

        with Session(app.engine) as session:
            judged = next(
                a.id
                for a, i in session.exec(select(Alert, Inspection).where(Alert.inspection_id == Inspection.id))
                if i.image_ref and Path(i.image_ref).stem == Path(listed[0]).stem
            )
        verdict = client.post(f"/alerts/{judged}/verdict", json={"verdict": "confirmed"}, headers=headers)
        assert verdict.status_code == 200, verdict.text

        # retraining on recent OK items: the review band joins the calibration and the comparison
        def review_items() -> int:
            return unjudged_review_items(app.engine, func.count())[0]

        previous, stored = -1, review_items()
        while stored != previous:  # the inspector stores what it holds (slower on a loaded machine)
            time.sleep(1.0)
            previous, stored = stored, review_items()
        body = {"epochs": 1, "include_false_positives": False, "max_images": 200}
        started = client.post("/jobs/retrain", json=body, headers=headers)
        job = wait_job(client, tokens, started.json()["id"])
        assert job["status"] == "succeeded", client.get(f"/jobs/{job['id']}/log", headers=headers).text
        used = job["result"]["review_band_images"]
        compared, calibrated = used["compared_on"], used["calibrated_on"]
        # the band is split as the OK images are: a fifth compared on, a fifth of the rest calibrated on
        assert 0 < calibrated < stored and compared + calibrated < stored
        log = client.get(f"/jobs/{job['id']}/log", headers=headers).text
        said = re.search(r"calibrating on (\d+) and comparing on (\d+) of (\d+) images to calibrate on only", log)
        # of the review items as far back as the newest 200 OK images go
        assert said and (int(said[1]), int(said[2])) == (calibrated, compared) and int(said[3]) <= stored
        comparison = job["result"]["comparison"]
        metrics = {m["version"]: m for m in client.get("/models", headers=headers).json()}[
            job["result"]["candidate_version"]
        ]["metrics"]
        assert metrics["calibration"]["n"] > calibrated and comparison["held_out_normal_images"] > compared

        # retraining on the dataset: its calibrate folder, never trained on
        retrained = client.post(
            "/jobs/retrain",
            json={"epochs": 1, "include_ok": False, "include_false_positives": False, "datasets": ["recent"]},
            headers=headers,
        )
        job = wait_job(client, tokens, retrained.json()["id"])
        assert job["status"] == "succeeded", client.get(f"/jobs/{job['id']}/log", headers=headers).text
        assert job["result"]["normal_images"] == collected
        assert job["result"]["review_band_images"]["calibrated_on"] > 0
        log = client.get(f"/jobs/{job['id']}/log", headers=headers).text
        assert f"of {band - 1} images to calibrate on only" in log  # the one judged a defect left out

        # nothing to collect: refused, the dataset of that name kept as it was
        empty = {"name": "recent", "include_ok": False, "include_false_positives": False}
        refused = client.post("/datasets", json=empty, headers=headers)
        assert refused.status_code == 422 and "no stored items to collect" in refused.json()["detail"]
        assert len(list((folder / "images").iterdir())) == collected
        # collected again: replaced, nothing of the old one left (its items may have been judged since)
        again = client.post("/datasets", json={"name": "recent", "limit": 30}, headers=headers)
        assert again.status_code == 201 and again.json()["images"] == 30
        assert len(list((folder / "images").iterdir())) == 30
        assert len(list((folder / "calibrate").glob("*"))) == again.json()["calibrate_only"] < band
        (listed,) = [d for d in client.get("/datasets", headers=headers).json() if d["name"] == "recent"]
        assert listed == again.json()
        # an uploaded dataset is never overwritten by a collection of the same name
        mine = {"file": ("n.zip", zip_of_frames(30), "application/zip")}
        assert client.post("/datasets/upload", params={"name": "mine"}, files=mine, headers=headers).status_code == 201
        clash = client.post("/datasets", json={"name": "mine"}, headers=headers)
        assert clash.status_code == 409 and "was not collected from stored items" in clash.json()["detail"]
        assert len(list((app.data / "datasets" / "mine" / "images").iterdir())) == 30


def test_jobs_can_be_cancelled_and_bad_requests_are_refused(running):
    app, client, tokens, _, _ = running
    headers = auth(tokens, "engineer")
    name = f"big-{uuid.uuid4().hex[:4]}"
    client.post(
        "/datasets/upload",
        params={"name": name},
        files={"file": ("n.zip", zip_of_frames(60, seed=22), "application/zip")},
        headers=headers,
    )
    started = client.post(
        "/jobs/retrain", json={"epochs": 400, "include_ok": False, "datasets": [name]}, headers=headers
    ).json()
    assert client.post(f"/jobs/{started['id']}/cancel", headers=headers).json()["cancel_requested"] is True
    assert wait_job(client, tokens, started["id"])["status"] == "cancelled"
    assert client.post("/jobs/retrain", json={"datasets": ["nope"]}, headers=headers).status_code == 404
    assert client.post("/jobs/retrain", json={"datasets": ["../etc"]}, headers=headers).status_code == 422
    import io
    import zipfile

    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.png", png(np.zeros((8, 8), np.uint8)))
    escaped = client.post(
        "/datasets/upload",
        params={"name": "evil"},
        files={"file": ("e.zip", evil.getvalue(), "application/zip")},
        headers=headers,
    )
    assert escaped.status_code == 422 and "leave the dataset folder" in escaped.json()["detail"]
    not_zip = client.post(
        "/datasets/upload", params={"name": "x"}, files={"file": ("x.zip", b"plain", "text/plain")}, headers=headers
    )
    assert not_zip.status_code == 422
    assert client.get("/jobs/999999", headers=headers).status_code == 404


def test_project_job_runs_a_project_file(running):
    app, client, tokens, _, tmp = running
    from appliance.datasets import create_sample

    projects = app.data / "projects"
    create_sample("iris", projects / "iris")
    (projects / "iris.yaml").write_text(
        "network: {zoo: mlp, options: {hidden: [16]}}\ndataset: {training: iris/training.csv, "
        "validation: iris/validation.csv}\nconfig: {max_epoch: 30, batch_size: 16, solver: {type: Adam, lr: 0.01}}\n"
    )
    started = client.post("/jobs/project", json={"project": "iris.yaml"}, headers=auth(tokens, "engineer")).json()
    job = wait_job(client, tokens, started["id"])
    assert job["status"] == "succeeded" and job["result"]["final"]["valid_accuracy"] > 0.8
    # issue 14: a job for a project that is not there is refused at once, not accepted to fail later
    bad = client.post("/jobs/project", json={"project": "../../etc/passwd"}, headers=auth(tokens, "engineer"))
    assert bad.status_code == 404 and "no project file" in bad.json()["detail"]


def test_a_classifier_bundle_cannot_run_the_line(running, tmp_path):
    app, client, tokens, _, _ = running
    from models import bundle as bundle_io
    from models.preprocess import InputSpec
    from models.spec import build
    from models.zoo import get_spec

    net = build(get_spec("logistic_regression", [1, 64, 64]))
    path = tmp_path / "clf.zip"
    bundle_io.bundle_from_network(net, "classifier", InputSpec(size=(64, 64)).to_dict(), name="clf").save(path)
    headers = auth(tokens, "engineer")
    version = client.post(
        "/models", files={"file": ("clf.zip", path.read_bytes(), "application/zip")}, headers=headers
    ).json()["version"]
    refused = client.post(f"/models/{version}/promote", json={"reason": "test"}, headers=headers)
    assert refused.status_code == 422 and "anomaly models" in refused.json()["detail"]
    assert app.recipe_for(None).model.kind in ("detector", "autoencoder")


def test_nul_characters_are_refused_by_name(running):
    """PostgreSQL text cannot hold NUL: a query or JSON body with one is a 422 naming it, never a 500."""
    app, client, tokens, _, tmp = running
    got = client.get("/inspections", params={"source_id": "\x00"}, headers=auth(tokens, "viewer"))
    assert got.status_code == 422 and "NUL characters" in got.json()["detail"]
    body = {"t1": 0.1, "t2": 0.2, "reason": "bad\u0000reason"}
    got = client.put("/thresholds", json=body, headers=auth(tokens, "engineer"))
    assert got.status_code == 422 and "JSON bodies" in got.json()["detail"]
    assert (
        client.post("/tokens", json={"name": "ok name", "role": "viewer"}, headers=auth(tokens, "admin")).status_code
        == 201
    )
