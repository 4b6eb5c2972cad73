"""The anomaly detector: train on normal images → calibrate → bundle → onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

from connectors.synthetic import SyntheticLine
from models import bundle as bundle_io
from models.detector.model import Detector, DetectorConfig
from models.detector.synthetic import synthesize
from models.inference import Inferencer
from models.preprocess import InputSpec, preprocess_batch

SIZE = 32
SPEC = InputSpec(kind="image", channels=1, size=(SIZE, SIZE))


@pytest.fixture(scope="module")
def frames():
    return [p.image for p in SyntheticLine(size=64, defect_rate=0.0, seed=7).take(72)]


@pytest.fixture(scope="module", params=["draem", "autoencoder"])
def trained(request, frames):
    config = DetectorConfig(
        method=request.param,
        size=SIZE,
        ae_widths=(8, 16),
        clf_width=8,
        clf_depth=1,
        epochs=2,
        batch_size=8,
        holdout=0.3,
    )
    detector = Detector(config)
    summary = detector.fit(preprocess_batch(frames, SPEC))
    return detector, summary


def test_fit_calibrates_on_held_out_normal_images(trained):
    detector, summary = trained
    cal = detector.calibration
    assert summary["holdout_images"] == 22 and summary["train_images"] == 50
    assert cal.n == 22 and cal.median <= cal.t1 <= cal.t2
    assert np.isfinite(summary["final_cost"]) and len(detector.history) == 2


def test_onnxruntime_serves_what_the_engine_computes(trained, frames, tmp_path):
    detector, _ = trained
    path = tmp_path / "detector.zip"
    detector.to_bundle(SPEC, provenance={"dataset_digest": "abc"}).save(path)
    inferencer = Inferencer(path)
    kind = "detector" if detector.config.method == "draem" else "autoencoder"
    assert inferencer.kind == kind
    batch = frames[:6]
    results = inferencer.predict_batch(batch)
    x = preprocess_batch(batch, SPEC)
    engine_maps = detector.anomaly_maps(x)
    served_maps = np.stack([r.anomaly_map for r in results])
    assert np.abs(served_maps - engine_maps).max() <= 1e-4
    np.testing.assert_allclose([r.score for r in results], detector.scores(x), rtol=1e-4, atol=1e-6)
    cal = detector.calibration
    for r in results:
        expected = "ng" if r.score >= cal.t2 else "review" if r.score >= cal.t1 else "ok"
        assert r.decision == expected and 0 <= r.norm_score <= 1 and r.latency_ms > 0
    meta = bundle_io.load(path).meta
    assert meta["provenance"]["dataset_digest"] == "abc" and meta["postprocess"]["calibration"]["t2"] == cal.t2


def test_bundle_reloads_into_a_detector(trained, frames, tmp_path):
    detector, _ = trained
    path = tmp_path / "d.zip"
    detector.to_bundle(SPEC).save(path)
    again = Detector.from_bundle(bundle_io.load(path))
    x = preprocess_batch(frames[:4], SPEC)
    np.testing.assert_allclose(again.anomaly_maps(x), detector.anomaly_maps(x), atol=1e-6)
    assert again.calibration == detector.calibration


def test_bad_training_input_is_refused(frames):
    detector = Detector(DetectorConfig(size=SIZE, ae_widths=(8,), clf_width=4, clf_depth=1, epochs=1))
    with pytest.raises(ValueError, match=r"expected \(N, 1, 32, 32\)"):
        detector.fit(np.zeros((40, 1, 16, 16), np.float32))
    bad = preprocess_batch(frames[:40], SPEC)
    bad[3, 0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        detector.fit(bad)
    with pytest.raises(ValueError, match="need at least"):
        detector.fit(preprocess_batch(frames[:21], SPEC))
    with pytest.raises(RuntimeError, match="not trained"):
        detector.to_bundle(SPEC)
    with pytest.raises(ValueError, match="method must be one of"):
        DetectorConfig(method="patchcore")


def test_synthetic_anomalies_mark_what_they_change():
    rng = np.random.default_rng(0)
    images = preprocess_batch([p.image for p in SyntheticLine(size=64, defect_rate=0.0, seed=3).take(64)], SPEC)
    augmented, masks = synthesize(images, rng, probability=0.5)
    visibly_changed = np.abs(augmented - images).max(axis=(1, 2, 3)) > 0.02
    has_mask = masks.reshape(64, -1).max(axis=1) > 0
    assert 20 <= has_mask.sum() <= 44  # about half of the images get an anomaly
    assert np.array_equal(has_mask, visibly_changed)
    assert np.abs(augmented - images)[masks == 0].max() <= 0.02  # unlabelled changes are invisible ones
    assert masks.min() == 0 and masks.max() == 1 and augmented.min() >= 0 and augmented.max() <= 1


# -- sensor vectors and windows ------------------------------------------------------------------
def sensor_windows(n: int, rng: np.random.Generator, anomalous: bool = False) -> np.ndarray:
    """Three correlated channels over 32 steps: a sine, its phase-shifted copy, their sum."""
    t = np.arange(32) / 32
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    a = np.sin(2 * np.pi * 2 * t + phase)
    b = np.sin(2 * np.pi * 2 * t + phase + 1.0)
    w = np.stack([a, b, a + b], axis=1) + 0.05 * rng.normal(size=(n, 3, 32))
    if anomalous:  # the third channel stops following the other two
        w[:, 2, 16:] += rng.choice([-1, 1], (n, 1)) * rng.uniform(0.8, 1.5, (n, 1))
    return w.astype(np.float32)


@pytest.mark.parametrize("model,shape", [("conv1d", (3, 32)), ("dense", (96,))])
def test_vector_detector_flags_broken_correlations(tmp_path, model, shape):
    from models.detector.vector import VectorDetector, VectorDetectorConfig
    from models.metrics import image_auroc

    rng = np.random.default_rng(0)
    normal = sensor_windows(400, rng).reshape(-1, *shape)
    detector = VectorDetector(VectorDetectorConfig(shape=shape, model=model, epochs=40))
    detector.fit(normal)
    test_normal, test_bad = (
        sensor_windows(100, rng).reshape(-1, *shape),
        sensor_windows(100, rng, True).reshape(-1, *shape),
    )
    path = tmp_path / "sensor.zip"
    detector.to_bundle().save(path)
    inferencer = Inferencer(path)
    served = [r.score for r in inferencer.predict_batch(list(np.r_[test_normal, test_bad]))]
    np.testing.assert_allclose(served, detector.scores(np.r_[test_normal, test_bad]), rtol=1e-4, atol=1e-6)
    assert image_auroc(np.array(served), np.r_[np.zeros(100), np.ones(100)]) > 0.95
    false_alarms = np.mean([r.decision == "ng" for r in inferencer.predict_batch(list(test_normal))])
    assert false_alarms <= 0.06  # calibrated at 1 %; 100 fresh normal windows


def test_defect_types_are_named_for_flagged_items(tmp_path):
    line = SyntheticLine(size=64, defect_rate=1.0, defect_kinds=["crack", "contamination"], seed=11)
    parts = line.take(64)
    names = ["crack", "contamination"]
    normal = [p.image for p in SyntheticLine(size=64, defect_rate=0.0, seed=12).take(60)]
    detector = Detector(DetectorConfig(size=SIZE, ae_widths=(8, 16), clf_width=8, clf_depth=1, epochs=2, batch_size=8))
    detector.fit(preprocess_batch(normal, SPEC))
    x = preprocess_batch([p.image for p in parts], SPEC)
    labels = np.array([names.index(p.defect) for p in parts])
    summary = detector.fit_defect_types(x, labels, names, epochs=3)
    assert 0 <= summary["train_accuracy"] <= 1
    path = tmp_path / "typed.zip"
    detector.to_bundle(SPEC).save(path)
    inferencer = Inferencer(path)
    assert "defect_type" in inferencer.output_names and inferencer.labels == names
    inferencer.set_thresholds(0.0, 0.0)  # everything flagged: every item gets a type
    assert {r.label for r in inferencer.predict_batch([p.image for p in parts[:8]])} <= set(names)
    inferencer.set_thresholds(1e9, 1e9)  # nothing flagged: no type
    assert all(r.label is None for r in inferencer.predict_batch([p.image for p in parts[:8]]))
    again = Detector.from_bundle(bundle_io.load(path))
    assert again.defect_types == names and again.type_head is not None
    with pytest.raises(ValueError, match="one label in"):
        detector.fit_defect_types(x, labels + 5, names)
