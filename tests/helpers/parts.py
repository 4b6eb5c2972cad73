"""A folder of real-looking parts for commissioning tests, made here (not the synthetic line's
generator): a machined washer on a brushed-metal background under uneven light, photographed with
some jitter in position, rotation and exposure; defects are scratches, dents and chipped edges,
with ground-truth masks. Written in the MVTec AD layout, in mixed formats (PNG, JPEG, 16-bit TIFF)
and nested folders, as cameras and engineers leave them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

DEFECTS = ("scratch", "dent", "chip")


def _brushed(size: int, rng: np.random.Generator) -> np.ndarray:
    noise = rng.normal(0, 1, (size, size)).astype(np.float32)
    streaks = cv2.blur(noise, (size // 4 | 1, 1))  # brushed along x
    return (streaks - streaks.min()) / (np.ptp(streaks) + 1e-6)


def good_part(size: int, rng: np.random.Generator) -> np.ndarray:
    """One photograph of a good part, uint8 grey."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    light = 0.75 + 0.25 * (xx / size) * rng.uniform(0.6, 1.0) + rng.uniform(-0.05, 0.05)
    img = (0.35 + 0.2 * _brushed(size, rng)) * light
    cx, cy = size / 2 + rng.uniform(-1.5, 1.5), size / 2 + rng.uniform(-1.5, 1.5)
    r = np.hypot(xx - cx, yy - cy)
    outer, inner = 0.38 * size, 0.16 * size
    ring = (r < outer) & (r > inner)
    metal = 0.65 + 0.15 * np.cos(r / size * 40 + rng.uniform(0, 6.28)) * 0.3 + 0.1 * _brushed(size, rng)
    img = np.where(ring, metal * light, img)
    img = np.where(r <= inner, 0.1, img)  # the hole: dark background through it
    img = cv2.GaussianBlur(img, (3, 3), 0.6) + rng.normal(0, 0.015, img.shape)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def add_defect(img: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The part with one defect on its ring, and the defect's mask (uint8 0/255)."""
    size = img.shape[0]
    mask = np.zeros_like(img)
    angle = rng.uniform(0, 2 * np.pi)
    rad = rng.uniform(0.22, 0.32) * size
    cx, cy = int(size / 2 + rad * np.cos(angle)), int(size / 2 + rad * np.sin(angle))
    out = img.astype(np.float32)
    if kind == "scratch":
        dx, dy = int(0.14 * size * np.cos(angle + 1.3)), int(0.14 * size * np.sin(angle + 1.3))
        cv2.line(mask, (cx - dx, cy - dy), (cx + dx, cy + dy), 255, max(1, size // 48))
        out = np.where(mask > 0, out * 0.35, out)
    elif kind == "dent":
        cv2.circle(mask, (cx, cy), max(2, size // 14), 255, -1)
        out = np.where(mask > 0, out * 0.45 + 20, out)
    else:  # chip: a piece of the outer edge missing
        ex, ey = int(size / 2 + 0.38 * size * np.cos(angle)), int(size / 2 + 0.38 * size * np.sin(angle))
        cv2.circle(mask, (ex, ey), max(3, size // 9), 255, -1)
        ring = cv2.circle(np.zeros_like(img), (size // 2, size // 2), int(0.39 * size), 255, -1)
        mask = mask & ring
        out = np.where(mask > 0, 0.35 * 255 * 0.8, out)
    return np.clip(out, 0, 255).astype(np.uint8), mask


def write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".tif":
        img = img.astype(np.uint16) * 257  # 16-bit, as machine-vision cameras write
    cv2.imwrite(str(path), img)


def make_parts(root: Path, *, train: int = 60, test_good: int = 20, per_defect: int = 8, size: int = 64) -> Path:
    """The MVTec AD layout under ``root``: train/good (in nested folders, mixed formats),
    test/good, test/<defect>/ and ground_truth/<defect>/<name>_mask.png."""
    rng = np.random.default_rng(7)
    suffixes = (".png", ".jpg", ".tif")
    for i in range(train):
        write(root / "train" / "good" / f"batch{i % 3}" / f"{i:03d}{suffixes[i % 3]}", good_part(size, rng))
    for i in range(test_good):
        write(root / "test" / "good" / f"{i:03d}.png", good_part(size, rng))
    for kind in DEFECTS:
        for i in range(per_defect):
            img, mask = add_defect(good_part(size, rng), kind, rng)
            write(root / "test" / kind / f"{i:03d}.png", img)
            write(root / "ground_truth" / kind / f"{i:03d}_mask.png", mask)
    return root
