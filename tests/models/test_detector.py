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


def test_fit_calibrates_on_held_out_normal_images(trained, frames):
    detector, summary = trained
    cal = detector.calibration
    assert summary["holdout_images"] == 22 and summary["train_images"] == 50
    assert cal.n == 22 and cal.median <= cal.t1 <= cal.t2
    x = preprocess_batch(frames, SPEC)
    held = detector.holdout(x).held
    held_scores = detector.scores(x[held])  # what T1/T2 rest on
    assert cal.median == pytest.approx(float(np.median(held_scores)), rel=1e-5)
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
    good = preprocess_batch(frames[:40], SPEC)
    for also, message in ((good[:3, :, :16, :16], r"images to calibrate on have shape"), (bad[:5], "NaN")):
        with pytest.raises(ValueError, match=message):  # refused before any training, not after it
            detector.fit(good, calibrate_also=also)
    assert not detector.history
    with pytest.raises(RuntimeError, match="not trained"):
        detector.to_bundle(SPEC)
    with pytest.raises(ValueError, match="method must be one of"):
        DetectorConfig(method="patchcore")
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        DetectorConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="clf_stem_stride must be 1"):
        DetectorConfig(clf_stem_stride=4)
    with pytest.raises(ValueError, match="holdout_order must be one of"):
        DetectorConfig(holdout_order="oldest")


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [("step", [1.0, 1.0, 0.2, 0.04, 0.04]), ("cosine", [1.0, 0.5, 0.0955, 0.0245, 0.0]), ("constant", [1.0] * 5)],
)
def test_learning_rate_schedules_decay_over_the_fit(schedule, expected):
    """The default ("step", as DRAEM) drops the rate to a fifth at 80 % of the steps and again at 90 %."""
    scheduler = Detector(DetectorConfig(lr_schedule=schedule, lr=1e-3))._scheduler(1000)
    rates = [1e-3 if scheduler is None else scheduler(i) for i in (0, 500, 800, 900, 1000)]
    assert rates == pytest.approx([1e-3 * e for e in expected], abs=1e-7)


def test_training_shows_the_good_images_under_weaker_and_stronger_light():
    """Lamps age and daylight comes in: training shows each good image with its light up to
    ``light_jitter`` weaker or stronger (one gain per image, what would pass full scale saturates),
    so that the defect map does not call a whole frame defective for its brightness alone."""
    detector = Detector(DetectorConfig(size=SIZE, ae_widths=(8, 16), clf_width=8, clf_depth=1, light_jitter=0.2))
    detector._rng = np.random.default_rng(0)
    x = np.random.default_rng(1).uniform(0.2, 0.9, (64, 1, SIZE, SIZE)).astype(np.float32)
    lit = detector._light(x)
    unsaturated = lit < 1.0
    gain = np.array([np.median((li / xi)[u]) for li, xi, u in zip(lit, x, unsaturated, strict=True)])
    np.testing.assert_allclose(lit[unsaturated], (x * gain[:, None, None, None])[unsaturated], rtol=1e-5)
    assert 0.8 <= gain.min() < 0.9 and 1.1 < gain.max() <= 1.2  # both ways, within the share
    assert lit.max() == 1.0 and lit.dtype == np.float32  # saturated, as a camera's pixels
    detector.config.light_jitter = 0.0
    assert detector._light(x) is x
    with pytest.raises(ValueError, match=r"light_jitter \(the light tolerance\) must be in \[0, 0.5\), got 0.5"):
        DetectorConfig(light_jitter=0.5)


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


def test_every_mask_family_and_the_texture_source_make_anomalies():
    """Perlin blobs, lines and patches each mark a region; every procedural texture varies and fills
    the image's shape (colour fills tinted per channel); opacity runs from faint to opaque."""
    from models.detector import synthetic as syn

    rng = np.random.default_rng(1)
    for make in (syn.blob_mask, syn.line_mask, syn.patch_mask):
        masks = [make(32, 32, rng) for _ in range(20)]
        assert all(0 < m.sum() < 32 * 32 * 0.6 and set(np.unique(m)) <= {0.0, 1.0} for m in masks), make.__name__
    bank = syn.texture_bank(32)
    assert len(bank) == 2 * len(syn.TEXTURES) and all(t.shape == (64, 64) and np.ptp(t) > 0.5 for t in bank)
    grey, colour = syn.texture_fill((1, 32, 32), rng), syn.texture_fill((3, 32, 32), rng)
    assert grey.shape == (1, 32, 32) and colour.shape == (3, 32, 32) and 0 <= colour.min() <= colour.max() <= 1
    images = np.full((400, 1, 32, 32), 0.5, np.float32)
    augmented, masks = synthesize(images, np.random.default_rng(2), probability=1.0)
    change = np.array(
        [np.abs(a - i)[m > 0].mean() for a, i, m in zip(augmented, images, masks, strict=True) if m.any()]
    )
    assert np.quantile(change, 0.1) < 0.06 and np.quantile(change, 0.9) > 0.18  # faint ones and strong ones


def test_a_colour_detector_finds_a_stain_that_only_turns_the_hue():
    """Equal brightness, another hue: a grey detector cannot see it, a colour one must."""
    import cv2

    rng = np.random.default_rng(4)
    base = np.zeros((64, 64, 3), np.uint8)
    base[:] = (60, 140, 200)  # an orange-ish surface (BGR)

    def part(stain: bool) -> np.ndarray:
        img = np.clip(base.astype(np.float32) + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        if stain:
            hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
            blob = np.zeros((64, 64), np.uint8)
            cv2.circle(blob, (int(rng.integers(16, 48)), int(rng.integers(16, 48))), 9, 1, -1)
            hsv[..., 0] = np.where(blob > 0, (hsv[..., 0].astype(int) + 60) % 180, hsv[..., 0])
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
            grey_change = np.abs(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(int) - 136)[blob > 0].mean()
            assert grey_change < 25  # hardly visible in grey
        return img

    normal = [part(False) for _ in range(60)]
    test = [part(False) for _ in range(20)] + [part(True) for _ in range(20)]
    truth = np.r_[np.zeros(20), np.ones(20)]
    from sklearn.metrics import roc_auc_score

    aurocs = {}
    for channels in (1, 3):
        spec = InputSpec(kind="image", channels=channels, size=(SIZE, SIZE))
        config = DetectorConfig(size=SIZE, channels=channels, ae_widths=(8, 16), clf_width=8, clf_depth=1, epochs=25)
        detector = Detector(config)
        detector.fit(preprocess_batch(normal, spec))
        aurocs[channels] = roc_auc_score(truth, detector.scores(preprocess_batch(test, spec)))
    assert aurocs[3] >= 0.9 and aurocs[3] > aurocs[1] + 0.15, aurocs


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


VECTOR_KINDS = [
    ("kde", (3, 32)),
    ("knn", (96,)),
    ("gauss", (96,)),
    ("ensemble", (3, 32)),
    ("conv1d", (3, 32)),
    ("dense", (96,)),
]


@pytest.mark.parametrize("model,shape", VECTOR_KINDS)
def test_vector_detector_flags_broken_correlations(tmp_path, model, shape):
    from models.detector.vector import VectorDetector, VectorDetectorConfig
    from models.metrics import image_auroc

    rng = np.random.default_rng(0)
    normal = sensor_windows(400, rng).reshape(-1, *shape)
    detector = VectorDetector(VectorDetectorConfig(shape=shape, model=model, epochs=40))
    summary = detector.fit(normal)
    assert summary["calibration"]["n"] >= 80  # leave-one-out / out-of-fold: every window, or the held-out 20 %
    test_normal, test_bad = (
        sensor_windows(100, rng).reshape(-1, *shape),
        sensor_windows(100, rng, True).reshape(-1, *shape),
    )
    path = tmp_path / "sensor.zip"
    detector.to_bundle().save(path)
    inferencer = Inferencer(path)
    served = [r.score for r in inferencer.predict_batch(list(np.r_[test_normal, test_bad]))]
    engine = detector.scores(np.r_[test_normal, test_bad])
    # float32 distances in the graph against float64 here: within a thousandth of the scores' spread
    np.testing.assert_allclose(served, engine, rtol=1e-3, atol=1e-3 * np.std(engine))
    assert image_auroc(np.array(served), np.r_[np.zeros(100), np.ones(100)]) > 0.95
    false_alarms = np.mean([r.decision == "ng" for r in inferencer.predict_batch(list(test_normal))])
    assert false_alarms <= 0.06  # calibrated at 1 %; 100 fresh normal windows


@pytest.mark.parametrize("model,shape", VECTOR_KINDS)
def test_every_vector_kind_calibrates_on_20_normal_samples_and_refuses_fewer(tmp_path, model, shape):
    from models.calibration import CalibrationError
    from models.detector.vector import VectorDetector, VectorDetectorConfig

    rng = np.random.default_rng(1)
    config = VectorDetectorConfig(shape=shape, model=model, epochs=20)
    summary = VectorDetector(config).fit(sensor_windows(20, rng).reshape(-1, *shape))
    assert summary["calibration"]["n"] == 20  # the threshold rests on all 20, none of them fitted
    assert summary["calibrated_on"].startswith("20 ")
    assert "extrapolated" in summary["warning"]  # 1 % lies below what 20 scores can show (1/21)
    with pytest.raises(CalibrationError, match="at least 20 normal samples"):
        VectorDetector(config).fit(sensor_windows(19, rng).reshape(-1, *shape))


def test_leave_one_out_scores_are_what_a_new_sample_would_get():
    from models.detector.vector import kde_scores, knn_scores, loo_bandwidth

    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 4))
    h = loo_bandwidth(x, 0)
    loo_knn, loo_kde = knn_scores(x, x, 3, exclude_self=True), kde_scores(x, x, h, exclude_self=True)
    for i in (0, 17, 49):
        others = np.delete(x, i, axis=0)
        assert loo_knn[i] == pytest.approx(knn_scores(x[i : i + 1], others, 3)[0])
        assert loo_kde[i] == pytest.approx(kde_scores(x[i : i + 1], others, h)[0])
    # the likeliest bandwidth of a standard normal sample is near Silverman's rule (~0.9 here)
    assert 0.3 < h < 1.5


def test_nnc_sine_wave_tutorial_is_reproduced(tmp_path):
    """NNC's sensor tutorial: a sine wave with short noise bursts, a 1-D conv autoencoder, the
    largest squared error over time as the score."""
    from appliance.datasets.create import create_sample
    from appliance.workflows import sensor_detector

    create_sample("sine_anomaly", tmp_path)
    model = tmp_path / "sine.zip"
    fit = {"window": 64, "hop": 16, "epochs": 40, "false_alarm_rate": 0.01, "log": lambda line: None}
    sensor_detector.fit(tmp_path / "normal.csv", model, method="conv1d", score="max", **fit)
    report = sensor_detector.report(model, tmp_path / "test.csv", log=lambda line: None)
    assert report["image_auroc"] > 0.95 and set(report["per_defect"]) == {"burst"}
    meta = Inferencer(model).meta
    assert meta["provenance"]["config"]["score"] == "max" and meta["postprocess"]["method"] == "conv1d"


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


def test_appearance_features_are_the_frames_statistics():
    """Mean, spread, edges and 4 × 4 cell means per channel, relative to the mean (computed in
    float32 with float64 sums): the same figures as plain float64 arithmetic."""
    from models.scoring import GRID, appearance_features

    rng = np.random.default_rng(3)
    x = rng.random((5, 3, 66, 70), dtype=np.float32) * np.float32(0.8)
    got = appearance_features(x)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(2, 3))
    edges = np.abs(np.diff(x64, axis=3)).mean(axis=(2, 3)) + np.abs(np.diff(x64, axis=2)).mean(axis=(2, 3))
    cells = x64[:, :, :64, :68].reshape(5, 3, GRID, 16, GRID, 17).mean(axis=(3, 5)).reshape(5, 3, -1)
    relative = np.concatenate([x64.std(axis=(2, 3))[..., None], edges[..., None], cells], axis=2)
    expected = np.concatenate([mean, (relative / (mean + 0.05)[..., None]).reshape(5, -1)], axis=1)
    assert got.shape == (5, 3 * (3 + GRID * GRID))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_frames_unlike_the_good_parts_as_a_whole_are_ng(trained, frames, tmp_path):
    """A detector of local defects can pass a frame with no part at all (a flat grey frame is easy
    to restore and has no local defect) or a part far off its place. The appearance check raises
    those to NG, labelled as unlike the good parts, served as the engine computes it; good parts,
    also under light 10 % weaker or stronger, keep their scores."""
    from models.scoring import UNLIKE, AppearanceCheck

    detector, _ = trained
    check = detector.appearance
    assert check is not None and check.limit >= 4.0
    path = tmp_path / "d.zip"
    detector.to_bundle(SPEC).save(path)
    inferencer = Inferencer(path)
    part = frames[0]
    odd = [np.full_like(part, 128), np.roll(part, part.shape[1] // 4, axis=1), np.zeros_like(part)]
    goods = [*frames[-6:], *(np.clip(f * gain, 0, 255).astype(np.uint8) for f in frames[-6:] for gain in (0.9, 1.1))]
    results = inferencer.predict_batch(odd + goods)
    x = preprocess_batch(odd + goods, SPEC)
    assert all(r.decision == "ng" and r.label == UNLIKE for r in results[:3])
    assert not (check.distances(x[3:]) > check.limit).any()
    np.testing.assert_allclose([r.score for r in results], detector.scores(x), rtol=1e-4, atol=1e-6)
    assert all(r.label is None for r in results[3:])
    again = Detector.from_bundle(bundle_io.load(path))
    np.testing.assert_allclose(again.appearance.distances(x), check.distances(x))
    scores = np.full(3, 0.1)  # beyond the limit a score grows with the distance, below the maximum
    raised, unlike = check.apply(scores, x[:3])
    assert unlike.all() and (raised >= check.t2).all() and (check.upper is None or (raised < check.upper).all())
    with pytest.raises(ValueError, match=r"appearance check of \(19,\) features has a \(3, 3\) whitening"):
        AppearanceCheck.from_dict(check.to_dict() | {"whitening": np.eye(3).tolist()})
