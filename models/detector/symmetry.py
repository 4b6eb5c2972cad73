"""The orientations a surface looks the same in: turns and mirror images that training may show.

A detector trained on random crops of a texture sees each patch of it in one orientation only,
and may then call the same texture turned a little differently new. Where the good images look
the same turned or mirrored, training shows them that way too (each crop in one of the allowed
orientations, at random): on the made granular surface image AUROC 0.899 → 0.956 (seed 0) and
0.896 → 0.919 (seed 1), with no false alarm on new surface (1.7 % and 3.3 % before). Where they
do not, it must not: a part that always comes upright, a brushed surface whose grain runs one
way, light that always falls from one side. (Where held-out images share content with training
images, :class:`models.detector.model.Detector` trains as they come whatever the surface.)

Two checks, on the good images themselves (:func:`surface_orientations`):

- **aligned parts**: the mean image has structure (its spatial spread is large against the
  spread between images at a pixel). Every image of a part placed in a fixture adds up to the
  part; random views of a texture average to a flat field. Aligned images keep their orientation.
- **direction statistics**: the histogram of signed gradient directions (16 bins over 360°,
  weighted by the squared gradient magnitude, so that a steep edge outweighs the gentle slope
  that balances it in a periodic profile) of the images, against that of the images in each of
  the other 7 orientations. An orientation is allowed where the two differ by no more than
  ``TOLERANCE`` × what two random halves of the good images differ by (their sampling noise).
  Grain and its direction, lighting from one side (bright edges facing one way) and skewed
  ridges all show in it; a mirror-image texture with identical gradient statistics (chirality)
  does not, which surfaces made on a line rarely have.

On the made surfaces: granular, woven, foliage and bokeh allow all 8; brushed metal (grain in
one direction, lit from one side) only its half-turned mirror image; the synthetic line's parts
(aligned, mean-image spread 3.3 × the spread between images, against at most 0.14 for the
textures) none.
"""

from __future__ import annotations

import cv2
import numpy as np

ORIENTATION_CHOICES = ("auto", "none", "all")  # DetectorConfig.orientations: this module decides, as they come, all 8
ORIENTATIONS = 8  # o = 0..3: o quarter-turns; 4..7: mirrored, then o - 4 quarter-turns
ALIGNED = 0.5  # mean image's spatial spread / the per-pixel spread between images above this: aligned parts
TOLERANCE = 3.0  # an orientation's histogram may differ by this × the halves' sampling noise
BINS = 16
MAX_IMAGES = 400  # a random subset of larger sets is examined
MIN_IMAGES = 8  # fewer say nothing about the surface: no orientation beyond the identity


def orient(image: np.ndarray, o: int) -> np.ndarray:
    """Image (..., H, W) in orientation ``o`` (0: as it is)."""
    if o >= 4:
        image = image[..., ::-1]
    return np.rot90(image, o % 4, axes=(-2, -1))


def _direction_histogram(grey: np.ndarray) -> np.ndarray:
    """Histogram of signed gradient directions, weighted by squared magnitude, of (N, H, W) images, summing to 1."""
    total = np.zeros(BINS)
    for image in grey:
        gx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3)
        bins = ((np.arctan2(gy, gx) + np.pi) / (2 * np.pi) * BINS).astype(int) % BINS
        total += np.bincount(bins.ravel(), (gx * gx + gy * gy).ravel(), BINS)
    return total / max(total.sum(), 1e-12)


def aligned(images: np.ndarray) -> bool:
    """Whether (N, C, H, W) images are aligned parts: their mean image has structure."""
    between = images.std(axis=0).mean()  # each pixel's spread between images
    structure = images.mean(axis=0).std(axis=(1, 2)).mean()  # the mean image's spatial spread, per channel
    return bool(structure > ALIGNED * max(float(between), 1e-6))


def surface_orientations(images: np.ndarray, seed: int = 0) -> tuple[int, ...]:
    """The orientations (0 always first) in which good images (N, C, H, W) in [0, 1] look the
    same by their gradient-direction statistics; (0,) for aligned parts and for square images
    too few or not square."""
    n, _, h, w = images.shape
    if n < MIN_IMAGES or h != w:
        return (0,)
    rng = np.random.default_rng(seed)
    if n > MAX_IMAGES:
        images = images[rng.choice(n, MAX_IMAGES, replace=False)]
    if aligned(images):
        return (0,)
    grey = np.ascontiguousarray(images.mean(axis=1, dtype=np.float32))
    base = _direction_histogram(grey)
    noise = np.mean(
        [
            np.abs(_direction_histogram(grey[p[::2]]) - _direction_histogram(grey[p[1::2]])).sum()
            for p in (rng.permutation(len(grey)) for _ in range(3))
        ]
    )
    allowed = [0]
    for o in range(1, ORIENTATIONS):
        turned = np.ascontiguousarray(orient(grey, o))
        if np.abs(_direction_histogram(turned) - base).sum() <= TOLERANCE * noise:
            allowed.append(o)
    return tuple(allowed)


def describe(orientations: tuple[int, ...], why: str = "") -> str:
    """What a fit log says about the orientations training used (``why``: the reason, when not
    the surface's own)."""
    if len(orientations) == 1:
        return f"training shows the good images as they come ({why or 'aligned parts, or a surface with a direction'})"
    return (
        f"training shows the good images in {len(orientations)} of the 8 turns and mirror images "
        f"({why or 'the surface looks the same in them'})"
    )
