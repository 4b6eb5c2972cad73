"""Retention: OK images go first, NG images only after their alert is resolved, history stays."""

from __future__ import annotations

import datetime as dt

import numpy as np
from sqlmodel import Session, select

from appliance.alerts.schema import Topics, alert_message
from appliance.images import ImageStore
from appliance.retention import prune
from appliance.storage import store
from appliance.storage.db import init_db, make_engine
from appliance.storage.models import Alert, Inspection

DAY = dt.timedelta(days=1)


def make(engine, images, decision: str, age_days: float, seed: int, pixels: np.ndarray | None = None) -> int:
    if pixels is None:
        pixels = np.random.default_rng(seed).integers(0, 255, (64, 64), dtype=np.uint8)
    ref = images.put(pixels)
    inspection = Inspection(
        source_id="s",
        t_capture=dt.datetime.now(dt.UTC) - age_days * DAY,
        score=1,
        norm_score=0.5,
        decision=decision,
        model_version="m",
        latency_ms=1,
        image_ref=ref,
    )
    stored, _ = store.record_inspection(
        engine,
        inspection=inspection,
        threshold=0.5,
        alert_topic="t",
        build_message=lambda a, i: alert_message(a, i, Topics()),
    )
    return stored.id


def setup(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    init_db(engine)
    return engine, ImageStore(tmp_path / "images")


def kept(engine) -> dict[int, bool]:
    with Session(engine) as session:
        return {r.id: r.image_ref is not None for r in session.exec(select(Inspection))}


def test_old_ok_images_go_and_rows_stay(db_url, tmp_path):
    engine, images = make_engine(db_url), ImageStore(tmp_path / "images")
    init_db(engine)
    old_ok, new_ok, old_ng = (
        make(engine, images, "ok", 40, 1),
        make(engine, images, "ok", 1, 2),
        make(engine, images, "ng", 40, 3),
    )
    report = prune(engine, images, max_age=30 * DAY, max_bytes=10**9)
    assert kept(engine) == {old_ok: False, new_ok: True, old_ng: True}
    assert report.files_deleted == 1 and report.inspections_cleared == 1


def test_size_limit_prunes_oldest_ok_first_and_never_an_open_ng(tmp_path):
    engine, images = setup(tmp_path)
    ok_ids = [make(engine, images, "ok", 10 - i, 10 + i) for i in range(4)]
    ng_open = make(engine, images, "ng", 20, 30)
    ng_resolved = make(engine, images, "ng", 19, 31)
    with Session(engine) as session:
        alert = session.exec(select(Alert).where(Alert.inspection_id == ng_resolved)).one()
        alert.state = "false_positive"
        session.add(alert)
        session.commit()
    one = images.path(images.put(np.random.default_rng(10).integers(0, 255, (64, 64), dtype=np.uint8))).stat().st_size
    prune(engine, images, max_age=365 * DAY, max_bytes=int(4.5 * one))  # room for about four images
    state = kept(engine)
    assert state[ok_ids[0]] is False and state[ok_ids[1]] is False  # the oldest OK ones
    assert state[ok_ids[3]] is True and state[ng_open] is True
    prune(engine, images, max_age=365 * DAY, max_bytes=0)  # nothing fits: still never the open NG
    state = kept(engine)
    assert state[ng_open] is True and state[ng_resolved] is False and not any(state[i] for i in ok_ids)


def test_shared_files_stay_while_used(tmp_path):
    engine, images = setup(tmp_path)
    a = make(engine, images, "ok", 40, 7)
    b = make(engine, images, "ng", 40, 7)  # the same pixels: the same file
    prune(engine, images, max_age=30 * DAY, max_bytes=10**9)
    assert kept(engine) == {a: False, b: True}
    with Session(engine) as session:
        assert images.path(session.get(Inspection, b).image_ref).exists()


def test_a_frame_of_measured_values_goes_whole(tmp_path):
    """A float frame is kept as its values' TIFF and a PNG to show: pruning frees both."""
    engine, images = setup(tmp_path)
    heights = 40 + 20 * np.random.default_rng(5).random((64, 64)).astype(np.float32)
    old = make(engine, images, "ok", 40, 5, heights)
    with Session(engine) as session:
        ref = session.get(Inspection, old).image_ref
    files = images.files(ref)
    assert [p.suffix for p in files] == [".png", ".tiff"]
    size = sum(p.stat().st_size for p in files)
    report = prune(engine, images, max_age=30 * DAY, max_bytes=10**9)
    assert report.bytes_freed == size and not any(p.exists() for p in files)
