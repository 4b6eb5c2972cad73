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


def aupro(maps: np.ndarray, masks: np.ndarray, max_fpr: float = 0.3) -> float:
    """Area under the per-region-overlap curve up to ``max_fpr``, normalised to [0, 1] (MVTec AD's
    AUPRO). Each connected defect region weighs the same whatever its size; the false-positive rate
    counts pixels outside every region of every image. Exact: one sort of all pixel scores."""
    import cv2

    maps = np.asarray(maps, np.float64)
    masks = np.asarray(masks) > 0
    if maps.shape != masks.shape:
        msg = f"maps {maps.shape} and masks {masks.shape} differ in shape"
        raise ValueError(msg)
    if not 0 < max_fpr <= 1:
        msg = f"max_fpr must be in (0, 1], got {max_fpr}"
        raise ValueError(msg)
    weights = np.zeros(maps.shape, np.float64)  # a region pixel adds 1/(|region| · regions) to the PRO
    regions = 0
    labelled = []
    for mask in masks:
        n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        labelled.append((n - 1, labels))
        regions += n - 1
    background = ~masks
    if regions == 0 or not background.any():
        msg = "AUPRO needs at least one defect region and some defect-free pixels"
        raise ValueError(msg)
    for (n, labels), w in zip(labelled, weights, strict=True):
        if n:
            sizes = np.bincount(labels.reshape(-1))
            w[labels > 0] = 1.0 / (sizes[labels[labels > 0]] * regions)
    w_fpr = background / background.sum()
    order = np.argsort(-maps.reshape(-1), kind="stable")
    scores = maps.reshape(-1)[order]
    pro = np.cumsum(weights.reshape(-1)[order])
    fpr = np.cumsum(w_fpr.reshape(-1)[order])
    last = np.r_[scores[1:] != scores[:-1], True]  # tied scores pass the threshold together
    fpr, pro = np.r_[0.0, fpr[last]], np.r_[0.0, pro[last]]
    keep = fpr <= max_fpr
    x, y = fpr[keep], pro[keep]
    if x[-1] < max_fpr:  # the point at exactly max_fpr, on the segment that crosses it
        i = int(keep.sum())
        y_cut = np.interp(max_fpr, fpr[i - 1 : i + 1], pro[i - 1 : i + 1])
        x, y = np.r_[x, max_fpr], np.r_[y, y_cut]
    return float(np.trapezoid(y, x) / max_fpr)


# -- time series: per point scores from windows, range-aware PR (VUS-PR) -------------------------
def point_scores(window_scores: np.ndarray, starts: np.ndarray, length: int, n: int) -> np.ndarray:
    """Per point: the largest score of the windows that cover it (points no window covers get the
    smallest score), as subsequence detectors are scored in time-series benchmarks (TSB-AD)."""
    out = np.full(n, np.min(window_scores), np.float64)
    for s, v in zip(starts, window_scores, strict=True):
        out[s : s + length] = np.maximum(out[s : s + length], v)
    return out


def _ranges(labels: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.r_[0, labels.astype(np.int8), 0])
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))  # [start, end)


def range_pr_auc(labels: np.ndarray, scores: np.ndarray, buffer: int, thresholds: int = 250) -> float:
    """Range-AUC-PR (Paparrizos et al., VLDB 2022): labels get a soft margin of ``buffer`` points
    around each anomaly (weight falling as the square root of the distance), recall counts what
    share of the soft labels is flagged times the share of anomaly ranges hit at all, precision is
    the soft true positives over all flagged points; the area under that PR curve."""
    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, np.float64)
    soft = labels.astype(np.float64)
    n = len(labels)
    for start, end in _ranges(labels):
        if buffer:
            after = np.arange(end, min(end + buffer // 2, n))
            before = np.arange(max(start - buffer // 2, 0), start)
            soft[after] = np.maximum(soft[after], np.sqrt(1 - (after - end + 1) / buffer))
            soft[before] = np.maximum(soft[before], np.sqrt(1 - (start - before) / buffer))
    spans = _ranges(soft > 0)
    positives = (labels.sum() + soft.sum()) / 2
    ordered = np.sort(scores)[::-1]
    recall, precision = [0.0], [1.0]
    for t in ordered[np.linspace(0, n - 1, thresholds).astype(int)]:
        flagged = scores >= t
        tp = float((soft * flagged).sum())
        hit = np.mean([flagged[a:b].any() for a, b in spans]) if spans else 0.0
        recall.append(min(tp / positives, 1.0) * hit)
        precision.append(tp / max(flagged.sum(), 1))
    order = np.argsort(recall, kind="stable")
    return float(np.trapezoid(np.asarray(precision)[order], np.asarray(recall)[order]))


def vus_pr(labels: np.ndarray, scores: np.ndarray, max_buffer: int) -> float:
    """Volume under the range-PR surface: :func:`range_pr_auc` averaged over buffers 0..``max_buffer``
    (the VUS-PR of TSB-UAD / TSB-AD), robust to lags between a fault and its score."""
    buffers = np.linspace(0, max_buffer, 11).astype(int)
    return float(np.mean([range_pr_auc(labels, scores, int(b)) for b in buffers]))
