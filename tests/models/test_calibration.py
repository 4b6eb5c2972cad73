"""Calibration on normal data only: false-alarm rates hold on fresh data, no minimum-score trap."""

from __future__ import annotations

import numpy as np
import pytest

from models.calibration import (
    CalibrationError,
    calibrate,
    calibrate_only_split,
    holdout_split,
    max_f1_threshold,
    normalize,
    twins_across,
)
from models.decision import Thresholds, decide

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    "n,rate,method",
    [(5000, 0.01, "quantile-ucb"), (300, 0.01, "gpd-ucb"), (40, 0.01, "gpd-ucb"), (300, 0.001, "gpd-ucb")],
)
@pytest.mark.parametrize("law", ["gamma", "lognormal"])
def test_false_alarm_rate_holds_on_fresh_normal_data(n, rate, method, law):
    """T2 is a 90 % upper confidence bound: over many calibrations on ``n`` scores of a known law,
    fresh normal items exceed it at most at the nominal rate about nine times in ten and at most
    at twice it almost always (nine in ten when the rate lies below 1 / n), without calling it
    safe to flag nothing (median rate ≥ rate / 25)."""
    from scipy import stats

    dist = stats.gamma(2.0) if law == "gamma" else stats.lognorm(0.5)
    observed = []
    for seed in range(40):
        cal = calibrate(dist.rvs(size=n, random_state=np.random.default_rng(seed)), false_alarm_rate=rate)
        assert cal.method == method and cal.n == n
        observed.append(dist.sf(cal.t2))
    observed = np.asarray(observed)
    far = rate * n < 1  # a rate below 1 / n: the tail fit extrapolates beyond every score it saw
    assert np.mean(observed <= rate) >= 0.8 and np.mean(observed <= 2 * rate) >= (0.9 if far else 0.95)
    assert np.median(observed) >= rate / 25


def test_review_band_sits_below_the_ng_threshold():
    cal = calibrate(RNG.normal(0, 1, 2000), false_alarm_rate=0.01)
    assert cal.t1 < cal.t2
    assert cal.t1 == pytest.approx(np.quantile(RNG.normal(0, 1, 400_000), 0.9), abs=0.1)
    assert decide(cal.t1 - 1e-9, Thresholds(cal.t1, cal.t2)) == "ok"
    assert decide(cal.t1, Thresholds(cal.t1, cal.t2)) == "review"
    assert decide(cal.t2, Thresholds(cal.t1, cal.t2)) == "ng"


def test_thresholds_never_fall_into_the_minimum_score_trap():
    """anomalib once took the minimum normal score as threshold and flagged everything."""
    scores = np.r_[np.zeros(50), RNG.uniform(0.5, 1.0, 50)]  # many identical minima
    cal = calibrate(scores, 0.05)
    assert cal.t2 >= np.quantile(scores, 0.9) and cal.t1 >= np.median(scores)
    assert (scores >= cal.t2).mean() <= 0.1


def test_normalised_score_puts_t2_at_one_half():
    median, t2 = 1.0, 3.0
    values = normalize([0.0, 1.0, 2.0, 3.0, 5.0, 100.0], median, t2)
    np.testing.assert_allclose(values[:4], [0.0, 0.0, 0.25, 0.5])
    assert 0.5 < values[4] < values[5] <= 1.0
    assert np.all(np.diff(normalize(np.linspace(0, 10, 101), median, t2)) >= 0)


def test_max_f1_with_labelled_defects():
    normal, defect = RNG.normal(0, 1, 500), RNG.normal(4, 1, 50)
    threshold, f1 = max_f1_threshold(normal, defect)
    assert 1.0 < threshold < 4.0 and f1 > 0.8


@pytest.mark.parametrize(
    "scores,kwargs,message",
    [
        (np.ones(5), {}, "at least 20"),
        (np.array([]), {"upper": 1.0}, "at least 20"),
        (np.r_[np.ones(30), np.nan], {}, "NaN"),
        (np.ones(30), {"false_alarm_rate": 0.7}, "false_alarm_rate"),
        (np.ones(30), {"false_alarm_rate": 5e-324}, "false_alarm_rate"),  # found by schemathesis
        (np.ones(30), {"false_alarm_rate": 0.1, "review_rate": 0.05}, "review_rate"),
    ],
)
def test_bad_calibration_input(scores, kwargs, message):
    with pytest.raises(CalibrationError, match=message):
        calibrate(scores, **kwargs)


def test_aupro_is_one_for_a_perfect_map_about_half_max_fpr_for_noise_and_zero_inverted() -> None:
    from models.metrics import aupro

    masks = np.zeros((3, 16, 16))
    masks[0, 2:5, 2:5] = 1
    masks[1, 10:14, 1:3] = 1  # two regions of different sizes weigh the same
    masks[1, 1:2, 12:13] = 1
    noise = np.random.default_rng(0).random(masks.shape)
    assert aupro(masks, masks) == pytest.approx(1.0)
    many = np.zeros((40, 32, 32))
    many[:, 10:16, 8:14] = 1
    assert aupro(np.random.default_rng(1).random(many.shape), many) == pytest.approx(0.15, abs=0.02)
    assert aupro(-masks + 0.01 * noise, masks) == pytest.approx(0.0, abs=1e-9)
    assert aupro(np.zeros(masks.shape), masks) == pytest.approx(0.15)  # one threshold: as good as chance
    with pytest.raises(ValueError, match="at least one defect region"):
        aupro(noise, np.zeros(masks.shape))


def test_max_f1_never_flags_most_normal_items_even_when_defects_outnumber_them() -> None:
    rng = np.random.default_rng(0)
    normal, defects = rng.normal(0, 1, 90), rng.normal(0.3, 1, 360)  # a weak model, 80 % defects
    t, f1 = max_f1_threshold(normal, defects)
    assert np.mean(normal >= t) <= 0.5  # not the "everything is a defect" trap (F1 0.89 there)
    assert 0 < f1 <= 1
    clean_t, clean_f1 = max_f1_threshold([0.1, 0.2, 0.3], [0.8, 0.9])
    assert 0.3 < clean_t <= 0.8 and clean_f1 == 1.0


def test_a_bounded_score_is_never_given_a_threshold_it_cannot_reach():
    """DRAEM's image score is a defect probability: 20 spread scores extrapolated on the raw scale
    put T2 above 1, where no part could ever be flagged; on -log(1 - score) it stays below 1."""
    scores = np.random.default_rng(3).beta(8, 6, 20)  # probabilities around 0.57, tail towards 1
    assert calibrate(scores, 0.01).t2 > 1.0  # the unbounded fit: unreachable
    cal = calibrate(scores, 0.01, upper=1.0)
    assert scores.max() <= cal.t2 < 1.0 and cal.t1 <= cal.t2 and cal.upper == 1.0
    # order statistics are the same either way: with many scores the two agree
    many = np.random.default_rng(4).beta(8, 6, 5000)
    assert calibrate(many, 0.01, upper=1.0).t2 == pytest.approx(calibrate(many, 0.01).t2)
    with pytest.raises(CalibrationError, match="attainable maximum"):
        calibrate(np.r_[scores, 1.5], 0.01, upper=1.0)


def test_holdout_orders_random_latest_and_blocks() -> None:
    r1, t1 = holdout_split(100, 0.2, 16, seed=3)  # random by default, reproducible by seed
    r2, _ = holdout_split(100, 0.2, 16, seed=3, order="random")
    assert r1.tolist() == r2.tolist() and len(r1) == 20 and sorted([*r1, *t1]) == list(range(100))
    held, train = holdout_split(100, 0.2, 16, seed=3, order="latest")
    assert held.tolist() == list(range(80, 100)) and train.tolist() == list(range(80))
    held, train = holdout_split(200, 0.2, 16, seed=3, order="blocks")  # 5 runs of 8, one per fifth
    assert len(held) == 40 and sorted([*held, *train]) == list(range(200))
    runs = np.split(np.sort(held), np.flatnonzero(np.diff(np.sort(held)) > 1) + 1)
    assert [len(r) for r in runs] == [8] * 5 and [int(r[0]) // 40 for r in runs] == [0, 1, 2, 3, 4]
    held, _ = holdout_split(50, 0.2, 16, seed=3, order="latest")  # never fewer than 20 held out
    assert held.tolist() == list(range(30, 50))
    with pytest.raises(CalibrationError, match="holdout order must be one of"):
        holdout_split(100, 0.2, 16, seed=3, order="oldest")
    with pytest.raises(CalibrationError, match="need at least 36 normal samples"):
        holdout_split(35, 0.2, 16, seed=3)


def test_holdout_keeps_near_twins_on_one_side() -> None:
    n, rng = 200, np.random.default_rng(0)
    assert holdout_split(n, 0.2, 16, seed=3, twins=np.zeros((n, n), bool))[0].tolist() == (
        holdout_split(n, 0.2, 16, seed=3)[0].tolist()  # no twins: the plain random split
    )
    # overlapping views of a long surface: each image shares content with 3 neighbours on each side
    position = rng.permutation(n)
    chain = np.abs(position[:, None] - position[None]) <= 3
    np.fill_diagonal(chain, False)
    # and each of 40 parts seen in 5 successive frames
    frames = np.repeat(np.arange(40), 5)[:n]
    repeats = (frames[:, None] == frames[None]) & ~np.eye(n, dtype=bool)
    for twins in (chain, repeats):
        held, train = holdout_split(n, 0.2, 16, seed=3, twins=twins)
        assert len(held) == 40 and len(train) >= 16 and not set(held) & set(train)
        assert twins_across(held, train, twins) == 0  # no calibration item keeps a twin in training
        left_out = n - len(held) - len(train)
        assert left_out <= 40 and (left_out == 0) == (twins is repeats)  # whole groups leave nothing out
    places = np.sort(position[holdout_split(n, 0.2, 16, seed=3, twins=chain)[0]])
    assert (np.diff(places) > 1).sum() + 1 >= 3  # the surface is held out in several places, not one
    # every item a twin of every other (parts that look alike): no split can help, the random one
    alike = ~np.eye(n, dtype=bool)
    held, train = holdout_split(n, 0.2, 16, seed=3, twins=alike)
    assert held.tolist() == holdout_split(n, 0.2, 16, seed=3)[0].tolist() and len(train) == n - 40
    assert twins_across(held, train, alike) == 40


def test_images_to_calibrate_on_only_are_split_in_the_shares_of_the_good_ones():
    """A fifth to the test, the detector's calibration share (a fifth) of the rest to its
    calibration, none anywhere else: the band is as present in each as among the good parts."""
    to_test, to_fit = calibrate_only_split(20_000, 0.2, 0.2)
    assert not (to_test & to_fit).any()
    assert to_test.mean() == pytest.approx(0.2, abs=0.01) and to_fit.mean() == pytest.approx(0.16, abs=0.01)
    assert [m.sum() for m in calibrate_only_split(0, 0.2, 0.2)] == [0, 0]
