"""Teach jobs hold out good parts for the test's good side as the detector picks its calibration images."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import InvalidInput
from appliance.workflows.teach import MIN_FIT, MIN_TEST_GOOD, split


def test_the_held_out_share_is_chosen_as_the_detector_chooses_its_calibration_images() -> None:
    from models.calibration import HOLDOUT_ORDER, holdout_split

    frames = [Path(f"{i:05d}.png") for i in range(100)]  # teach frames, oldest first
    train, test = split(frames, 0.2)
    held, kept = holdout_split(100, 0.2, MIN_FIT, 0, HOLDOUT_ORDER, min_held=MIN_TEST_GOOD)
    assert test == [frames[i] for i in held] and train == [frames[i] for i in kept]
    assert len(test) == 20 and not set(train) & set(test) and len(train) + len(test) == 100
    _, test = split(frames[:50], 0.1)  # never fewer than MIN_TEST_GOOD
    assert len(test) == MIN_TEST_GOOD


def test_too_few_good_parts_are_refused_with_the_numbers() -> None:
    with pytest.raises(InvalidInput, match=f"at least {MIN_FIT + MIN_TEST_GOOD}"):
        split([Path(f"{i}.png") for i in range(MIN_FIT + MIN_TEST_GOOD - 1)], 0.2)


def test_no_test_part_keeps_a_near_twin_among_the_detectors_images() -> None:
    import numpy as np

    from models.calibration import twins_across

    frames = [Path(f"{i:05d}.png") for i in range(100)]
    part = np.arange(100) // 4  # each part in 4 successive frames
    twins = (part[:, None] == part[None]) & ~np.eye(100, dtype=bool)
    train, test = split(frames, 0.2, twins)
    assert len(test) == 20 and len(train) == 80 and not set(train) & set(test)
    held, kept = [frames.index(p) for p in test], [frames.index(p) for p in train]
    assert twins_across(np.array(held), np.array(kept), twins) == 0 and len({part[i] for i in held}) == 5
