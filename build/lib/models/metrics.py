"""Anomaly-detection metrics (scikit-learn underneath): image and pixel AUROC, per defect kind."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score


def image_auroc(scores: np.ndarray, is_defect: np.ndarray) -> float:
    return float(roc_auc_score(np.asarray(is_defect, bool), scores))


def pixel_auroc(maps: np.ndarray, masks: np.ndarray, max_pixels: int = 2_000_000, seed: int = 0) -> float:
    """AUROC over all pixels of all images (a random subset when there are more than ``max_pixels``)."""
    y, s = (np.asarray(masks) > 0).reshape(-1), np.asarray(maps, np.float64).reshape(-1)
    if len(y) > max_pixels:
        idx = np.random.default_rng(seed).choice(len(y), max_pixels, replace=False)
        y, s = y[idx], s[idx]
    return float(roc_auc_score(y, s))


def per_kind_auroc(
    scores: np.ndarray, maps: np.ndarray, masks: np.ndarray, kinds: Sequence[str | None]
) -> dict[str, dict[str, float]]:
    """Image and pixel AUROC of every defect kind against the good items, and over all kinds."""
    kinds = np.array([k or "good" for k in kinds])
    good = kinds == "good"
    out = {}
    for kind in [*sorted(set(kinds) - {"good"}), "all"]:
        sel = good | (kinds == kind) if kind != "all" else np.ones(len(kinds), bool)
        out[kind] = {
            "image_auroc": image_auroc(scores[sel], ~good[sel]),
            "pixel_auroc": pixel_auroc(maps[sel], masks[sel]),
            "n_defects": int((~good[sel]).sum()),
        }
    return out
