"""Images and heat maps on disk, content-addressed (the reference is the PNG's SHA-256)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np


class ImageStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, ref: str) -> Path:
        if len(ref) != 64 or not all(c in "0123456789abcdef" for c in ref):
            msg = f"not an image reference: {ref!r}"
            raise ValueError(msg)
        return self.root / ref[:2] / f"{ref}.png"

    def put(self, image: np.ndarray) -> str:
        ok, data = cv2.imencode(".png", image)
        if not ok:
            msg = f"image of shape {image.shape} and dtype {image.dtype} cannot be encoded"
            raise ValueError(msg)
        raw = data.tobytes()
        ref = hashlib.sha256(raw).hexdigest()
        path = self.path(ref)
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(raw)
            tmp.replace(path)
        return ref

    def heatmap(self, anomaly_map: np.ndarray) -> str:
        """Store a [0, 1] anomaly map as a colour heat map."""
        return self.put(colorize(anomaly_map))


def colorize(anomaly_map: np.ndarray) -> np.ndarray:
    """A [0, 1] anomaly map as a BGR heat map (blue normal, red anomalous)."""
    return cv2.applyColorMap((np.clip(anomaly_map, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)


def overlay(image: np.ndarray, anomaly_map: np.ndarray | None, alpha: float = 0.4) -> np.ndarray:
    """The frame in BGR with the heat map blended over it (resized to the frame)."""
    frame = image if image.dtype == np.uint8 else cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 or frame.shape[-1] == 1 else frame[..., :3]
    if anomaly_map is None:
        return frame
    heat = colorize(cv2.resize(anomaly_map.astype(np.float32), (frame.shape[1], frame.shape[0])))
    return cv2.addWeighted(frame, 1 - alpha, heat, alpha, 0)
