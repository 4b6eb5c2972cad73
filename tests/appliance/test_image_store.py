"""Frames kept on disk (inspected frames, teach frames) come back as they came: the values a
retraining or a teach job learns from, not an 8-bit picture of them."""

from __future__ import annotations

import datetime as dt

import cv2
import numpy as np

from appliance.datasets.images import read_image
from appliance.images import ImageStore
from appliance.jobs import JobContext
from appliance.storage import queries, store
from appliance.storage.db import init_db, make_engine
from appliance.teach import TeachFrames
from appliance.workflows.retrain import readable
from connectors.base import Sample
from models.preprocess import InputSpec


def height_map(seed: int = 0) -> np.ndarray:
    """A 3-D sensor's frame: heights in mm, with a missing reading (NaN) in one corner."""
    heights = 40.0 + 20.0 * np.random.default_rng(seed).random((16, 24)).astype(np.float32)
    heights[0, 0] = np.nan
    return heights


def test_inspected_frames_of_measured_values_are_kept_without_loss(tmp_path):
    images = ImageStore(tmp_path / "images")
    heights = height_map()
    ref = images.put(heights)
    assert images.source(ref).suffix == ".tiff"
    np.testing.assert_array_equal(read_image(images.source(ref)), heights)  # NaN included
    shown = cv2.imread(str(images.path(ref)), cv2.IMREAD_UNCHANGED)  # what the console shows
    assert shown.dtype == np.uint8 and shown.shape == (16, 24, 3) and shown.max() == 255
    assert images.put(heights) == ref and images.put(heights + 1) != ref
    for counts in (np.full((4, 4), 7, np.uint8), np.full((4, 4, 3), 4095, np.uint16)):
        ref = images.put(counts)
        assert images.source(ref) == images.path(ref)  # counts: one PNG, lossless
        np.testing.assert_array_equal(read_image(images.source(ref)), counts)


def test_teach_frames_of_measured_values_are_kept_as_values(tmp_path):
    frames = TeachFrames(tmp_path / "teach", keep=2, interval=0)
    t0 = dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.UTC)
    for i, payload in enumerate((height_map(0), np.zeros((16, 24), np.uint8), height_map(1))):
        frames.offer(Sample("laser:1", t0 + dt.timedelta(seconds=i), payload))
    kept = frames.frames("laser:1")
    assert [p.suffix for p in kept] == [".png", ".tiff"]  # the newest two, oldest first
    np.testing.assert_array_equal(read_image(frames.frame("laser:1", kept[1].name)), height_map(1))
    assert frames.reject("laser:1", [kept[1].name]) == 1 and frames.frames("laser:1") == kept[:1]


def test_retraining_names_the_stored_images_it_cannot_read(tmp_path, db_url):
    engine = make_engine(db_url)
    init_db(engine)
    job = store.create_job(engine, kind="retrain", params={}, actor="test")
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.zeros((8, 8), np.uint8))
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(good.read_bytes()[:20])
    wide = tmp_path / "wide.png"  # a frame from after a camera change
    cv2.imwrite(str(wide), np.zeros((8, 12), np.uint8))
    spec = InputSpec(kind="image", channels=1, size=(4, 4), roi=(0, 0, 8, 8), frame_size=(8, 8))
    images, seen = readable([good, damaged, good, wide], spec, JobContext(engine, job))
    assert len(images) == 2 and seen.shape == (2, 1, 4, 4)
    assert (
        f"skipped 2 of 4 images the model cannot read: {damaged} (cannot be decoded), {wide} (the frame is 12×8"
        in queries.job(engine, job_id=job).log
    )


def test_a_sensor_window_is_kept_as_its_readings_and_shown_as_a_plot(tmp_path):
    """A (channels, length) window: its readings as float32 TIFF (exactly), a band per channel to
    show; a flat channel, a missing reading and a window of one reading draw without error."""
    from appliance.images import BAND, PLOT_WIDTH, plot_window

    t = np.linspace(0, 6, 32, dtype=np.float32)
    window = np.stack([np.sin(t), np.full_like(t, 2.5), np.cos(t)])
    window[2, 5] = np.nan
    picture = plot_window(window, ["vibration", "pressure"])  # fewer names than channels: "channel 2"
    assert picture.shape == (3 * BAND, PLOT_WIDTH, 3) and picture.dtype == np.uint8
    for band in range(3):  # every band has its trace and label on white
        assert (picture[band * BAND : (band + 1) * BAND] < 200).any(axis=2).sum() > 50, band
    images = ImageStore(tmp_path / "images")
    ref = images.put(window, picture)
    kept = cv2.imread(str(images.source(ref)), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(kept, window)  # NaN included
    shown = cv2.imread(str(images.path(ref)), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(shown, picture)
    assert plot_window(np.array([[1.0], [2.0]], np.float32)).shape == (2 * BAND, PLOT_WIDTH, 3)
    # units the plot's font cannot draw are spelled out: a "°C" label reads as "degC", as drawn here
    expected = np.full((BAND, PLOT_WIDTH, 3), 255, np.uint8)
    cv2.putText(expected, "T [degC]  1 .. 2", (4, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (60, 60, 60), 1, cv2.LINE_AA)
    drawn = plot_window(np.array([[1.0, 2.0]], np.float32), ["T [°C]"])
    np.testing.assert_array_equal(drawn[:14, :200], expected[:14, :200])
