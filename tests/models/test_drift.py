"""The drift test's promises: its false-alarm rate per window on an unchanged stream, detection of
a shift, and image statistics that follow what they name."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from models.drift import DriftConfig, compare, image_stats


def windows(rng: np.random.Generator, n: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    return {
        "score": rng.gamma(2.0, 0.1, n) + shift * 0.2,
        "brightness": rng.normal(120.0, 2.0, n) + shift * 2.0,
        "contrast": rng.normal(30.0, 1.0, n),
        "sharpness": rng.normal(5.0, 0.2, n),
    }


@pytest.mark.parametrize("seed", range(2))
def test_an_unchanged_stream_is_called_drifted_at_most_at_alpha_per_window_for_the_reference_one_has(seed):
    """1,000 windows of an unchanged stream against one reference, at alpha 0.01 (min distance
    out of the way): the count of drifted windows stays within the binomial bound of the rate
    promised. (A plain KS p-value test gave 2.4 × alpha on one of these references.)"""
    rng = np.random.default_rng(seed)
    config = DriftConfig(window=100, reference=200, alpha=0.01, min_distance=1e-9)
    reference = windows(rng, 200)
    trials = 1000
    fired = sum(any(t.drifted for t in compare(reference, windows(rng, 100), config)) for _ in range(trials))
    bound = stats.binom.ppf(0.999, trials, config.alpha)  # fails by chance once in a thousand runs
    assert fired <= bound, f"{fired} of {trials} windows drifted; at most {bound:.0f} expected at alpha 0.01"


def test_the_default_alpha_stays_quiet_and_a_shift_is_seen_in_one_window():
    rng = np.random.default_rng(1)
    config = DriftConfig()
    reference = windows(rng, config.reference)
    assert not any(t.drifted for _ in range(300) for t in compare(reference, windows(rng, config.window), config)), (
        "an unchanged stream was called drifted at the default alpha"
    )
    tests = {t.feature: t for t in compare(reference, windows(rng, config.window, shift=1.0), config)}
    assert tests["brightness"].drifted and tests["score"].drifted
    assert not tests["contrast"].drifted and not tests["sharpness"].drifted
    assert tests["brightness"].after_median > tests["brightness"].before_median


def test_a_tiny_shift_is_not_a_drift_however_sure_the_test_is():
    """The minimum distance: a shift proven by many frames but too small to matter stays quiet."""
    rng = np.random.default_rng(2)
    config = DriftConfig(window=5000, reference=5000, min_distance=0.25)
    tests = {t.feature: t for t in compare(windows(rng, 5000), windows(rng, 5000, shift=0.2), config)}
    assert tests["brightness"].p_value < 1e-6 and not tests["brightness"].drifted


def test_the_score_is_tested_only_with_enough_normal_looking_scores():
    rng = np.random.default_rng(3)
    current = windows(rng, 200)
    current["score"] = current["score"][:10]
    assert "score" not in {t.feature for t in compare(windows(rng, 400), current, DriftConfig())}


def test_image_statistics_follow_light_contrast_and_focus():
    rng = np.random.default_rng(4)
    base = np.clip(rng.normal(128, 40, (256, 256)), 0, 255).astype(np.uint8)
    b, c, s = image_stats(base)
    assert image_stats((base * 0.5).astype(np.uint8))[0] < b * 0.6
    assert image_stats(((base.astype(float) - 128) * 0.3 + 128).astype(np.uint8))[1] < c * 0.5
    import cv2

    assert image_stats(cv2.GaussianBlur(base, (9, 9), 3))[2] < s - 1
    colour = np.repeat(base[..., None], 3, axis=2)
    assert image_stats(colour) == pytest.approx((b, c, s), rel=1e-3)


@pytest.mark.parametrize("bad", [{"window": 5}, {"alpha": 0.0}, {"min_distance": 2.0}])
def test_a_config_that_cannot_work_is_refused(bad):
    with pytest.raises(ValueError, match="drift"):
        DriftConfig(**bad)
