"""Near-twin images: good images that share content, kept on one side of a calibration split.

A threshold calibrated on held-out images is honest only if those images are as new to the
detector as the parts it will judge. Two kinds of good images are not: one part seen in successive
frames, and overlapping views of a continuous surface (a web, a sheet, a large part photographed
in tiles). Held out beside their twins in training, they score like training images and the
threshold comes out too low: on a made photograph (200 overlapping 64 px patches of bokeh, in
colour) a random calibration share let 10 % of good patches from unseen regions past T2 at a
nominal 1 % with one seed (0 % with another), and 0 % with both once no calibration patch had a
twin in training.

Twins are found by phase correlation (the peak of the whitened cross-power spectrum: high when
two images show the same content at some shift), in each of the 8 orientations (turns and mirror
images), on grey, Hann-windowed 32 px thumbnails. Images are linked when the peak reaches
``threshold`` (0.5 by default: views shifted by up to about a quarter of their side; a 64 px
view of a photograph against itself shifted 8 px both ways peaks at 0.69, 16 px down at 0.66,
24 px across at 0.20, and unrelated texture patches below 0.3);
:func:`models.calibration.holdout_split` then keeps every held-out image's twins out of
training. Parts that merely look alike (every image of one product) link to nearly every other
image; no split can keep them apart and the split falls back to single random images.
"""

from __future__ import annotations

import cv2
import numpy as np
import scipy.fft

THUMB = 32  # px: twins share coarse structure; the cost grows with the square of this
THRESHOLD = 0.5
MAX_IMAGES = 1000  # larger sets are not searched (about 40 s at 1,000 images on 2 busy cores)
PAIRS = 8192  # image pairs compared at once (about 36 MB of spectra)


def _thumbnails(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) in [0, 1] → (N, THUMB, THUMB) grey, zero-mean, Hann-windowed (no edge jump)."""
    grey = images.mean(axis=1, dtype=np.float32)
    small = np.stack([cv2.resize(g, (THUMB, THUMB), interpolation=cv2.INTER_AREA) for g in grey])
    small -= small.mean(axis=(1, 2), keepdims=True)
    return small * np.outer(np.hanning(THUMB), np.hanning(THUMB)).astype(np.float32)


def _whitened(thumbs: np.ndarray) -> np.ndarray:
    spectrum = scipy.fft.rfft2(thumbs, workers=-1)
    return spectrum / (np.abs(spectrum) + 1e-6)


def twin_peaks(images: np.ndarray) -> np.ndarray:
    """(N, N) phase-correlation peaks between images (N, C, H, W), best over the 8 orientations
    (turns and mirror images) of the thumbnails; the diagonal is 1."""
    thumbs = _thumbnails(images)
    turned = [np.rot90(t, k, axes=(1, 2)) for t in (thumbs, thumbs[:, :, ::-1]) for k in range(4)]
    base = _whitened(thumbs)
    n = len(images)
    peaks = np.zeros((n, n), np.float32)
    block = max(1, PAIRS // n)
    for t in turned:
        other = np.conj(_whitened(np.ascontiguousarray(t)))
        for i in range(0, n, block):  # the peak is symmetric: rows i.. against columns i.. only
            cross = base[i : i + block, None] * other[None, i:]  # (block, N - i, THUMB, THUMB // 2 + 1)
            corr = scipy.fft.irfft2(cross, s=(THUMB, THUMB), workers=-1).reshape(*cross.shape[:2], -1)
            np.maximum(peaks[i : i + block, i:], corr.max(axis=2), out=peaks[i : i + block, i:])
    peaks = np.maximum(peaks, peaks.T)
    np.fill_diagonal(peaks, 1.0)
    return peaks


def twin_links(images: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray | None:
    """(N, N) booleans: which images share content with which (peak at least ``threshold``);
    None for more than ``MAX_IMAGES`` images, which are not searched."""
    if len(images) > MAX_IMAGES:
        return None
    links = twin_peaks(images) >= threshold
    np.fill_diagonal(links, False)
    return links
