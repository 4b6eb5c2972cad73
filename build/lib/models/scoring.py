"""Anomaly maps to image scores, shared by calibration and serving (numpy and OpenCV only)."""

from __future__ import annotations

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
