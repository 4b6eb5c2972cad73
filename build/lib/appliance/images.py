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
        scaled = (np.clip(anomaly_map, 0, 1) * 255).astype(np.uint8)
        return self.put(cv2.applyColorMap(scaled, cv2.COLORMAP_JET))
