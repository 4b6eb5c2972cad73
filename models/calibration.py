"""Thresholds from held-out normal data only, and a normalised score.

- T2 (NG) sits at a chosen false-alarm rate on normal items, estimated honestly for the number of
  samples: with a tail of enough samples, the order statistic that is a 90 % upper confidence
  bound of the quantile (distribution-free, from the binomial law of order statistics); otherwise
  a peaks-over-threshold fit of the tail, which extrapolates to rates below 1/n: the exponential
  tail at the 90 % upper confidence bound of its scale (exact, from its chi-square law), or, where
  the tail is heavier than exponential, the generalised-Pareto fit at the upper bound of its shape. A threshold from 40
  scores is further above the point estimate than one from 4,000, as it should be: new good parts
  then exceed it at most at the nominal rate in nine calibrations out of ten.
- A score with an attainable maximum (DRAEM's defect probability: 1) is extrapolated on
  ``-log(upper - score)``, so a threshold never lands where no score can reach it.
- T1 (review) sits at a higher false-alarm rate (10× by default): OK < T1 ≤ review < T2 ≤ NG.
- ``norm_score`` maps the normal median to 0, T2 to 0.5 and rises towards 1 above it.
- With labelled defects, :func:`max_f1_threshold` offers the F1-optimal threshold as a preset.

Thresholds always come from the upper tail of normal scores: never the minimum-score trap.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

MIN_SCORES = 20  # the fewest normal scores a threshold may rest on
MIN_TAIL = 10  # empirical quantile only when at least this many normal scores lie above it
MIN_RATE = 1e-6  # one false alarm in a million parts: below it no calibration set says anything
CONFIDENCE = 0.9  # T1 and T2 are upper confidence bounds of their quantiles at this level


class CalibrationError(ValueError):
    """Calibration data is unusable."""


@dataclass
class Calibration:
    t1: float
    t2: float
    false_alarm_rate: float
    review_rate: float
    method: str
    n: int
    mean: float
    std: float
    median: float
    q99: float
    max: float
    upper: float | None = None  # the score's attainable maximum, if it has one

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


HOLDOUT_ORDERS = ("latest", "random", "blocks")
HOLDOUT_ORDER = "random"  # the default: see holdout_split


def holdout_split(
    n: int,
    fraction: float,
    min_train: int,
    seed: int,
    order: str = HOLDOUT_ORDER,
    min_held: int = MIN_SCORES,
    twins: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (held out, for training); at least ``min_held`` (by default the fewest scores a
    threshold may rest on) are held out.

    ``random`` (the default): a seeded random share. ``blocks``: contiguous runs of 8 or more, one
    in each of up to 5 equal stretches of the given order (images named by time): consecutive good
    parts can be near-twins (one part in successive frames), and a run leaves fewer of them in
    training than a random pick does, while still spanning the whole collection. ``latest``: the
    last ones, what a later shift would bring; risky when the order follows a slow variation: on
    a photograph scanned strip by strip it held out one region and 40 % of the good parts from
    the others exceeded its T2 at a nominal 1 % (random and blocks: 0 %).

    ``twins`` (random order only): an (n, n) boolean matrix linking items that share content
    (:mod:`models.detector.twins`). No held-out item then keeps a twin in training: groups of
    linked items are held out whole while they fit, in random order (with no links at all this is
    the plain random split), and where groups are too large (over a quarter of the share: a
    continuous surface) compact regions of that size are cut from them, in several places (items
    added by the most links into the region); their twins outside are left out of both sides.
    When that would leave out more items than it holds out, or too few to train on (every item a
    twin of every other: parts that look alike), the plain random split is returned instead; see
    :func:`twins_across`.
    """
    if order not in HOLDOUT_ORDERS:
        msg = f"holdout order must be one of {HOLDOUT_ORDERS}, got {order!r}"
        raise CalibrationError(msg)
    n_hold = max(min_held, int(round(fraction * n)))
    if n - n_hold < min_train:
        msg = f"need at least {n_hold + min_train} normal samples ({n_hold} held out), got {n}"
        raise CalibrationError(msg)
    if order == "blocks":  # contiguous runs of 8 or more, one in each of up to 5 equal stretches
        rng, runs = np.random.default_rng(seed), max(1, min(5, n_hold // 8))
        held = []
        for k, stretch in enumerate(np.array_split(np.arange(n), runs)):
            size = n_hold // runs + (k < n_hold % runs)
            start = int(rng.integers(0, len(stretch) - size + 1))
            held.append(stretch[start : start + size])
        held = np.concatenate(held)
        return held, np.setdiff1d(np.arange(n), held)
    if order == "latest":
        return np.arange(n - n_hold, n), np.arange(n - n_hold)
    ranks = np.random.default_rng(seed).permutation(n)
    if twins is not None and twins.any():
        split = _twin_free_split(np.asarray(twins, bool), n_hold, min_train, seed)
        if split is not None:
            return split
    return ranks[:n_hold], ranks[n_hold:]


def calibrate_only_split(n: int, test_share: float, holdout: float, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Where ``n`` images that may be calibrated and tested on but never trained on go, in the
    shares the good images were split: ``test_share`` of them to the test (or comparison), the
    detector's ``holdout`` share of the rest to its calibration, none in place of the rest (the
    share it trains on). Two boolean masks (to test, to calibrate)."""
    where = np.random.default_rng(seed).random(n)
    return where < test_share, (where >= test_share) & (where < test_share + (1 - test_share) * holdout)


def _twin_free_split(twins: np.ndarray, n_hold: int, min_train: int, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    from scipy.sparse.csgraph import connected_components

    n = len(twins)
    links = (twins | twins.T) & ~np.eye(n, dtype=bool)
    rng = np.random.default_rng(seed)
    piece = max(8, -(-n_hold // 4))  # at least 4 places: one region would show one kind of surface only
    _, groups = connected_components(links, directed=False)
    held = np.zeros(n, bool)
    for g in rng.permutation(groups.max() + 1):  # whole groups (one part's frames), while they fit
        members = groups == g
        if members.sum() <= piece and held.sum() + members.sum() <= n_hold:
            held |= members
        if held.sum() >= n_hold:
            break
    for start in rng.permutation(n):  # the rest: compact regions cut from larger groups
        if held.sum() >= n_hold:
            break
        if held[start] or links[start, held].any():
            continue
        held[start], size = True, 1
        into = links[start].astype(np.int32)  # links from each item into the region
        while held.sum() < n_hold and size < piece:
            gain = np.where(held, 0, into)
            if gain.max() == 0:
                break
            nxt = int(np.argmax(gain))
            held[nxt], size = True, size + 1
            into += links[nxt]
    left_out = links[held].any(axis=0) & ~held
    train = ~held & ~left_out
    if left_out.sum() > n_hold or train.sum() < min_train:
        return None
    return np.flatnonzero(held), np.flatnonzero(train)


def twins_across(held: np.ndarray, train: np.ndarray, twins: np.ndarray) -> int:
    """How many held-out items have a twin among the training items."""
    links = np.asarray(twins, bool) | np.asarray(twins, bool).T
    return int(links[np.ix_(held, train)].any(axis=1).sum())


def check_rate(false_alarm_rate: float) -> None:
    """Refuse a false-alarm rate no calibration can give (before any training is spent on it)."""
    if not MIN_RATE <= false_alarm_rate < 0.5:
        msg = f"false_alarm_rate must be in [{MIN_RATE:g}, 0.5), got {false_alarm_rate}"
        raise CalibrationError(msg)


def _clean(scores: Any, what: str) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not np.isfinite(arr).all():
        msg = f"{what} contain NaN or infinite values"
        raise CalibrationError(msg)
    return arr


def tail_threshold(
    scores: np.ndarray, rate: float, confidence: float = CONFIDENCE, upper: float | None = None
) -> tuple[float, str]:
    """A score that new normal items exceed at most at ``rate``, with probability ``confidence``
    over the draw of ``scores`` (which stay below ``upper`` when given)."""
    if upper is not None:  # order statistics do not change under a monotone map; the tail fit does
        z = -np.log(np.maximum(upper - np.asarray(scores, np.float64), np.finfo(np.float64).tiny))
        value, method = tail_threshold(z, rate, confidence)
        return float(upper - math.exp(-value)), method
    n = len(scores)
    ordered = np.sort(scores)
    rank = int(stats.binom.ppf(confidence, n, 1 - rate)) + 1  # P(X_(rank) >= the (1 - rate) quantile) >= confidence
    if n - rank + 1 >= MIN_TAIL and rank <= n:
        return float(ordered[rank - 1]), "quantile-ucb"
    tail_n = max(MIN_TAIL, min(n // 5, 50))
    u = ordered[-tail_n - 1]
    exceed = ordered[-tail_n:] - u
    if np.ptp(exceed) <= 0:
        return float(ordered[-1]), "max"
    p_u = tail_n / n
    level = 1 - rate / p_u
    if level <= 0:  # the rate lies below the tail: an order statistic of it will do
        return float(ordered[min(n - 1, max(0, int(np.ceil((1 - rate) * n)) - 1))]), "quantile"
    # an exponential tail's scale has a chi-square law: its upper confidence bound is exact and
    # conservative for the light and moderate tails of scores; a heavier tail's GPD fit wins
    k = len(exceed)
    widen = 2 * k / stats.chi2.ppf(1 - confidence, 2 * k)  # the scale's upper bound over its estimate
    value = u + widen * float(exceed.mean()) * -math.log(rate / p_u)  # the exponential's (1 - rate/p_u) quantile
    shape, _, scale = stats.genpareto.fit(exceed, floc=0)
    # the shape's upper bound from its asymptotic standard error (1 + shape) / sqrt(k)
    shape_ucb = shape + stats.norm.ppf(confidence) * (1 + shape) / math.sqrt(k)
    heavy = stats.genpareto.ppf(level, shape_ucb, loc=0, scale=scale)
    if math.isfinite(heavy):
        value = max(value, u + heavy)
    return float(max(value, ordered[-1] if rate < 1 / n else u)), "gpd-ucb"


def calibrate(
    normal_scores: Any, false_alarm_rate: float = 0.01, review_rate: float | None = None, upper: float | None = None
) -> Calibration:
    """Thresholds from scores of held-out normal items (no defects needed); ``upper``: the
    score's attainable maximum, if it has one."""
    scores = _clean(normal_scores, "normal scores")
    if len(scores) < MIN_SCORES:
        msg = f"calibration needs at least {MIN_SCORES} held-out normal scores, got {len(scores)}"
        raise CalibrationError(msg)
    if upper is not None and not scores.max() <= upper:
        msg = f"normal scores reach {scores.max():.6g}, above the score's attainable maximum {upper}"
        raise CalibrationError(msg)
    check_rate(false_alarm_rate)
    review_rate = min(0.5, 10 * false_alarm_rate) if review_rate is None else review_rate
    if not false_alarm_rate <= review_rate < 1:
        msg = f"review_rate {review_rate} must be at least false_alarm_rate {false_alarm_rate}"
        raise CalibrationError(msg)
    t2, method = tail_threshold(scores, false_alarm_rate, upper=upper)
    t1, _ = tail_threshold(scores, review_rate, upper=upper)
    median = float(np.median(scores))
    t1, t2 = max(min(t1, t2), median), max(t2, median)
    return Calibration(
        t1=t1,
        t2=t2,
        false_alarm_rate=false_alarm_rate,
        review_rate=review_rate,
        method=method,
        n=len(scores),
        mean=float(scores.mean()),
        std=float(scores.std()),
        median=median,
        q99=float(np.quantile(scores, 0.99)),
        max=float(scores.max()),
        upper=upper,
    )


def normalize(score: Any, median: float, t2: float) -> np.ndarray:
    """0 at the normal median, 0.5 at T2, approaching 1 above it (continuous, monotone)."""
    s = np.asarray(score, dtype=np.float64)
    span = max(t2 - median, 1e-12)
    below = 0.5 * np.clip((s - median) / span, 0.0, 1.0)
    above = 0.5 + 0.5 * (1.0 - np.exp(-np.maximum(s - t2, 0.0) / span))  # (the below-T2 side would overflow)
    return np.where(s <= t2, below, above)


def max_f1_threshold(normal_scores: Any, defect_scores: Any, max_normal_flagged: float = 0.5) -> tuple[float, float]:
    """The threshold maximising F1 (defects positive) among those that flag at most
    ``max_normal_flagged`` of the normal items, and that F1.

    Without the bound, a set where defects outnumber normal items makes "flag everything" the
    F1 optimum (F1 = 2p / (1 + p) for a defect share p: 0.89 at 80 %), a threshold no line can
    run with. The threshold just above every normal score always qualifies."""
    normal, defect = _clean(normal_scores, "normal scores"), _clean(defect_scores, "defect scores")
    if not len(normal) or not len(defect):
        msg = "max-F1 needs both normal and defect scores"
        raise CalibrationError(msg)
    candidates = np.unique(np.r_[normal, defect, np.nextafter(normal.max(), np.inf)])
    ns, ds = np.sort(normal), np.sort(defect)
    fp = len(ns) - np.searchsorted(ns, candidates, "left")  # items with score >= threshold are flagged
    tp = len(ds) - np.searchsorted(ds, candidates, "left")
    f1 = 2 * tp / np.maximum(2 * tp + fp + (len(ds) - tp), 1)
    f1 = np.where(fp / len(ns) <= max_normal_flagged, f1, -1.0)
    best = int(np.argmax(f1))
    return float(candidates[best]), float(f1[best])
