"""Which turns and mirror images training may show the good images in (models.detector.symmetry)."""

import cv2
import numpy as np
import pytest

from models.detector.model import Detector, DetectorConfig
from models.detector.symmetry import orient, surface_orientations
from tests.helpers.parts import good_part


def surface(n: int, size: int, rng: np.random.Generator, kernel: tuple[int, int], ridges: float = 0.0) -> np.ndarray:
    """(n, 1, size, size) views of a surface: noise smoothed by a ``kernel`` (w, h) box, plus
    sawtooth ridges along x (rising slowly, falling steeply down the image) at a random offset."""
    yy = np.mgrid[0:size, 0:size][0].astype(np.float32)
    views = []
    for _ in range(n):
        noise = cv2.blur(rng.normal(0, 1, (size, size)).astype(np.float32), kernel)
        saw = ((yy + rng.uniform(0, 8)) % 8) / 8
        views.append(0.5 + 0.15 * noise / noise.std() + ridges * saw)
    return np.clip(np.stack(views)[:, None], 0, 1)


def test_a_surface_without_direction_is_shown_in_all_eight_orientations() -> None:
    images = surface(60, 48, np.random.default_rng(0), (3, 3))
    assert surface_orientations(images) == tuple(range(8))


def test_grain_and_lopsided_ridges_keep_the_orientations_that_would_change_them() -> None:
    rng = np.random.default_rng(1)
    brushed = surface(60, 48, rng, (15, 1))  # grain along x
    assert surface_orientations(brushed) == (0, 2, 4, 6)  # no quarter turn; half turn and mirrors keep it
    ridged = surface(60, 48, rng, (15, 1), ridges=0.3)  # and ridges whose steep side faces up
    assert surface_orientations(ridged) == (0, 4)  # only the mirror left to right keeps both


def test_aligned_parts_are_shown_as_they_come() -> None:
    rng = np.random.default_rng(2)
    washers = np.stack([good_part(64, rng) for _ in range(40)])[:, None].astype(np.float32) / 255
    assert surface_orientations(washers) == (0,)
    assert surface_orientations(surface(6, 48, rng, (3, 3))) == (0,)  # too few images to tell


def test_orientations_are_the_eight_turns_and_mirror_images() -> None:
    image = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    seen = {orient(image, o).tobytes() for o in range(8)}
    assert len(seen) == 8 and np.array_equal(orient(image, 0), image)


def test_training_batches_come_in_the_allowed_orientations_only() -> None:
    detector = Detector(DetectorConfig(size=16, ae_widths=(4,), clf_width=4))
    detector._rng = np.random.default_rng(0)
    batch = np.random.default_rng(3).random((64, 1, 16, 16), dtype=np.float32)
    detector.orientations = (0, 6)
    out = detector._orient(batch)
    as_is = np.all(out == batch, axis=(1, 2, 3))
    flipped = np.all(out == batch[:, :, ::-1], axis=(1, 2, 3))
    assert (as_is | flipped).all() and as_is.any() and flipped.any()


@pytest.mark.parametrize("value", ["sideways", ""])
def test_an_unknown_orientation_choice_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="orientations must be one of"):
        DetectorConfig(orientations=value)


def test_held_out_images_sharing_content_with_training_ones_keep_training_as_it_comes() -> None:
    """Turned copies of training images would make their held-out twins look seen (T2 too low)."""
    from models.detector.model import Split

    detector = Detector(DetectorConfig(size=48, ae_widths=(4,), clf_width=4))
    texture = surface(40, 48, np.random.default_rng(4), (3, 3))
    idx = np.arange(3)
    found, note = detector._orientations(texture, Split(idx, idx, twins_across=0))
    assert found == tuple(range(8)) and "looks the same" in note
    found, note = detector._orientations(texture, Split(idx, idx, twins_across=7))
    assert found == (0,) and "share content with training images" in note
    found, _ = detector._orientations(texture, Split(idx, idx, twins_across=30, look_alike=True))
    assert found == tuple(range(8))  # one product throughout: look-alikes, not shared content
    detector.config.orientations = "none"
    assert detector._orientations(texture, Split(idx, idx))[0] == (0,)
