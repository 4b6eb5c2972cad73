"""Images and heat maps on disk, content-addressed (the reference is the stored file's SHA-256).

Frames are kept without loss: 8- and 16-bit counts as PNG; measured values (float or signed
images: heights, temperatures), which PNG would cut to 8-bit integers, as float32 TIFF with a PNG
beside it for display."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np


class ImageStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, ref: str) -> Path:
        """The image as a PNG to show."""
        if len(ref) != 64 or not all(c in "0123456789abcdef" for c in ref):
            msg = f"not an image reference: {ref!r}"
            raise ValueError(msg)
        return self.root / ref[:2] / f"{ref}.png"

    def source(self, ref: str) -> Path:
        """The image as it came (to train on): the values' TIFF where there is one, else the PNG."""
        values = self.path(ref).with_suffix(FRAME_SUFFIXES[1])
        return values if values.is_file() else self.path(ref)

    def files(self, ref: str) -> list[Path]:
        """Every file kept for ``ref``: the PNG, and the values' TIFF where there is one."""
        png = self.path(ref)
        return [p for p in (png, png.with_suffix(FRAME_SUFFIXES[1])) if p.exists()]

    def size(self, ref: str) -> int:
        return sum(p.stat().st_size for p in self.files(ref))

    def delete(self, ref: str) -> int:
        """Remove every file of ``ref``; returns how many bytes that freed."""
        freed = 0
        for path in self.files(ref):
            freed += path.stat().st_size
            path.unlink(missing_ok=True)
        return freed

    def put(self, image: np.ndarray, shown: np.ndarray | None = None) -> str:
        """Keep a frame; ``shown`` is what to show for it where that is not the frame itself (a
        sensor window's plot, :func:`plot_window`)."""
        suffix, raw = encode(image if shown is None else image.astype(np.float32))  # shown: values as TIFF
        ref = hashlib.sha256(raw).hexdigest()
        path = self.path(ref)
        if suffix != FRAME_SUFFIXES[0]:
            _write(path.with_suffix(suffix), raw)
            raw = encode(display(image) if shown is None else shown)[1]
        _write(path, raw)
        return ref

    def heatmap(self, anomaly_map: np.ndarray) -> str:
        """Store a [0, 1] anomaly map as a colour heat map."""
        return self.put(colorize(anomaly_map))


def _write(path: Path, data: bytes) -> None:
    """Write once, atomically (a reader never sees half a file)."""
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)


FRAME_SUFFIXES = (".png", ".tiff")  # counts, measured values: as encode writes them


def encode(image: np.ndarray) -> tuple[str, bytes]:
    """The file suffix and bytes that keep a frame without loss: PNG for 8- and 16-bit counts,
    float32 TIFF for measured values."""
    counts = image.dtype in (np.uint8, np.uint16)
    suffix = FRAME_SUFFIXES[0] if counts else FRAME_SUFFIXES[1]
    ok, data = cv2.imencode(suffix, image if counts else image.astype(np.float32))
    if not ok:
        msg = f"image of shape {image.shape} and dtype {image.dtype} cannot be encoded"
        raise ValueError(msg)
    return suffix, data.tobytes()


def display(image: np.ndarray) -> np.ndarray:
    """The frame as 8-bit BGR to show: deeper counts and measured values stretched over their own
    range, missing readings (NaN) black."""
    frame = image
    if image.dtype != np.uint8:
        values = image.astype(np.float32)
        readings = np.isfinite(values)
        if not readings.all():
            values = np.where(readings, values, values[readings].min() if readings.any() else 0.0)
        frame = cv2.normalize(values, None, 0, 255, cv2.NORM_MINMAX, cv2.CV_8U)
    return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 or frame.shape[-1] == 1 else frame[..., :3]


BAND = 64  # a channel's height in a window's plot, pixels
PLOT_WIDTH = 480
_INK = ((180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148), (75, 86, 140))


def plot_window(window: np.ndarray, channels: Sequence[str] | None = None) -> np.ndarray:
    """A sensor window (channels, length) as an 8-bit BGR picture to show: one band a channel, its
    readings over the window drawn across the band's height (each channel on its own scale, its
    name, smallest and largest reading written in the band), oldest reading on the left."""
    values = np.atleast_2d(np.asarray(window, np.float32))
    values = values.reshape(len(values), -1)
    n, length = values.shape
    picture = np.full((BAND * n, PLOT_WIDTH, 3), 255, np.uint8)
    xs = np.linspace(4, PLOT_WIDTH - 5, length) if length > 1 else np.array([PLOT_WIDTH / 2])
    for c, row in enumerate(values):
        top = c * BAND
        lo, hi = (float(np.nanmin(row)), float(np.nanmax(row))) if np.isfinite(row).any() else (0.0, 0.0)
        span = hi - lo if hi > lo else 1.0
        ys = top + BAND - 6 - (np.nan_to_num(row, nan=lo) - lo) / span * (BAND - 22)
        points = np.stack([xs, ys], axis=1).round().astype(np.int32)
        cv2.line(picture, (0, top + BAND - 1), (PLOT_WIDTH - 1, top + BAND - 1), (220, 220, 220), 1)
        cv2.polylines(picture, [points], False, _INK[c % len(_INK)], 1, cv2.LINE_AA)
        name = channels[c] if channels is not None and c < len(channels) else f"channel {c}"
        label = _ascii(f"{name}  {lo:.4g} .. {hi:.4g}")
        cv2.putText(picture, label, (4, top + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (60, 60, 60), 1, cv2.LINE_AA)
    return picture


_SPELLED = {"°": "deg", "µ": "u", "μ": "u", "²": "2", "³": "3", "Ω": "Ohm", "±": "+/-"}


def _ascii(text: str) -> str:
    """Text OpenCV's Hershey font can draw: units spelled out (°C → degC), other letters as ``?``."""
    text = "".join(_SPELLED.get(ch, ch) for ch in text)
    return text.encode("ascii", "replace").decode("ascii")


def colorize(anomaly_map: np.ndarray) -> np.ndarray:
    """A [0, 1] anomaly map as a BGR heat map (blue normal, red anomalous)."""
    return cv2.applyColorMap((np.clip(anomaly_map, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)


def overlay(image: np.ndarray, anomaly_map: np.ndarray | None, alpha: float = 0.4) -> np.ndarray:
    """The frame in BGR with the heat map blended over it (resized to the frame)."""
    frame = display(image)
    if anomaly_map is None:
        return frame
    heat = colorize(cv2.resize(anomaly_map.astype(np.float32), (frame.shape[1], frame.shape[0])))
    return cv2.addWeighted(frame, 1 - alpha, heat, alpha, 0)
