"""Drift of a line's inputs and normal scores, tested window by window against a reference.

What drifts before false alarms come: the lighting (brightness), the optics (contrast, focus:
sharpness) and the model's scores of normal-looking parts. Each window of ``window`` frames is
compared, feature by feature, with the reference (frames of the same source and model taken when
the line was known good) by the Kolmogorov–Smirnov distance D (the largest gap between the two
cumulative distributions, 0..1), with a critical distance that holds for the reference one has,
not only on average over references:

- by the Dvoretzky–Kiefer–Wolfowitz inequality (Massart's constant), a reference of m frames lies
  within ``eps_m = sqrt(ln(2 / (1 - confidence)) / 2m)`` of the line's true distribution with
  probability ``confidence``, and a window of n frames of the unchanged line within
  ``eps_n = sqrt(ln(2 / a) / 2n)`` of it with probability 1 - a;
- a window is called drifted when some feature's D exceeds ``eps_n + eps_m`` with a = ``alpha``
  split over the features tested (Bonferroni), and is at least ``min_distance`` (a shift too small
  to matter is not a drift however many frames prove it). So, for all but a ``1 - confidence``
  share of references, each window of an unchanged stream (frames exchangeable with the
  reference's) is called drifted with probability at most ``alpha``; windows do not overlap, so
  over N frames at most ``alpha · N / window`` false drift events are expected (1e-5 and 200
  frames: one in 20 million frames, 2.3 days at 100 frames/s). A plain KS p-value at a fixed
  reference promises that rate only averaged over references: measured, one reference of 200
  frames gave 2.4 × the nominal rate, another 0.1 ×;
- a change that moves a feature by more than the critical distance is seen in the first window
  wholly after it: within ``2 · window`` frames. The default (400 / 200 frames, alpha 1e-5):
  about 0.27.

Frames of a real line are not exchangeable (slow changes within a shift, parts in batches): the
rate above is what the test promises on a stationary line, and ``min_distance`` is what keeps a
real line's small wanderings quiet.

Scores are compared only below one cut on both sides, the lowest review threshold T1 in effect over
the reference and the window ("normal-looking"): a run of defects is the alerts' business, not
drift, and an operator moving T1 changes neither side's share of what is compared (cutting each side
at its own T1 would: raising T1 from the 90th to the 99th percentile of good scores moves D by 0.09,
lowering it to the 60th by 0.33, a drift called for a threshold change).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
from scipy import stats

IMAGE_FEATURES = ("brightness", "contrast", "sharpness")
FEATURES = ("score", *IMAGE_FEATURES)
STAT_SIZE = 64  # brightness and contrast are taken on the frame shrunk to this (cheap, and noise-robust)
FOCUS_SIZE = 256  # sharpness on the centre's pixels, unshrunk


@dataclass(frozen=True)
class DriftConfig:
    window: int = 200  # frames per test
    reference: int = 400  # frames the reference holds
    alpha: float = 1e-5  # chance that a window of an unchanged stream is called drifted
    min_distance: float = 0.2  # KS distance a feature must move by to count, whatever the sample sizes
    confidence: float = 0.99  # share of references for which the alpha above holds
    min_scores: int = 30  # normal-looking scores each side needs for the score test
    recover: int = 3  # windows in a row without drift before a drifting source is stable again

    def __post_init__(self) -> None:
        if self.window < 20 or self.reference < 20:
            msg = f"drift window and reference need at least 20 frames, got {self.window} and {self.reference}"
            raise ValueError(msg)
        if not 0 < self.alpha < 1 or not 0 < self.min_distance <= 1 or not 0 < self.confidence < 1:
            msg = (
                "drift alpha and confidence must be in (0, 1) and min_distance in (0, 1], got "
                f"{self.alpha}, {self.confidence}, {self.min_distance}"
            )
            raise ValueError(msg)


def _grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3:
        if image.shape[2] == 1:
            return image[..., 0]
        return cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
    return image


def image_stats(image: np.ndarray) -> tuple[float, float, float]:
    """Brightness (mean grey level) and contrast (its standard deviation) of the frame shrunk to
    ``STAT_SIZE`` square, and sharpness (log of the variance of the Laplacian) of a central
    ``FOCUS_SIZE`` square at the camera's own resolution, where focus shows. About 0.1 ms a frame
    whatever its size."""
    h, w = image.shape[:2]
    step = max(1, min(h, w) // (2 * STAT_SIZE))  # a strided view first: INTER_AREA over the rest
    small = cv2.resize(
        np.ascontiguousarray(image[::step, ::step]), (STAT_SIZE, STAT_SIZE), interpolation=cv2.INTER_AREA
    )
    mean, std = cv2.meanStdDev(_grey(small).astype(np.float32))
    top, left = max(0, (h - FOCUS_SIZE) // 2), max(0, (w - FOCUS_SIZE) // 2)
    centre = _grey(np.ascontiguousarray(image[top : top + FOCUS_SIZE, left : left + FOCUS_SIZE]))
    sharp = float(cv2.Laplacian(centre.astype(np.float32), cv2.CV_32F).var())
    return float(mean[0, 0]), float(std[0, 0]), float(np.log1p(sharp))


@dataclass
class FeatureTest:
    feature: str
    p_value: float  # the plain two-sample KS p-value, for information
    distance: float  # KS statistic, 0..1
    critical: float  # the distance that calls it drifted
    before_median: float
    after_median: float
    n_before: int
    n_after: int
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dkw(n: int, a: float) -> float:
    """The distance an empirical distribution of n values stays within with probability 1 - a."""
    return math.sqrt(math.log(2.0 / a) / (2.0 * n))


def normal_looking(features: dict[str, Any], below: float) -> dict[str, Any]:
    """The features with only the scores under the cut ``below``."""
    if "score" not in features:
        return features
    scores = np.asarray(features["score"], float)
    return {**features, "score": scores[scores < below]}


def compare(
    reference: dict[str, np.ndarray], current: dict[str, np.ndarray], config: DriftConfig, below: float = math.inf
) -> list[FeatureTest]:
    """Test each feature present on both sides, the score only on the values under ``below`` (the
    cut) and with ``min_scores`` of them on each; the per-feature level is ``alpha`` over the
    number of features tested."""
    reference, current = normal_looking(reference, below), normal_looking(current, below)
    names = [
        f
        for f in FEATURES
        if f in reference
        and f in current
        and min(len(reference[f]), len(current[f])) >= (config.min_scores if f == "score" else 2)
    ]
    level = config.alpha / max(len(names), 1)
    out = []
    for name in names:
        before, after = np.asarray(reference[name], float), np.asarray(current[name], float)
        result = stats.ks_2samp(before, after, method="asymp")
        p, d = float(result.pvalue), float(result.statistic)
        critical = max(config.min_distance, dkw(len(after), level) + dkw(len(before), 1.0 - config.confidence))
        out.append(
            FeatureTest(
                feature=name,
                p_value=p,
                distance=d,
                critical=critical,
                before_median=float(np.median(before)),
                after_median=float(np.median(after)),
                n_before=len(before),
                n_after=len(after),
                drifted=d > critical,
            )
        )
    return out
