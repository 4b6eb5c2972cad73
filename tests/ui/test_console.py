"""Every console page through Streamlit's AppTest, against the real appliance API of the fixture
(no patched client): what operators and engineers click, and what the API then holds."""

from __future__ import annotations

import io
import json
import signal
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from sklearn.datasets import load_digits

from connectors.synthetic import SyntheticLine
from tests.helpers.console import page_path

APP = str(Path(__file__).resolve().parents[2] / "ui" / "app.py")
PAGES = {
    "live": "Live",
    "alerts": "Alerts",
    "thresholds": "Threshold tuning",
    "drift": "Drift watch",
    "models": "Models",
    "shadow": "Shadow mode",
}
ENGINEER_PAGES = {"retrain": "Retrain", "train": "Train & evaluate", "settings": "Settings"}


def title(at) -> str:
    return at.title[0].value if at.title else ""


def metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def chart_tooltips(at) -> list[tuple[str, set[str]]]:
    """Every tooltip field of the page's charts with the columns of that chart's data: a tooltip
    naming a column its chart does not have shows nothing (Vega does not complain)."""
    import pyarrow as pa

    out = []
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        columns = set()
        for table in [chart.proto.data, *(d.data for d in chart.proto.datasets)]:
            if table.data:
                columns |= set(pa.ipc.open_stream(table.data).schema.names)
        for part in spec.get("layer", [spec]):
            tips = part.get("encoding", {}).get("tooltip", [])
            for tip in [tips] if isinstance(tips, dict) else tips:  # Altair writes each as a field definition
                if "field" in tip:
                    out.append((tip["field"], columns))
    return out


def wait_job(api, job_id: int, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = api.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.5)


def test_sign_in_refuses_a_bad_token_then_accepts_a_good_one(appliance, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.delenv("APPLIANCE_TOKEN", raising=False)
    monkeypatch.setenv("APPLIANCE_API_URL", appliance.url)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert title(at) == "Anomaly appliance console"
    at.text_input[1].input("not-a-token")
    at.button[0].click().run()
    assert "invalid or revoked token" in at.error[0].value
    at.text_input[1].input(appliance.tokens["operator"])
    at.button[0].click().run()
    assert title(at) == "Live" and not at.exception


@pytest.mark.parametrize("page", sorted(PAGES | ENGINEER_PAGES))
def test_every_page_renders_for_an_engineer(console, page):
    at = console("engineer", page)
    assert title(at) == (PAGES | ENGINEER_PAGES)[page]
    assert not at.error, [e.value for e in at.error]
    for field, columns in chart_tooltips(at):
        assert field in columns, (field, columns)


def test_live_shows_the_frame_score_decision_and_state(console, appliance):
    at = console("operator")
    assert title(at) == "Live"
    assert at.subheader[0].value == appliance.source_id
    assert metric(at, "State") == "online"
    with appliance.api() as api:
        latest = api.get("/inspections", params={"limit": 1}).json()["data"][0]
    assert metric(at, "Score") == f"{latest['score']:.4g}"  # the folder is done: the newest stays the newest
    from streamlit.proto.Metric_pb2 import Metric

    score = next(m for m in at.metric if m.label == "Score").proto  # below T2 is good news: green, above red
    assert score.delta.endswith("vs T2")
    assert score.color == (Metric.GREEN if latest["score"] < latest["t2"] else Metric.RED)
    assert at.get("image"), "no frame shown"
    assert any(b.label == "Capture now" for b in at.button)
    (chart,) = at.get("vega_lite_chart")  # times as the caption and the API give them: UTC, 24-hour clock
    encoding = json.loads(chart.proto.spec)["layer"][0]["encoding"]
    time_axis = encoding["x"]
    assert time_axis["scale"]["type"] == "utc" and time_axis["axis"]["format"] == "%H:%M:%S"
    assert time_axis["title"] == "captured (UTC)"
    # the tooltip has no scale: its time is UTC through a UTC time unit, formatted as the axis
    tip = encoding["tooltip"][0]
    assert tip["timeUnit"].startswith("utc") and tip["format"] == "%H:%M:%S" and tip["title"] == "captured (UTC)"


def test_live_reports_the_frame_it_shows_not_a_newer_or_older_row(console, appliance):
    """The frame and the list of inspections are read separately; the panel's decision, score and
    caption describe the frame on screen."""
    import dataclasses

    pipeline = appliance.app.pipeline
    image, anomaly_map, stored = pipeline.latest[appliance.source_id]
    judged = dataclasses.replace(stored) if dataclasses.is_dataclass(stored) else stored.model_copy()
    judged.score, judged.norm_score, judged.decision = 12.5, 0.97, "ng"  # no stored row says this
    judged.label = "Kratzer über 2 mm"  # a defect type in the user's words
    pipeline.latest[appliance.source_id] = (image, anomaly_map, judged)
    try:
        at = console("operator")
    finally:
        pipeline.latest[appliance.source_id] = (image, anomaly_map, stored)
    assert metric(at, "Score") == "12.5"
    assert any("NG · score 12.5" in str(element.proto) for element in at.get("image"))
    assert any("normalised score 0.97" in p.proto.text for p in at.get("progress"))
    assert metric(at, "Label") == "Kratzer über 2 mm"


def test_drift_watch_shows_a_drifting_source_its_histograms_and_resets_it(console, appliance):
    """The watch learned the folder's first parts; the light then halves for one window (frames
    given to the running watch as the inspector gives them): the page says drifting, shows the
    before / after histograms, and an engineer's reset (with a reason) is audited."""
    import datetime as dt

    from appliance.storage.models import Inspection

    app = appliance.app
    version = app.recipes.get(appliance.source_id).version
    with appliance.api() as api:
        assert api.get("/drift").json()[0]["state"] == "stable"
    parts = sorted((Path(app.settings.data_dir).parent / "parts").glob("*.png"))[:20]
    for path in parts:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) // 2
        inspection = Inspection(
            source_id=appliance.source_id, t_capture=dt.datetime.now(dt.UTC), score=0.0, norm_score=0.0,
            decision="ng", model_version=version, latency_ms=1.0,
        )  # fmt: skip
        app.pipeline.drift.observe(image, inspection)
    at = console("engineer", "drift")
    assert "drifting" in at.dataframe[0].value["state"].iloc[0]
    assert any("drifting" in w.value and "brightness" in w.value for w in at.warning)
    assert len(at.get("vega_lite_chart")) >= 3  # brightness, contrast, sharpness (no OK scores in the window)
    at.text_input(key=f"drift_reason_{appliance.source_id}").input("lamp replaced on purpose").run()
    at.button(key=f"drift_reset_{appliance.source_id}").click().run()
    assert not at.exception
    with appliance.api() as api:
        assert api.get("/drift").json()[0]["state"] == "learning"
        audit = api.get("/audit").json()
    assert any(a["action"] == "drift_reset" and a["reason"] == "lamp replaced on purpose" for a in audit)


def test_a_candidate_is_put_in_shadow_and_stopped_from_the_console(console, appliance):
    """The engineer picks the registered candidate and the source, starts a shadow with a reason
    (the API then has it running and the source scores with it), then stops it (kept as stopped)."""
    candidate = appliance.versions[1]
    at = console("engineer", "shadow")
    at.selectbox(key="shadow_version").select(candidate).run()
    at.selectbox(key="shadow_source").select(appliance.source_id).run()
    at.text_input(key="shadow_reason").input("try the candidate on the line").run()
    at.button(key="shadow_start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    with appliance.api() as api:
        (running,) = api.get(f"/models/{candidate}/shadow").json()
        assert running["binding"]["state"] == "running" and running["binding"]["source_id"] == appliance.source_id
        assert api.get("/sources").json()[appliance.source_id]["shadow_version"] == candidate
    assert any(m.label == "Decisions agree" for m in at.metric)
    key = running["binding"]["id"]
    at.text_input(key=f"shadow_end_reason_{key}").input("seen enough").run()
    at.button(key=f"shadow_stop_{key}").click().run()
    assert not at.exception
    with appliance.api() as api:
        assert api.get(f"/models/{candidate}/shadow").json()[0]["binding"]["state"] == "stopped"
        assert api.get("/sources").json()[appliance.source_id]["shadow_version"] is None


def test_threshold_preview_matches_the_api(console, appliance):
    at = console("engineer", "thresholds")
    with appliance.api("viewer") as api:
        scores = api.get("/thresholds/scores").json()
        low, high = np.quantile(scores["normal"], [0.5, 0.9])
        at.number_input(key="thr_t2").set_value(float(high)).run()
        at.number_input(key="thr_t1").set_value(float(low)).run()
        t1, t2 = at.number_input(key="thr_t1").value, at.number_input(key="thr_t2").value
        assert (t1, t2) == (float(low), float(high))  # exactly what was entered, no grid
        expected = api.post("/thresholds/preview", json={"t1": t1, "t2": t2, "hours": 24}).json()
    assert (
        metric(at, "Confirmed defects missed")
        == f"{expected['missed_confirmed_defects']} of {expected['confirmed_defects']}"
    )
    assert any(f"replayed over {expected['inspections']:,} inspections" in c.value for c in at.caption)
    # rates divide by the appliance's age, which grows between the two reads: equal to 1 %
    for label, key in (("Alerts per hour", "alerts_per_hour"), ("NG per hour", "ng_per_hour")):
        assert float(metric(at, label).replace(",", "")) == pytest.approx(expected[key], rel=0.01)
    at.button(key="thr_p_rate").click().run()  # the false-alarm preset moves the candidate to the API's values
    preset = scores["presets"]["false_alarm_rate"]
    n = len(scores["normal"]) + len(scores["flagged"])  # every item not confirmed as a defect
    assert preset["n"] == n and preset["unjudged"] == len(scores["flagged"])  # what the preset rests on, said
    assert any(f"preset on {n:,} scores" in c.value for c in at.caption)
    assert any(f"rest on {scores['calibrated_on']} good items" in c.value for c in at.caption)
    chosen = (at.number_input(key="thr_t1").value, at.number_input(key="thr_t2").value)
    assert chosen == pytest.approx((preset["t1"], preset["t2"]), rel=1e-9)


def test_applying_thresholds_is_audited_with_the_reason(console, appliance):
    at = console("engineer", "thresholds")
    with appliance.api() as api:
        scope = {"source_id": appliance.source_id}  # the page starts on the first source it judges
        before = api.get("/thresholds", params=scope).json()
        t1, t2 = before["t1"] * 0.99, before["t2"] * 1.01
        at.number_input(key="thr_t2").set_value(t2).run()
        at.number_input(key="thr_t1").set_value(t1).run()
        at.text_input(key="thr_reason").input("tuned in the console test")
        next(b for b in at.button if b.label == "Apply candidate thresholds").click().run()
        assert at.success and "applied" in at.success[0].value
        now = api.get("/thresholds", params=scope).json()
        audit = api.get("/audit", params={"limit": 5}).json()
        restore = {**{k: before[k] for k in ("t1", "t2")}, "reason": "restore after test", **scope}
        api.put("/thresholds", json=restore)
    assert (now["t1"], now["t2"]) == (t1, t2)  # applied exactly
    assert any(a["reason"] == "tuned in the console test" for a in audit)


def test_a_false_positive_verdict_lands_in_the_next_retraining_dataset(console, appliance):
    at = console("operator", "alerts")
    with appliance.api("operator") as api:
        alert = api.get("/alerts", params={"state": "open", "limit": 1}).json()["data"][0]
    at.selectbox(key="alerts_state").select("open").run()
    at.button(key=f"fp-{alert['id']}").click().run()
    assert not at.exception
    with appliance.api("engineer") as api:
        assert api.get("/alerts", params={"state": "false_positive"}).json()["count"] >= 1
        judged = next(
            a for a in api.get("/alerts", params={"state": "false_positive"}).json()["data"] if a["id"] == alert["id"]
        )
        assert judged["verdict_by"]
        made = api.post("/datasets", json={"name": "fp-next", "include_ok": False, "include_false_positives": True})
        assert made.status_code == 201 and made.json()["images"] >= 1
        image = api.get(f"/inspections/{alert['inspection_id']}/image").content
        listing = api.get("/datasets/fp-next", params={"limit": 1000}).json()["files"]["training.csv"]["head"]
        files = [api.get("/datasets/fp-next/file", params={"path": row[0]}).content for row in listing]
    assert image in files  # the very image the operator judged is new normal data


def test_alert_actions_and_csv_export(console, appliance):
    at = console("operator", "alerts")
    with appliance.api("operator") as api:
        alert = api.get("/alerts", params={"state": "open", "limit": 1}).json()["data"][0]
    at.selectbox(key="alerts_state").select("open").run()
    at.button(key=f"ack-{alert['id']}").click().run()
    with appliance.api("operator") as api:
        assert api.get("/alerts", params={"state": "acknowledged"}).json()["count"] >= 1
    at.selectbox(key="alerts_state").select("acknowledged").run()
    at.button(key=f"conf-{alert['id']}").click().run()
    with appliance.api("operator") as api:
        confirmed = api.get("/alerts", params={"state": "confirmed"}).json()["data"]
    assert any(a["id"] == alert["id"] for a in confirmed)
    export = at.get("download_button")
    assert export, "no CSV export"
    with appliance.api("operator") as api:
        matching = api.get("/alerts", params={"state": "acknowledged"}).json()["count"]
    assert export[0].proto.label == f"Export CSV: all {matching:,} matching"  # the API's export, not the page


def test_promote_and_roll_back_change_the_active_model(console, appliance):
    first, candidate = appliance.versions
    at = console("engineer", "models")
    at.selectbox(key="models_version").select(candidate).run()
    at.text_input(key="models_reason").input("console test promote").run()
    at.button(key="models_promote").click().run()
    with appliance.api() as api:
        assert api.get("/thresholds").json()["model_version"] == candidate
        at.button(key="models_rollback").click().run()
        assert api.get("/thresholds").json()["model_version"] == first
    assert not at.exception


def test_retrain_on_an_uploaded_folder_then_compare_and_promote(console, appliance):
    at = console("engineer", "retrain")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for i, part in enumerate(SyntheticLine(64, defect_rate=0.0, seed=21).take(45)):
            zf.writestr(f"normal/{i:03d}.png", cv2.imencode(".png", part.image)[1].tobytes())
    at.text_input(key="rt_upload_name").input("fresh-normal").run()
    at.file_uploader(key="rt_upload").upload("normal.zip", archive.getvalue(), "application/zip").run()
    at.button(key="rt_upload_go").click().run()
    assert "45 images" in at.success[0].value
    at.checkbox(key="rt_ok").uncheck().run()
    at.multiselect(key="rt_datasets").select("fresh-normal").run()
    at.number_input(key="rt_epochs").set_value(1).run()
    at.button(key="rt_start").click().run()
    job_id = at.session_state["rt_job"]
    with appliance.api() as api:
        job = wait_job(api, job_id)
        assert job["status"] == "succeeded", api.get(f"/jobs/{job_id}/log").text
        assert job["params"]["datasets"] == ["fresh-normal"]
    at.run()
    assert any("Candidate against the active model" in s.value for s in at.subheader)
    candidate = job["result"]["candidate_version"]
    at.button(key="rt_promote").click().run()
    with appliance.api() as api:
        assert api.get("/thresholds").json()["model_version"] == candidate
        api.post("/models/rollback", json={"reason": "back after the retrain test"})


def _digits_zip(classes=(0, 1, 2), per_class=25) -> bytes:
    digits = load_digits()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for label in classes:
            for j, img in enumerate(digits.images[digits.target == label][:per_class]):
                png = cv2.imencode(".png", (img * 16).clip(0, 255).astype(np.uint8))[1].tobytes()
                zf.writestr(f"digits/{label}/{j:03d}.png", png)
    return archive.getvalue()


def test_train_and_evaluate_a_classifier_then_classify_an_image(console, appliance):
    at = console("engineer", "train")
    at.text_input(key="tr_ds_name").input("three-digits").run()
    at.file_uploader(key="tr_ds_zip").upload("digits.zip", _digits_zip(), "application/zip").run()
    at.button(key="tr_ds_go").click().run()
    assert at.success, [e.value for e in at.error]
    at.selectbox(key="tr_zoo").select("binary_cnn").run()
    at.number_input(key="tr_classes").set_value(3).run()
    with appliance.api() as api:
        stats = api.post("/networks/stats", json={"zoo": "binary_cnn", "input": [1, 28, 28], "options": {"classes": 3}})
    assert metric(at, "Multiply-adds") == f"{stats.json()['total']['multiply_adds']:,}"
    at.text_input(key="tr_proj_name").input("digits3")  # the project form's fields go with its submit
    at.selectbox(key="tr_proj_ds").select("three-digits")
    at.number_input(key="tr_epochs").set_value(15)
    at.number_input(key="tr_lr").set_value(0.01)
    submit = next(b for b in at.button if b.label == "Save project and train")
    submit.click().run()
    job_id = at.session_state["tr_job"]
    with appliance.api() as api:
        job = wait_job(api, job_id)
        assert job["status"] == "succeeded", api.get(f"/jobs/{job_id}/log").text
    at.run()
    assert float(metric(at, "accuracy")) >= 0.8
    image = cv2.imencode(".png", (load_digits().images[load_digits().target == 2][-1] * 16).astype(np.uint8))[1]
    at.radio(key="tr_cls_kind").set_value("image").run()
    at.file_uploader(key="tr_cls_img").upload("two.png", image.tobytes(), "image/png").run()
    assert metric(at, "Label") == "2"


def test_viewer_sees_no_buttons_that_would_fail(console):
    at = console("viewer")
    assert not any(b.label == "Capture now" for b in at.button)
    at.switch_page("views/alerts.py")
    at.run()
    assert title(at) == "Alerts"
    assert not [b for b in at.button if b.label in ("Acknowledge", "Confirm defect", "False positive")]
    at.switch_page("views/thresholds.py")
    at.run()
    assert not [b for b in at.button if "Apply" in b.label]
    assert any("needs an engineer token" in c.value for c in at.caption)
    at.switch_page("views/models.py")
    at.run()
    assert not [b for b in at.button if b.label in ("Promote this version", "Roll back", "Discard")]


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_engineer_and_admin_pages_are_not_offered(console, role):
    at = console(role)
    for page in ENGINEER_PAGES:  # not in the navigation at all
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            at.switch_page(page_path(page))


def test_operator_can_judge_alerts(console):
    at = console("operator", "alerts")
    assert [b for b in at.button if b.label == "False positive"]


def test_alerts_are_filtered_by_the_api_and_counted_whole(console, appliance):
    """Source and decision filters ask the API (before, they filtered the one page fetched, and
    the open count was the page's)."""
    at = console("operator", "alerts")
    at.number_input(key="alerts_limit").set_value(5).run()
    at.multiselect(key="alerts_sources").select(appliance.source_id).run()
    at.multiselect(key="alerts_decisions").select("review").run()
    assert not at.exception
    with appliance.api("viewer") as api:
        answer = api.get("/alerts", params={"source_id": appliance.source_id, "decision": "review"}).json()
    assert answer["count"] > 5  # more than the page shows
    caption = next(c.value for c in at.caption if "shown of" in c.value)
    assert caption == f"5 shown of {answer['count']:,} alerts; {answer['open']:,} open"
    titles = [e.label for e in at.expander]
    assert len(titles) == 5 and all("REVIEW" in t and appliance.source_id in t for t in titles)


def test_settings_test_a_source_and_manage_tokens_as_admin(console, appliance):
    at = console("admin", "settings")
    at.text_input(key="src_url").input("synth:line?size=32")  # inside a form: sent with its submit button
    next(b for b in at.button if b.label == "Test connection").click().run()
    assert "read one sample of shape [32, 32]" in at.success[0].value
    at.text_input(key="tok_name").input("line-2 viewer")
    at.selectbox(key="tok_role").select("viewer")
    next(b for b in at.button if b.label == "Create token").click().run()
    token = at.code[0].value
    with appliance.api() as api:
        names = [t["name"] for t in api.get("/tokens").json()]
    assert "line-2 viewer" in names
    import httpx

    assert httpx.get(f"{appliance.url}/me", headers={"Authorization": f"Bearer {token}"}).json()["role"] == "viewer"
    # an engineer sees the settings page but not the tokens
    at = console("engineer", "settings")
    assert not any(s.value == "API tokens" for s in at.subheader)


def test_vector_classification_on_iris(console, appliance):
    at = console("engineer", "train")
    at.selectbox(key="tr_sample").select("iris").run()
    at.button(key="tr_sample_go").click().run()
    assert at.success and "training 112" in at.success[0].value
    at.selectbox(key="tr_zoo").select("mlp").run()
    at.text_input(key="tr_shape").input("4").run()
    at.number_input(key="tr_classes").set_value(3).run()
    assert metric(at, "Multiply-adds") == f"{4 * 128 + 128 * 3:,}"  # mlp: 4 → 128 → 3
    at.text_input(key="tr_proj_name").input("iris-mlp")
    at.selectbox(key="tr_proj_ds").select("iris")
    at.number_input(key="tr_epochs").set_value(60)
    at.number_input(key="tr_lr").set_value(0.01)
    next(b for b in at.button if b.label == "Save project and train").click().run()
    with appliance.api() as api:
        job = wait_job(api, at.session_state["tr_job"])
        assert job["status"] == "succeeded", job["message"]
    at.run()
    assert float(metric(at, "accuracy")) >= 0.9
    at.radio(key="tr_cls_kind").set_value("vector").run()
    at.text_area(key="tr_cls_vec").input("6.7, 3.0, 5.2, 2.3").run()  # a virginica from the book
    assert not at.error, [e.value for e in at.error]
    assert metric(at, "Label") == "2"
    at.text_area(key="tr_cls_vec").input("6.7, x").run()
    assert "'x' is not a number" in at.error[0].value


def iris_project(api, name: str, **config):
    """A project file for an MLP on the iris sample (the sample dataset made once)."""
    if api.get("/datasets/iris-search").status_code == 404:
        api.post("/datasets/sample", json={"name": "iris-search", "sample": "iris"})
    body = {"name": name, "dataset": "iris-search", "zoo": "mlp", "options": {"classes": 3}}
    return api.post("/projects", json={**body, "task": "classification", "max_epoch": 5, **config})


def test_structure_search_from_the_console(console, appliance):
    """A search job over a project saved from the console: trials with Pareto flags and the plot."""
    with appliance.api() as api:
        made = iris_project(api, "iris-search", lr=0.01)
        assert made.status_code == 201, made.text
    at = console("engineer", "train")
    at.selectbox(key="sr_project").select("iris-search.yaml").run()
    at.number_input(key="sr_trials").set_value(4).run()
    at.number_input(key="sr_epochs").set_value(5).run()
    at.button(key="sr_start").click().run()
    job_id = at.session_state["sr_job"]
    with appliance.api() as api:
        job = wait_job(api, job_id, timeout=300)
        assert job["status"] == "succeeded", api.get(f"/jobs/{job_id}/log").text
        assert api.get(f"/jobs/{job_id}/tradeoff.png").headers["content-type"] == "image/png"
    rows = job["result"]["trials"]
    assert len(rows) == 4 and rows[0]["mutations"] == "" and any(r["pareto"] == "True" for r in rows)
    at.run()
    tables = [d.value for d in at.dataframe if "pareto" in d.value.columns]
    assert tables and len(tables[0]) == 4  # the trials table on the page
    assert at.get("image"), "no trade-off plot"


def test_a_cancelled_search_job_keeps_its_finished_trials(appliance):
    # as when a shell starts the appliance in the background: SIGINT ignored, and children inherit that
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with appliance.api() as api:
            iris_project(api, "iris-long")
            body = {"project": "iris-long.yaml", "trials": 200, "epochs": 5}
            job_id = api.post("/jobs/search", json=body).json()["id"]
            deadline = time.monotonic() + 120
            while not api.get(f"/jobs/{job_id}").json()["result"].get("trials"):
                assert time.monotonic() < deadline
                time.sleep(0.5)
            api.post(f"/jobs/{job_id}/cancel")
            job = wait_job(api, job_id, timeout=120)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert job["status"] == "cancelled", job["message"]
    run = Path(job["result"]["run"])
    assert list(run.glob("trials/*/trial.json")) and (run / "search.json").is_file()  # resumable


def test_an_idle_console_signs_out(console):
    at = console("operator", "alerts")
    at.session_state["last_active"] = time.time() - 31 * 60  # 31 minutes without a click
    at.run()
    assert "client" not in at.session_state
    assert any("without activity" in i.value for i in at.info)


def test_the_solvers_offered_are_the_engines():
    from engine.solvers import SOLVERS
    from ui.views.train.run import SOLVERS as OFFERED

    assert {s.lower() for s in OFFERED} <= set(SOLVERS)


def test_train_an_uploaded_nnc_project(console, appliance):
    """An engineer coming from Neural Network Console uploads an .sdcproj on Train & evaluate: the
    Network tab shows its layers and NNC's statistics, the form takes the project's own settings,
    and it trains on one of the appliance's datasets."""
    with appliance.api() as api:
        made = api.post("/datasets/sample", json={"name": "d49-nnc", "sample": "digits_4or9"})
        assert made.status_code in (201, 409), made.text
    project = (Path(__file__).resolve().parents[1] / "data" / "nnc" / "02_binary_cnn.sdcproj").read_bytes()
    at = console("engineer", "train")
    at.radio(key="tr_net_source").set_value("NNC project (.sdcproj)").run()
    at.file_uploader(key="tr_sdcproj").upload("02_binary_cnn.sdcproj", project, "text/plain").run()
    assert not at.error, [e.value for e in at.error]
    assert metric(at, "Parameters") == "4,925" and metric(at, "Multiply-adds") == "436,490"
    assert at.number_input(key="tr_epochs_nnc_02_binary_cnn").value == 100  # NNC's MaxEpoch
    at.selectbox(key="tr_proj_ds").select("d49-nnc")
    at.number_input(key="tr_epochs_nnc_02_binary_cnn").set_value(20)
    next(b for b in at.button if b.label == "Save project and train").click().run()
    with appliance.api() as api:
        job = wait_job(api, at.session_state["tr_job"])
        assert job["status"] == "succeeded", api.get(f"/jobs/{job['id']}/log").text
        saved = next(p for p in api.get("/projects").json() if p["name"] == "02_binary_cnn")
    assert "Convolution_2" in saved["text"]  # the NNC network, with NNC's layer names
    at.run()
    assert float(metric(at, "accuracy")) >= 0.95
    at.file_uploader(key="tr_sdcproj").upload("broken.sdcproj", b"[Network_Global]\nNumLayer=3\n", "text/plain").run()
    assert "broken.sdcproj" in at.error[0].value and "[Layer_0]" in at.error[0].value
