"""The anomaly detectors: images (model.py) and sensor vectors / windows (vector.py)."""

from __future__ import annotations

from typing import Any

import numpy as np


def normal_training_data(data: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    """Normal samples as float32 (N, *shape); refuses other shapes and NaN / infinite values."""
    array = np.asarray(data, np.float32)
    if array.ndim != len(shape) + 1 or array.shape[1:] != tuple(shape):
        msg = f"{what} have shape {array.shape}, expected (N, {', '.join(map(str, shape))})"
        raise ValueError(msg)
    if not np.isfinite(array).all():
        msg = f"{what} contain NaN or infinite values"
        raise ValueError(msg)
    return array
