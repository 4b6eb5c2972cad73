"""Synthetic anomalies made from normal images, for training the discriminative network.

Masks: Perlin-like noise blobs (octaves of smooth random noise, thresholded), thick lines, and
patches. Fills: a patch cut from elsewhere in the same image or from another normal image, a
blurred copy, a brightness change, flat paint, a shading ramp, noise, or a crop of a procedural
texture (stripes, grids, cells, marble, wood, speckle, scratches, clouds: DRAEM's texture source,
made here instead of downloaded) in a random intensity range; blended with a random opacity, from
faint to opaque. The detector learns "what is not normal" from these without ever seeing a real
defect (the DRAEM / CutPaste family).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

TEXTURES = ("stripes", "grid", "cells", "marble", "wood", "speckle", "scratches", "clouds")


def perlin_like(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise in [0, 1]: random grids at a few scales, upsampled bicubically and summed."""
    field = np.zeros((h, w), np.float32)
    base = 2 ** rng.integers(1, 4)
    for octave in range(3):
        cells = base * 2**octave
        grid = rng.normal(0, 1, (cells + 1, cells + 1)).astype(np.float32)
        field += cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC) / 2**octave
    field -= field.min()
    return field / (field.max() + 1e-6)


def _texture(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One procedural texture in [0, 1], ``size`` × ``size``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    turbulence = perlin_like(size, size, rng) * 2 - 1
    angle = rng.uniform(0, np.pi)
    along = np.cos(angle) * xx + np.sin(angle) * yy
    if kind == "stripes":
        t = np.sin(along * rng.uniform(0.3, 1.2) + 2 * turbulence)
    elif kind == "grid":
        period = rng.uniform(4, 12)
        across = -np.sin(angle) * xx + np.cos(angle) * yy
        t = ((np.floor(along / period) + np.floor(across / period)) % 2) * 2 - 1
    elif kind == "cells":
        seeds = np.ones((size, size), np.uint8)
        seeds[rng.integers(0, size, 60), rng.integers(0, size, 60)] = 0
        t = cv2.distanceTransform(seeds, cv2.DIST_L2, 3)
        t = t / (t.max() + 1e-6) * 2 - 1
    elif kind == "marble":
        t = np.sin(along * rng.uniform(0.05, 0.2) + 6 * turbulence)
    elif kind == "wood":
        r = np.hypot(xx - rng.uniform(0, size), yy - rng.uniform(0, size))
        t = np.sin(r * rng.uniform(0.3, 0.8) + 3 * turbulence)
    elif kind == "speckle":
        t = np.where(rng.random((size, size)) < rng.uniform(0.05, 0.3), 1.0, -1.0).astype(np.float32)
    elif kind == "scratches":
        t = np.full((size, size), -1.0, np.float32)
        for _ in range(int(rng.integers(10, 30))):
            p0, p1 = rng.integers(0, size, 2), rng.integers(0, size, 2)
            cv2.line(t, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), 1.0, 1, cv2.LINE_AA)
    else:  # clouds
        t = turbulence
    t = t.astype(np.float32)
    return (t - t.min()) / (t.max() - t.min() + 1e-6)


@functools.lru_cache(maxsize=4)
def texture_bank(size: int) -> tuple[np.ndarray, ...]:
    """Two of each procedural texture at twice ``size``, made once (the same every run)."""
    rng = np.random.default_rng(20240)
    return tuple(_texture(kind, 2 * size, rng) for kind in TEXTURES for _ in range(2))


def texture_fill(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """A crop of a procedural texture, turned, possibly inverted, with a random gamma, mapped to a
    random intensity range (tinted per channel for colour images)."""
    c, h, w = shape
    bank = texture_bank(max(h, w))
    source = bank[int(rng.integers(len(bank)))]
    y, x = int(rng.integers(0, source.shape[0] - h + 1)), int(rng.integers(0, source.shape[1] - w + 1))
    t = np.rot90(source[y : y + h, x : x + w], int(rng.integers(4))) if h == w else source[y : y + h, x : x + w]
    t = t ** rng.uniform(0.5, 2.0)
    if rng.random() < 0.5:
        t = 1 - t
    lo = rng.uniform(0.0, 0.7, size=(c, 1, 1)) if c > 1 else rng.uniform(0.0, 0.7)
    span = rng.uniform(0.15, 1.0 - np.max(lo))
    return np.clip(lo + span * t[None], 0, 1).astype(np.float32)


def blob_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    noise = perlin_like(h, w, rng)
    mask = (noise > rng.uniform(0.6, 0.8)).astype(np.float32)
    if mask.sum() < 4:  # too small to learn from: take the top few percent instead
        mask = (noise >= np.quantile(noise, 0.97)).astype(np.float32)
    return mask


def line_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros((h, w), np.float32)
    for _ in range(rng.integers(1, 3)):
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(mask, p0, p1, 1.0, int(rng.integers(1, max(2, h // 20))), cv2.LINE_8)
    return mask


def patch_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros((h, w), np.float32)
    ph, pw = int(h * rng.uniform(0.08, 0.25)), int(w * rng.uniform(0.08, 0.25))
    y, x = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
    if rng.random() < 0.5:
        cv2.ellipse(mask, (x + pw // 2, y + ph // 2), (pw // 2, ph // 2), rng.uniform(0, 180), 0, 360, 1.0, -1)
    else:
        mask[y : y + ph, x : x + pw] = 1
    return mask


def _fill(images: np.ndarray, i: int, rng: np.random.Generator) -> np.ndarray:
    """Replacement content for image ``i`` (C, H, W)."""
    x = images[i]
    c, h, w = x.shape
    choice = rng.integers(10)
    if choice >= 7:  # DRAEM's texture source: the fill that matters most in its ablation
        return texture_fill(x.shape, rng)
    if choice == 0:  # elsewhere in the same image
        return np.roll(x, (int(rng.integers(h // 4, 3 * h // 4)), int(rng.integers(w // 4, 3 * w // 4))), axis=(1, 2))
    if choice == 1 and len(images) > 1:  # another normal image, flipped and shifted
        other = images[(i + 1 + rng.integers(len(images) - 1)) % len(images)]
        return np.roll(other[:, ::-1, ::-1], (int(rng.integers(h)), int(rng.integers(w))), axis=(1, 2))
    if choice == 2:
        sigma = rng.uniform(1.5, 4.0)
        return np.stack([cv2.GaussianBlur(ch, (0, 0), sigma) for ch in x])
    if choice == 3:
        return np.clip(x + rng.choice([-1, 1]) * rng.uniform(0.15, 0.4), 0, 1)
    if choice == 4:  # paint: a flat intensity
        return np.full_like(x, rng.uniform(0.0, 1.0))
    if choice == 5:  # shading: a brightness ramp in a random direction (light on a bump or dent)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(angle) * (xx - w / 2) + np.sin(angle) * (yy - h / 2)) / (0.25 * max(h, w))
        return np.clip(x + rng.uniform(0.1, 0.35) * np.sin(ramp * rng.uniform(2, 6)), 0, 1)
    return np.clip(x.mean() + rng.uniform(0.1, 0.3) * rng.normal(0, 1, x.shape), 0, 1).astype(np.float32)


def synthesize(images: np.ndarray, rng: np.random.Generator, probability: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Anomalous versions of a (N, C, H, W) batch in [0, 1] and their masks (N, 1, H, W).

    Each image is changed with ``probability``; unchanged ones get an empty mask.
    """
    n, _, h, w = images.shape
    out = images.copy()
    masks = np.zeros((n, 1, h, w), np.float32)
    makers = (blob_mask, blob_mask, line_mask, patch_mask)
    for i in range(n):
        if rng.random() >= probability:
            continue
        mask = makers[rng.integers(len(makers))](h, w, rng)
        blend = mask * rng.uniform(0.15, 1.0)  # from faint (soft stains) to opaque
        if rng.random() < 0.35:  # soft edges, for smooth defects (shading, stains)
            blend = cv2.GaussianBlur(blend, (0, 0), rng.uniform(1.0, 4.0))
        fill = _fill(images, i, rng)
        out[i] = images[i] * (1 - blend) + fill * blend
        masks[i, 0] = np.abs(out[i] - images[i]).max(axis=0) > 0.02  # label what visibly changed
    return out, masks
