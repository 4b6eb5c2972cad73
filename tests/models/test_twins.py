"""Near-twin search on real photographs (scikit-learn's sample images)."""

import numpy as np
import pytest
from sklearn.datasets import load_sample_images

from models.detector.twins import twin_links, twin_peaks


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [img.mean(axis=2).astype(np.float32) / 255 for img in load_sample_images().images]


def crop(img: np.ndarray, y: int, x: int, size: int = 64) -> np.ndarray:
    return img[None, y : y + size, x : x + size]


def test_overlapping_views_are_twins_in_any_orientation_and_distinct_views_are_not(photos) -> None:
    temple, flower = photos
    images = np.stack(
        [
            crop(temple, 100, 100),
            crop(temple, 108, 108),  # shifted by an eighth of its side
            np.rot90(crop(temple, 96, 104), 1, axes=(1, 2))[:, ::-1].copy(),  # turned, mirrored, shifted
            crop(temple, 300, 400),  # the same photograph elsewhere
            crop(flower, 100, 100),  # another photograph
            crop(flower, 200, 300),
        ]
    )
    peaks = twin_peaks(images)
    assert peaks[0, 1] > 0.6 and peaks[0, 2] > 0.6 and peaks[1, 2] > 0.5
    assert peaks[0, 3:].max() < 0.35 and peaks[4, 5] < 0.35
    links = twin_links(images)
    assert links[0, 1] and links[1, 0] and links[0, 2] and not links[0, 3] and not links[:, 4].any()
    assert not links.diagonal().any()


def test_the_fit_log_says_which_split_it_made() -> None:
    from models.detector.model import Split

    idx = np.arange(3)
    assert Split(idx, idx).describe() == ""  # twins not looked for
    assert "31 of their near-twins set aside" in Split(idx, idx, left_out=31, twins_across=0).describe()
    assert "look alike throughout" in Split(idx, idx, twins_across=40, look_alike=True).describe()
    dense = Split(idx, idx, twins_across=40).describe()
    assert "overlap too densely" in dense and "40 of the held-out ones" in dense and "more false alarms" in dense
