"""Anomaly maps to image scores, shared by calibration and serving (numpy and OpenCV only; fitting
the appearance check uses scikit-learn)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np


def smooth_maps(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-smooth each (H, W) map of a (N, H, W) batch."""
    if sigma <= 0:
        return maps
    return np.stack(
        [cv2.GaussianBlur(m.astype(np.float32), (0, 0), sigma, borderType=cv2.BORDER_REFLECT) for m in maps]
    )


def image_scores(maps: np.ndarray, top_k: float = 0.01, sigma: float = 2.0) -> np.ndarray:
    """Image score: mean of the top ``top_k`` fraction of the smoothed map (robust, unlike the max).

    **Shape:** maps (N, H, W) → (N,).
    """
    smoothed = smooth_maps(maps, sigma).reshape(len(maps), -1)
    k = max(1, int(round(top_k * smoothed.shape[1])))
    return np.partition(smoothed, -k, axis=1)[:, -k:].mean(axis=1)


def reconstruction_error_maps(x: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """Per-pixel squared error, averaged over channels: (N, C, H, W) → (N, H, W)."""
    return ((x - recon) ** 2).mean(axis=1)


def gaussian_fit(z: np.ndarray, floor: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Location and whitening matrix ``W`` (precision = W Wᵀ) of the Ledoit–Wolf covariance of
    the rows of ``z``, with ``floor ** 2`` added to its diagonal where given (a spread below which
    a change of that feature never counts alone): the Mahalanobis distance is then a plain norm,
    :func:`mahalanobis`, accurate in float32."""
    from sklearn.covariance import LedoitWolf

    lw = LedoitWolf(assume_centered=False).fit(np.asarray(z, np.float64))
    precision = lw.precision_ if floor is None else np.linalg.inv(lw.covariance_ + np.diag(floor**2))
    return lw.location_, np.linalg.cholesky(precision)


def mahalanobis(z: np.ndarray, location: np.ndarray, whitening: np.ndarray) -> np.ndarray:
    """Each row's distance from ``location`` under the whitening :func:`gaussian_fit` gave."""
    return np.linalg.norm((np.asarray(z, np.float64) - location) @ whitening, axis=1)


# -- the appearance check: is the whole frame like the good parts at all? -------------------------
GRID = 4  # the frame's layout: the means of GRID × GRID cells
MEAN_FLOOR = 0.1  # brightness changes under about a tenth of full scale never count alone
SHAPE_FLOOR = 0.02  # nor do changes of the relative features under 2 %
LIMIT_FACTOR = 1.5  # the limit: this times the farthest held-out good part ...
MIN_LIMIT = 4.0  # ... and never under this (a surface so uniform that any light change would count)
UNLIKE = "unlike the good parts"  # the label of a frame the check flags


def appearance_features(x: np.ndarray) -> np.ndarray:
    """What a whole frame looks like, per channel: its mean, and relative to that mean its
    spread, its edges (mean absolute difference of neighbours) and the means of a 4 × 4 grid of
    cells (where things are). Relative features do not change with the light's strength.

    **Shape:** (N, C, H, W) → (N, C × (3 + GRID²)); the cells leave out the last H mod GRID rows
    and W mod GRID columns.
    """
    x = np.asarray(x, np.float32)  # passes in float32, sums in float64 (a batch or colour: 4-6x faster than in float64)
    n, c, h, w = x.shape
    h, w = h - h % GRID, w - w % GRID
    mean = x.mean(axis=(2, 3), dtype=np.float64)
    centred = x - mean[:, :, None, None].astype(np.float32)
    spread = np.sqrt(np.einsum("ncij,ncij->nc", centred, centred, dtype=np.float64) / (x.shape[2] * x.shape[3]))
    scale = (np.abs(mean) + 0.05)[:, :, None]
    edges = sum(np.abs(np.diff(x, axis=axis)).mean(axis=(2, 3), dtype=np.float64) for axis in (3, 2))
    cells = x[:, :, :h, :w].reshape(n, c, GRID, h // GRID, GRID, w // GRID).mean(axis=(3, 5), dtype=np.float64)
    relative = np.concatenate([spread[:, :, None], edges[:, :, None], cells.reshape(n, c, GRID * GRID)], axis=2) / scale
    return np.concatenate([mean, relative.reshape(n, -1)], axis=1)


@dataclass
class AppearanceCheck:
    """Flags frames unlike any good part as a whole: an empty or blank frame, a part missing,
    shifted or of another kind, the lights failing. A detector of local defects can pass those
    (a flat grey frame is easy to restore and shows no local defect). The distance of a frame's
    :func:`appearance_features` from the good parts' (Mahalanobis, Ledoit–Wolf shrunk covariance
    with a floor per feature) is compared with ``limit``; beyond it the frame's score is raised
    to at least the calibrated ``t2``, growing with the distance, so that it is NG at the
    calibrated thresholds."""

    location: np.ndarray
    whitening: np.ndarray  # precision = whitening @ whitening.T
    limit: float
    t2: float
    upper: float | None = None  # the score's attainable maximum (a probability's 1), if any

    @classmethod
    def fit(cls, train: np.ndarray, held: np.ndarray, t2: float, upper: float | None) -> AppearanceCheck:
        """From the good images trained on and held out (N, C, H, W): the limit is
        ``LIMIT_FACTOR`` times the farthest held-out image's distance, at least ``MIN_LIMIT``."""
        features = appearance_features(train)
        floor = np.full(features.shape[1], SHAPE_FLOOR)
        floor[: train.shape[1]] = MEAN_FLOOR  # the channels' means
        check = cls(*gaussian_fit(features, floor), np.inf, float(t2), upper)
        check.limit = max(MIN_LIMIT, LIMIT_FACTOR * float(check.distances(held).max()))
        return check

    def distances(self, x: np.ndarray) -> np.ndarray:
        return mahalanobis(appearance_features(x), self.location, self.whitening)

    def apply(self, scores: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The scores with frames beyond the limit raised (and which those are)."""
        d = self.distances(x)
        unlike = d > self.limit
        if not unlike.any():
            return scores, unlike
        excess = np.maximum(d / self.limit, 1.0)
        if self.upper is None:
            raised = self.t2 * excess
        else:
            raised = self.t2 + (self.upper - self.t2) * (1.0 - 1.0 / excess)
        return np.where(unlike, np.maximum(scores, raised), scores), unlike

    def to_dict(self) -> dict[str, Any]:
        return {
            "location": self.location.tolist(),
            "whitening": self.whitening.tolist(),
            "limit": self.limit,
            "t2": self.t2,
            "upper": self.upper,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AppearanceCheck:
        location = np.asarray(data["location"], np.float64)
        whitening = np.asarray(data["whitening"], np.float64)
        if location.ndim != 1 or whitening.shape != (len(location), len(location)):
            msg = f"appearance check of {location.shape} features has a {whitening.shape} whitening matrix"
            raise ValueError(msg)
        return cls(location, whitening, float(data["limit"]), float(data["t2"]), data.get("upper"))
