"""A synthetic production line: textured parts, some with painted defects.

Each frame shows one part (a brushed-metal disc with a bore and a knurled rim) on a dark belt, with
small random pose and lighting changes. A configurable fraction of parts carries one defect of a
chosen kind, painted with its ground-truth mask:

- ``scratch``: a thin bright or dark curved line
- ``stain``: a soft dark blob
- ``crack``: a jagged dark polyline
- ``dent``: a shaded circular depression
- ``contamination``: a cluster of bright specks

Deterministic for a given seed. The detector never trains on these defects: its own synthetic
anomalies (models/detector/synthetic.py) are made differently, so this line is a fair test.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from connectors.base import Sample, Source, SourceError, now

MAX_SIZE = 4096  # a frame edge; a larger one would not fit a real camera's frame in memory
DEFECT_KINDS = ("scratch", "stain", "crack", "dent", "contamination")


@dataclass
class Part:
    image: np.ndarray  # uint8 (H, W)
    mask: np.ndarray  # uint8 (H, W), 255 where defective
    defect: str | None  # kind, or None for a good part
    index: int


class SyntheticLine:
    """Frames of a production line; ``next()`` gives the next part.

    Args:
        size: frame edge in pixels (square frames).
        defect_rate: probability that a part is defective.
        defect_kinds: kinds to draw from.
        seed: makes the sequence reproducible.
    """

    def __init__(
        self, size: int = 128, defect_rate: float = 0.1, defect_kinds: Sequence[str] = DEFECT_KINDS, seed: int = 0
    ) -> None:
        unknown = set(defect_kinds) - set(DEFECT_KINDS)
        if unknown:
            msg = f"unknown defect kind {sorted(unknown)[0]!r}; known: {', '.join(DEFECT_KINDS)}"
            raise ValueError(msg)
        if not 0.0 <= defect_rate <= 1.0:
            msg = f"defect_rate must be in [0, 1], got {defect_rate}"
            raise ValueError(msg)
        if not 32 <= size <= MAX_SIZE:
            msg = f"size must be 32 to {MAX_SIZE} pixels, got {size}"
            raise ValueError(msg)
        self.size, self.defect_rate, self.defect_kinds, self.seed = size, defect_rate, tuple(defect_kinds), seed
        self.index = 0

    def next(self) -> Part:
        rng = np.random.default_rng((self.seed, self.index))
        defective, pick = rng.random() < self.defect_rate, int(rng.integers(1 << 16))  # same draws either way
        kind = self.defect_kinds[pick % len(self.defect_kinds)] if defective and self.defect_kinds else None
        part = render_part(self.size, rng, kind, self.index)
        self.index += 1
        return part

    def take(self, n: int) -> list[Part]:
        return [self.next() for _ in range(n)]


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (y, x) of a square frame, made once per size (read-only)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def _noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Standard normal float32 noise, drawn as float32 (half the cost of drawing float64)."""
    return rng.standard_normal((size, size), dtype=np.float32)


def _texture(size: int, rng: np.random.Generator) -> np.ndarray:
    """Brushed metal: noise stretched along a random direction, plus fine grain."""
    noise = _noise(rng, size)
    streaks = cv2.GaussianBlur(noise, (0, 0), sigmaX=6.0, sigmaY=0.6)
    angle = rng.uniform(0, 180)
    rot = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0)
    streaks = cv2.warpAffine(streaks, rot, (size, size), borderMode=cv2.BORDER_REFLECT)
    streaks /= streaks.std() + 1e-6
    grain = cv2.GaussianBlur(_noise(rng, size), (0, 0), 0.7)
    return 0.06 * streaks + 0.03 * grain


def render_part(size: int, rng: np.random.Generator, defect: str | None, index: int = 0) -> Part:
    yy, xx = _grid(size)
    cx, cy = size / 2 + rng.normal(0, size * 0.02, 2)
    radius = size * rng.uniform(0.36, 0.40)
    dx, dy = xx - np.float32(cx), yy - np.float32(cy)
    r = np.sqrt(dx * dx + dy * dy)
    body = (r < radius).astype(np.float32)
    bore = (r < radius * 0.28).astype(np.float32)
    light = np.float32(rng.uniform(0.55, 0.65)) + np.float32(0.08 / size) * dx  # directional lighting
    part = light + _texture(size, rng)
    rim = (r > radius * 0.86) & (r < radius)
    knurl = rng.uniform(0, 6.28)  # the rim's knurling, computed on the rim only
    part[rim] += 0.05 * np.sign(np.sin(np.arctan2(dy[rim], dx[rim]) * 48 + knurl))
    belt = 0.12 + 0.02 * _noise(rng, size)
    image = body * (1 - bore) * part + (1 - body * (1 - bore)) * belt
    image = cv2.GaussianBlur(image, (0, 0), 0.6)
    mask = np.zeros((size, size), np.float32)
    if defect is not None:
        surface = body * (1 - bore)
        painted, mask = PAINTERS[defect](image, mask, rng, (cx, cy, radius))
        image = image + (painted - image) * surface  # defects live on the part only
        mask *= surface
    image = np.clip(image + np.float32(0.01) * _noise(rng, size), 0, 1)
    return Part((image * 255).astype(np.uint8), ((mask > 0.5) * 255).astype(np.uint8), defect, index)


def _point_on_part(rng: np.random.Generator, geometry: tuple[float, float, float]) -> tuple[float, float]:
    cx, cy, radius = geometry
    rr = radius * np.sqrt(rng.uniform(0.45**2, 0.8**2))
    a = rng.uniform(0, 2 * np.pi)
    return cx + rr * np.cos(a), cy + rr * np.sin(a)


def _scratch(image, mask, rng, geometry):
    size = image.shape[0]
    x0, y0 = _point_on_part(rng, geometry)
    length, angle, bend = size * rng.uniform(0.15, 0.3), rng.uniform(0, np.pi), rng.uniform(-0.4, 0.4)
    t = np.linspace(0, 1, 24)
    pts = np.stack([x0 + length * t * np.cos(angle + bend * t), y0 + length * t * np.sin(angle + bend * t)], 1)
    layer = np.zeros_like(image)
    cv2.polylines(layer, [np.round(pts * 4).astype(np.int32)], False, 1.0, max(1, size // 96), cv2.LINE_AA, shift=2)
    sign = 1 if rng.random() < 0.5 else -1
    return image + sign * 0.3 * layer, np.maximum(mask, layer)


def _stain(image, mask, rng, geometry):
    size = image.shape[0]
    x0, y0 = _point_on_part(rng, geometry)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    sx, sy = size * rng.uniform(0.03, 0.06, 2)
    blob = np.exp(-(((xx - x0) / sx) ** 2 + ((yy - y0) / sy) ** 2))
    return image * (1 - 0.45 * blob), np.maximum(mask, (blob > 0.3).astype(np.float32))


def _crack(image, mask, rng, geometry):
    size = image.shape[0]
    x, y = _point_on_part(rng, geometry)
    angle = rng.uniform(0, 2 * np.pi)
    pts = [(x, y)]
    for _ in range(8):
        angle += rng.normal(0, 0.6)
        step = size * rng.uniform(0.02, 0.035)
        x, y = x + step * np.cos(angle), y + step * np.sin(angle)
        pts.append((x, y))
    layer = np.zeros_like(image)
    cv2.polylines(
        layer, [np.round(np.array(pts) * 4).astype(np.int32)], False, 1.0, max(1, size // 64), cv2.LINE_AA, shift=2
    )
    return image * (1 - 0.6 * layer), np.maximum(mask, layer)


def _dent(image, mask, rng, geometry):
    size = image.shape[0]
    x0, y0 = _point_on_part(rng, geometry)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    rad = size * rng.uniform(0.04, 0.07)
    d = np.hypot(xx - x0, yy - y0) / rad
    inside = d < 1
    shade = np.where(inside, 0.25 * ((xx - x0) / rad) * np.sqrt(np.clip(1 - d**2, 0, 1)), 0)
    return image + shade, np.maximum(mask, inside.astype(np.float32))


def _contamination(image, mask, rng, geometry):
    size = image.shape[0]
    x0, y0 = _point_on_part(rng, geometry)
    layer = np.zeros_like(image)
    for _ in range(rng.integers(6, 14)):
        px, py = x0 + rng.normal(0, size * 0.025), y0 + rng.normal(0, size * 0.025)
        cv2.circle(
            layer, (int(round(px)), int(round(py))), max(1, int(size * rng.uniform(0.006, 0.014))), 1.0, -1, cv2.LINE_AA
        )
    return np.maximum(image, 0.95 * layer), np.maximum(mask, layer)


PAINTERS = {"scratch": _scratch, "stain": _stain, "crack": _crack, "dent": _dent, "contamination": _contamination}


class SyntheticSource(Source):
    """The synthetic line at ``fps`` frames per second (0: as fast as read). ``meta['defect']``
    carries the ground truth (None for a good part)."""

    kind = "synthetic"

    def __init__(
        self,
        source_id: str,
        url: str,
        size: int = 128,
        defect_rate: float = 0.1,
        seed: int = 0,
        fps: float = 0.0,
        kinds: str = ",".join(DEFECT_KINDS),
    ) -> None:
        super().__init__(source_id, url)
        if not 0 <= fps <= 10_000:
            msg = f"option 'fps' must be 0 (as fast as read) to 10000, got {fps}"
            raise SourceError(msg)
        try:
            self.line = SyntheticLine(size, defect_rate, [k for k in kinds.split(",") if k], seed)
        except ValueError as exc:
            raise SourceError(str(exc)) from exc
        self.period = 1.0 / fps if fps > 0 else 0.0
        self.next_due = time.monotonic()

    def _read(self, timeout: float) -> Sample | None:
        wait = self.next_due - time.monotonic()
        if wait > timeout:
            time.sleep(timeout)
            return None
        if wait > 0:
            time.sleep(wait)
        self.next_due = max(self.next_due + self.period, time.monotonic() - self.period)
        stamp = now()
        part = self.line.next()
        return Sample(
            self.source_id,
            stamp,
            part.image,
            {"defect": part.defect, "index": part.index, "item": f"part {part.index}"},
        )
