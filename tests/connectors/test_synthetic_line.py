"""The synthetic production line: deterministic, with masks that match its defects."""

from __future__ import annotations

import numpy as np
import pytest

from connectors.synthetic import DEFECT_KINDS, SyntheticLine


def test_same_seed_same_frames_different_seed_different_frames():
    a, b = SyntheticLine(seed=3).take(5), SyntheticLine(seed=3).take(5)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].image, SyntheticLine(seed=4).next().image)


def test_defect_rate_and_masks():
    parts = SyntheticLine(size=96, defect_rate=0.3, seed=1).take(300)
    defective = [p for p in parts if p.defect]
    assert 0.2 < len(defective) / len(parts) < 0.4
    assert all(p.mask.any() for p in defective)
    assert not any(p.mask.any() for p in parts if p.defect is None)
    assert {p.defect for p in defective} == set(DEFECT_KINDS)
    for p in parts:
        assert p.image.shape == (96, 96) and p.image.dtype == np.uint8


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_each_defect_changes_the_part_where_its_mask_is(kind):
    part = SyntheticLine(defect_rate=1.0, defect_kinds=[kind], seed=5).next()
    good = SyntheticLine(defect_rate=0.0, seed=5).next()  # same part and pose, no defect drawn
    assert part.defect == kind
    diff = np.abs(part.image.astype(int) - good.image.astype(int))
    assert np.percentile(diff[part.mask == 0], 99) <= 12  # elsewhere: sensor noise and soft edges
    assert diff[part.mask > 0].mean() > 5 * diff[part.mask == 0].mean()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown defect kind 'rust'"):
        SyntheticLine(defect_kinds=["rust"])
    with pytest.raises(ValueError, match="defect_rate"):
        SyntheticLine(defect_rate=1.5)
