"""The running appliance: sources → pipeline → storage → MQTT, model swap, debounce, metrics."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import Session, select

from appliance.alerts.schema import Topics
from appliance.images import ImageStore
from appliance.pipeline import Pipeline
from appliance.recipes import Recipes
from appliance.runtime import Appliance
from appliance.settings import SettingsError, load_settings
from appliance.storage import store
from appliance.storage.db import init_db, make_engine
from appliance.storage.models import Inspection
from connectors.factory import open_source
from models.inference import Inferencer
from tests.helpers.appliance import SMALL
from tests.helpers.broker import Subscriber, free_port, port_open
from tests.helpers.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    """One small default detector, trained once for these tests."""
    data = tmp_path_factory.mktemp("model")
    app = Appliance(load_settings(data_dir=data, detector=SMALL), log=lambda line: None)
    app.models_dir.mkdir(parents=True)
    return app.train_default()


def settings_for(tmp_path: Path, db_url: str, port: int, **extra):
    return load_settings(
        data_dir=tmp_path,
        database_url=db_url,
        detector=SMALL,
        sources=["synth:line?size=64&fps=40&defect_rate=0.5&seed=2"],
        mqtt={"host": "127.0.0.1", "port": port, "appliance_id": "rt"},
        **extra,
    )


def with_active_model(settings, trained_model: Path) -> Appliance:
    """An appliance (not started) whose active model is ``trained_model``: no first-start training."""
    app = Appliance(settings, log=lambda line: None)
    app.models_dir.mkdir(parents=True)
    (app.models_dir / trained_model.name).write_bytes(trained_model.read_bytes())
    app.activate(app.models_dir / trained_model.name)
    return app


def test_appliance_inspects_stores_and_alerts(tmp_path, db_url, broker, trained_model):
    settings = settings_for(tmp_path, db_url, broker.port)
    app = with_active_model(settings, trained_model)
    sub = Subscriber(broker.port, [app.topics.alerts, app.topics.status])
    app.start()
    try:
        assert wait_for(lambda: app.pipeline.status()[settings.sources[0]]["scored"] >= 40, timeout=30)
        assert wait_for(lambda: len(sub.alerts()) >= 1, timeout=20)
        assert b"online" in sub.payloads("/status")
        status = app.pipeline.status()[settings.sources[0]]
        assert status["state"] == "online" and status["capture_to_decision_ms"]["p50"] > 0
        text = app.pipeline.prometheus()
        assert re.search(r'appliance_frames_total\{source="synth:line[^"]*",stage="scored"\} \d+', text)
        assert 'quantile="0.99"' in text and "appliance_outbox_backlog" in text
    finally:
        app.stop()
    engine = make_engine(db_url)
    with Session(engine) as session:
        rows = session.exec(select(Inspection)).all()
    assert len(rows) >= 40 and {r.model_version for r in rows} == {Inferencer(trained_model).version}
    flagged = [r for r in rows if r.decision != "ok"]
    assert all(r.image_ref and r.heatmap_ref for r in flagged)  # every NG/review item keeps its images
    assert ImageStore(tmp_path / "images").path(flagged[0].image_ref).is_file()
    alert_ids = {m["inspection_id"] for m in sub.alerts()}
    assert alert_ids <= {r.id for r in flagged}
    sub.close()


def registered(tmp_path: Path, trained_model: Path):
    """A SQLite database with the trained model registered: (engine, models folder, version)."""
    from appliance import registry

    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    init_db(engine)
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / trained_model.name).write_bytes(trained_model.read_bytes())
    return engine, models_dir, registry.register(engine, models_dir / trained_model.name)


def test_model_swap_lands_between_samples(tmp_path, trained_model):
    from appliance import registry
    from models import bundle as bundle_io

    engine, models_dir, first = registered(tmp_path, trained_model)
    swapped = bundle_io.load(trained_model)
    swapped.meta["version"] = "swapped"
    swapped.save(models_dir / "swapped.zip")
    second = registry.register(engine, models_dir / "swapped.zip")
    store.activate_model(engine, version=first, actor="test", reason="first")
    recipes = Recipes(engine, models_dir)
    pipeline = Pipeline(engine, recipes, Topics(), ImageStore(tmp_path / "img"), queue_size=8, batch_size=4)
    pipeline.add_source(open_source("synth:line?size=64&fps=100&defect_rate=0.2", "s"))
    recipes.refresh(pipeline_sources(pipeline))
    pipeline.start()
    try:
        assert wait_for(lambda: pipeline.metrics["s"].scored >= 20)
        store.activate_model(engine, version=second, actor="test", reason="swap")
        recipes.refresh(pipeline_sources(pipeline))
        done = pipeline.metrics["s"].scored
        assert wait_for(lambda: pipeline.metrics["s"].scored >= done + 20)
    finally:
        pipeline.stop()
    with Session(engine) as session:
        versions = [r.model_version for r in session.exec(select(Inspection).order_by(Inspection.id))]
    switch = versions.index("swapped")
    assert set(versions[:switch]) == {first} and set(versions[switch:]) == {"swapped"}


def pipeline_sources(pipeline):
    return {sid: w.source for sid, w in pipeline.workers.items()}


def test_a_frame_the_model_cannot_read_is_left_out_alone(tmp_path, trained_model):
    """A frame the model cannot read (a 3-D sensor's, on a model fitted on 8-bit pictures) in a batch with good ones:
    the others are judged and stored, it is counted and named in its source's status, and a
    trigger that gets such a frame says why it has no decision."""
    import threading

    import cv2
    import numpy as np

    from appliance.errors import InvalidInput
    from appliance.runtime import status_lines
    from appliance.storage import recipes as recipes_db
    from connectors.synthetic import SyntheticLine

    engine, models_dir, version = registered(tmp_path, trained_model)
    recipes_db.bind(engine, source_id="cam", version=version, actor="test", reason="the camera's own model")
    recipes = Recipes(engine, models_dir)
    pipeline = Pipeline(engine, recipes, Topics(), ImageStore(tmp_path / "img"), batch_size=8)
    folder = tmp_path / "camera"
    folder.mkdir()
    blank = np.full((64, 64), np.nan, np.float32)  # a 3-D sensor that saw nothing
    for i, part in enumerate(SyntheticLine(size=64, defect_rate=0.0, seed=3).take(2)):
        cv2.imwrite(str(folder / f"part{i}.png"), part.image)
    cv2.imwrite(str(folder / "blank.tiff"), blank)
    pipeline.add_source(open_source(f"folder:{folder}?poll=0.1&settle=0", "cam"))
    recipes.refresh(pipeline_sources(pipeline))
    try:
        assert wait_for(lambda: len(pipeline.workers["cam"].queue) == 3)
        pipeline.start()  # the three in one batch
        assert wait_for(lambda: pipeline.metrics["cam"].scored == 2 and pipeline.metrics["cam"].rejected == 1)
        status = pipeline.status()["cam"]
        assert status["rejected"] == 1 and status["decisions"]["ok"] + status["decisions"]["review"] == 2
        assert status["last_rejected"].startswith("blank.tiff: the image holds measured values (float or signed)")
        assert 'appliance_frames_total{source="cam",stage="rejected"} 1' in pipeline.prometheus()
        assert "unreadable 1 (last: blank.tiff: the image holds measured" in status_lines({"cam": status}, 0)[0]
        later = threading.Timer(0.5, lambda: cv2.imwrite(str(folder / "blank2.tiff"), blank))
        later.start()
        with pytest.raises(
            InvalidInput, match=r"source .cam. cannot be judged by .*: blank2.tiff: the image holds measured"
        ):
            pipeline.capture_and_inspect("cam", timeout=10)
        later.join()
    finally:
        pipeline.stop()
    with Session(engine) as session:
        assert sorted(r.item for r in session.exec(select(Inspection))) == ["part0.png", "part1.png"]


def test_full_queue_drops_the_oldest_and_counts(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    init_db(engine)
    pipeline = Pipeline(
        engine, Recipes(engine, tmp_path / "models"), Topics(), ImageStore(tmp_path / "img"), queue_size=3
    )
    pipeline.add_source(open_source("synth:line?size=32&fps=200", "fast"))
    try:
        assert wait_for(lambda: pipeline.workers["fast"].dropped >= 5)
        queued = [s.meta["index"] for s in pipeline.workers["fast"].queue]
        assert len(queued) == 3 and queued == sorted(queued) and queued[0] > 0  # the newest are kept
    finally:
        pipeline.stop()


def test_debounce_needs_n_of_m(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    pipeline = Pipeline(
        engine, Recipes(engine, tmp_path / "models"), Topics(), ImageStore(tmp_path / "img"), debounce=(2, 3)
    )
    decisions = [pipeline._debounced("s", d) for d in ["ng", "ok", "ng", "ng", "ok", "ok", "ng"]]
    assert decisions == ["review", "ok", "ng", "ng", "ok", "ok", "review"]


def test_second_start_reuses_the_active_model(tmp_path, broker, trained_model):
    settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 'a.db'}", broker.port)
    with_active_model(settings, trained_model)  # the first start's model, activated
    lines = []
    Appliance(settings, log=lines.append).start().stop()
    assert not any("training the default detector" in line for line in lines)


def test_the_lines_models_run_on_the_configured_onnxruntime_threads(tmp_path, broker, trained_model):
    settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 'a.db'}", broker.port, inference_threads=3)
    app = with_active_model(settings, trained_model).start()
    try:
        assert app.recipes.default.model.session.get_session_options().intra_op_num_threads == 3
        scored = sum(s["scored"] for s in app.pipeline.status().values())
        assert wait_for(lambda: sum(s["scored"] for s in app.pipeline.status().values()) > scored + 5)
    finally:
        app.stop()


def test_a_second_appliance_on_the_same_data_folder_is_refused_and_the_first_goes_on(tmp_path, broker, trained_model):
    """Started twice by mistake: the second start is refused naming the folder and the first's
    process, before it touches the database; once the first stops, the folder is free again."""
    import os

    from appliance.errors import Conflict

    settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 'a.db'}", broker.port)
    first = with_active_model(settings, trained_model).start()
    try:
        held = rf"data_dir {re.escape(str(tmp_path))} is in use by another running appliance \(pid {os.getpid()} on"
        with pytest.raises(Conflict, match=held):
            Appliance(settings, log=lambda line: None).start()
        scored = sum(s["scored"] for s in first.pipeline.status().values())
        assert wait_for(lambda: sum(s["scored"] for s in first.pipeline.status().values()) > scored + 5)
    finally:
        first.stop()
    Appliance(settings, log=lambda line: None).start().stop()  # free again
    unreachable = settings_for(tmp_path, "postgresql://nobody@127.0.0.1:1/none", broker.port)
    with pytest.raises(SettingsError, match="database_url: cannot reach"):
        Appliance(unreachable, log=lambda line: None).start()
    Appliance(settings, log=lambda line: None).start().stop()  # a start that failed holds nothing


def test_make_run_path_with_the_embedded_broker(tmp_path):
    """`appliance run` on defaults: trains on first start, prints how to subscribe, alerts flow."""
    env = {
        "PATH": "/usr/bin:/bin",
        "APPLIANCE_DETECTOR__SIZE": "64",
        "APPLIANCE_DETECTOR__CROP": "",
        "APPLIANCE_DETECTOR__EPOCHS": "2",
        "APPLIANCE_DETECTOR__TRAINING_IMAGES": "60",
        "APPLIANCE_SOURCES": '["synth:line?size=64&fps=30&defect_rate=0.5"]',
    }
    env = {k: v for k, v in env.items() if v}
    console_port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "run", "--duration", "120", "--report-every", "5"]
        + ["--console", "--console-port", str(console_port)],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        port = None
        for line in proc.stdout:
            match = re.search(r"mosquitto_sub -h 127.0.0.1 -p (\d+) -t '([^']+)'", line)
            if match:
                port = int(match[1])
                break
        assert port is not None, "no subscribe line printed"
        sub = Subscriber(port, [match[2]])
        assert wait_for(lambda: len(sub.alerts()) >= 1, timeout=20)
        assert sub.alerts()[0]["decision"] in ("review", "ng")
        sub.close()
        # make run's console is up beside it, signed in with the first-start admin token
        assert wait_for(lambda: port_open(console_port), timeout=60)
        proc.send_signal(signal.SIGTERM)  # systemd's stop: an orderly stop, console included
        assert proc.wait(60) == 0
        assert "stopping" in proc.stdout.read()
        assert not port_open(console_port)
    finally:
        proc.kill()
    assert any((tmp_path / "var" / "models").glob("detector-*.zip"))


def test_source_state_changes_are_announced_on_mqtt(tmp_path, broker, trained_model):
    import json

    video = tmp_path / "cam.avi"
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 64))
    for i in range(20):
        writer.write(np.full((64, 64, 3), i * 10, np.uint8))
    writer.release()
    source = f"file:{video}?live=1&backoff=0.05&max_backoff=0.2"
    settings = load_settings(
        data_dir=tmp_path,
        detector=SMALL,
        sources=[source],
        api_port=0,
        mqtt={"host": "127.0.0.1", "port": broker.port, "appliance_id": "states"},
    )
    app = with_active_model(settings, trained_model)
    topic = app.topics.source_state(source)
    sub = Subscriber(broker.port, [topic])
    app.start()
    try:
        assert wait_for(lambda: any(json.loads(p)["state"] == "online" for p in sub.payloads("/state")), timeout=20)
        video.rename(tmp_path / "gone.avi")
        assert wait_for(lambda: json.loads(sub.payloads("/state")[-1])["state"] == "reconnecting", timeout=20)
        assert "cannot open" in json.loads(sub.payloads("/state")[-1])["last_error"]
    finally:
        app.stop()
        sub.close()
    assert "/" not in topic.split("/sources/")[1].removesuffix("/state")


def folder_line(tmp_path: Path, port: int, trained_model: Path, frames: dict) -> tuple[Appliance, str]:
    """An appliance (not started) whose one source is a folder holding ``frames`` (name: image),
    judged by the trained model, bound to it as an engineer would."""
    import cv2

    from appliance.storage import recipes as recipes_db

    line = tmp_path / "line"
    line.mkdir()
    for name, image in frames.items():
        assert cv2.imwrite(str(line / name), image)
    source = f"folder:{line}?settle=0"
    mqtt = {"host": "127.0.0.1", "port": port, "appliance_id": tmp_path.name[-20:]}
    settings = load_settings(data_dir=tmp_path / "var", detector=SMALL, sources=[source], api_port=0, mqtt=mqtt)
    app = Appliance(settings, log=lambda line: None)
    app.models_dir.mkdir(parents=True)
    (app.models_dir / trained_model.name).write_bytes(trained_model.read_bytes())
    version = app.register(app.models_dir / trained_model.name)
    recipes_db.bind(app.engine, source_id=source, version=version, actor="test", reason="the line's model")
    return app, source


def test_a_source_sending_frames_its_model_cannot_read_says_so_on_mqtt(tmp_path, broker, trained_model):
    """A camera swapped for a 3-D sensor (float height maps) on a line whose model was fitted on
    8-bit pictures: its frames are left out, not called NG, and the source's retained state says
    how many and why, for the MES that watches it."""
    import json

    import numpy as np

    app, source = folder_line(
        tmp_path, broker.port, trained_model, {"heights.tiff": np.full((64, 64), 42.5, np.float32)}
    )
    sub = Subscriber(broker.port, [app.topics.source_state(source)])
    app.start()
    try:
        assert wait_for(lambda: any(json.loads(p)["rejected"] for p in sub.payloads("/state")), timeout=20)
        state = json.loads(sub.payloads("/state")[-1])
        assert state["state"] == "online" and state["rejected"] == 1
        assert state["last_rejected"].startswith("heights.tiff: the image holds measured values (float or signed)")
        assert "fitted on images of counts (8- or 16-bit)" in state["last_rejected"]
        assert app.pipeline.status()[source]["frames_in"] == 1
    finally:
        app.stop()
        sub.close()


def test_a_frame_unlike_the_good_parts_alerts_with_that_label(tmp_path, broker, trained_model):
    """An empty station (a flat grey frame, no part) on a line whose model judges local defects:
    NG, and the alert says what was found, on MQTT, in the alert list and in its CSV export."""
    import httpx
    import numpy as np

    from connectors.synthetic import SyntheticLine

    part = SyntheticLine(size=64, defect_rate=0.0, seed=4).next().image
    frames = {"a-part.png": part, "b-empty.png": np.full((64, 64), 128, np.uint8)}
    app, _ = folder_line(tmp_path, broker.port, trained_model, frames)
    sub = Subscriber(broker.port, [app.topics.alerts])
    app.start()
    try:
        assert wait_for(lambda: any(a["item"] == "b-empty.png" for a in sub.alerts()), timeout=30)
        alert = next(a for a in sub.alerts() if a["item"] == "b-empty.png")
        assert alert["decision"] == "ng" and alert["label"] == "unlike the good parts"
        token = store.create_token(app.engine, name="t", role="viewer")
        api = httpx.Client(base_url=f"http://127.0.0.1:{app.api_port}", headers={"Authorization": f"Bearer {token}"})
        listed = api.get("/alerts").json()["data"]
        assert [a["label"] for a in listed if a["item"] == "b-empty.png"] == ["unlike the good parts"]
        exported = api.get("/alerts/export.csv").text.splitlines()
        assert "item" in exported[0] and "label" in exported[0]
        assert [
            line for line in exported if "b-empty.png" in line and ",ng," in line and "unlike the good parts" in line
        ]
    finally:
        app.stop()
        sub.close()


def test_jobs_interrupted_by_a_stop_are_marked_failed(tmp_path, broker, trained_model):
    from sqlmodel import Session

    from appliance.storage.models import TrainingJob

    settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 'j.db'}", broker.port)
    app = Appliance(settings, log=lambda line: None)
    app.migrate()  # the schema, before the appliance starts (nothing connects in the constructor)
    with Session(app.engine) as session:
        session.add(TrainingJob(kind="retrain", status="running"))
        session.commit()
    app.models_dir.mkdir(parents=True)
    (app.models_dir / trained_model.name).write_bytes(trained_model.read_bytes())
    app.activate(app.models_dir / trained_model.name)
    app.start().stop()
    with Session(app.engine) as session:
        job = session.exec(select(TrainingJob)).one()
    assert job.status == "failed" and "interrupted" in job.message


def test_inspections_topic_is_rate_limited(tmp_path, broker, trained_model):
    settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 'i.db'}", broker.port, inspections_per_second=2)
    app = with_active_model(settings, trained_model)
    sub = Subscriber(broker.port, [app.topics.inspections])
    app.start()
    try:
        time.sleep(3.0)
        scored = app.pipeline.metrics[settings.sources[0]].scored
    finally:
        app.stop()
        sub.close()
    summaries = sub.payloads("/inspections")
    assert scored >= 60 and 3 <= len(summaries) <= 8  # 40 items a second, at most 2 summaries a second


def test_sources_added_through_the_api_survive_a_restart(tmp_path, broker, trained_model):
    from fastapi.testclient import TestClient

    from appliance.api import create_app
    from appliance.storage import store

    settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 's.db'}", broker.port)
    app = with_active_model(settings, trained_model)
    app.start()
    token = store.create_token(app.engine, name="e", role="engineer")
    client = TestClient(create_app(app))
    added = client.post(
        "/sources",
        json={"url": "synth:line?size=64&fps=5", "source_id": "extra"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert added.status_code == 201
    app.stop()
    again = Appliance(settings, log=lambda line: None).start()
    try:
        assert "extra" in again.pipeline.workers
    finally:
        again.stop()


def test_published_hook_ignores_non_alert_messages(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'h.db'}")
    pipeline = Pipeline(engine, Recipes(engine, tmp_path / "models"), Topics(), ImageStore(tmp_path / "img"))
    pipeline.on_published('{"state": "online", "source_id": "cam"}')  # a source-state announcement
    pipeline.on_published('{"event_id": "e", "source_id": "cam", "t_capture": "2026-01-01T00:00:00+00:00"}')
    assert len(pipeline.metrics["cam"].published_ms) == 1


def test_status_lines_come_every_report_interval():
    from appliance.runtime import next_pause

    assert next_pause(None, 10.0, elapsed=500.0) == 10.0  # a long run keeps its rhythm
    assert next_pause(30.0, 10.0, elapsed=25.0) == 5.0
    assert next_pause(30.0, 10.0, elapsed=31.0) == 0.1


def test_the_api_serves_while_the_first_model_trains(tmp_path, broker):
    from fastapi.testclient import TestClient

    from appliance.api import create_app
    from tests.helpers.appliance import appliance_settings

    settings = appliance_settings(tmp_path, broker.port, "synth:line?size=64&fps=10", "first")
    settings = settings.model_copy(update={"detector": settings.detector.model_copy(update={"epochs": 20})})
    app = Appliance(settings, log=lambda line: None).start(wait_for_first_model=False)
    try:
        client = TestClient(create_app(app))
        health = client.get("/health").json()  # answered at once, during training
        assert health["first_start_training"]["state"] == "training" and health["sources_in_teach_mode"] == 1
        assert wait_for(lambda: client.get("/health").json()["first_start_training"]["state"] == "done", timeout=120)
        assert wait_for(lambda: client.get("/health").json()["sources_inspecting"] == 1)
        assert wait_for(lambda: app.pipeline.status()["synth:line?size=64&fps=10"]["scored"] > 0)
        assert not app.teach.frames("synth:line?size=64&fps=10")  # the synthetic line is never taught
    finally:
        app.stop()
