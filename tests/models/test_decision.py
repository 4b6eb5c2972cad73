"""The decision, made in one place: thresholds, N-of-M debounce, and what raises an alert."""

from __future__ import annotations

import math

import pytest

from models.decision import Debounce, ThresholdError, Thresholds, decide, is_flagged


def test_thresholds_refuse_nan_and_t1_above_t2():
    with pytest.raises(ThresholdError, match=r"T1 \(0.6\) must not exceed T2 \(0.5\)"):
        Thresholds(0.6, 0.5)
    with pytest.raises(ThresholdError):
        Thresholds(math.nan, 1.0)
    assert Thresholds(math.inf, math.inf).t2 == math.inf  # an uncalibrated model never flags


def test_thresholds_a_person_sets_must_be_finite():
    with pytest.raises(ThresholdError, match="must be finite"):
        Thresholds.checked(0.1, math.inf)
    assert Thresholds.checked(1, 2) == Thresholds(1.0, 2.0)


def test_debounce_keeps_ng_only_when_n_of_the_last_m_were_ng():
    debounce = Debounce(2, 3)
    got = [decide(s, Thresholds(0.5, 0.8), debounce) for s in (0.9, 0.1, 0.9, 0.9, 0.1, 0.1, 0.9)]
    assert got == ["review", "ok", "ng", "ng", "ok", "ok", "review"]
    with pytest.raises(ThresholdError, match="1 <= N <= M"):
        Debounce(3, 2)


def test_review_and_ng_raise_alerts():
    assert [is_flagged(d) for d in ("ok", "review", "ng")] == [False, True, True]
