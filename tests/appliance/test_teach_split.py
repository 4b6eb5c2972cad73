"""Teach jobs hold out the newest good parts as the test's good side, as the line will meet them."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import InvalidInput
from appliance.workflows.teach import MIN_FIT, MIN_TEST_GOOD, split


def test_the_newest_share_is_held_out_to_test_on() -> None:
    frames = [Path(f"{i:05d}.png") for i in range(100)]  # teach frames, oldest first
    train, test = split(frames, 0.2)
    assert train == frames[:80] and test == frames[80:]
    train, test = split(frames[:50], 0.1)  # never fewer than MIN_TEST_GOOD
    assert len(test) == MIN_TEST_GOOD and test == frames[50 - MIN_TEST_GOOD : 50]


def test_too_few_good_parts_are_refused_with_the_numbers() -> None:
    with pytest.raises(InvalidInput, match=f"at least {MIN_FIT + MIN_TEST_GOOD}"):
        split([Path(f"{i}.png") for i in range(MIN_FIT + MIN_TEST_GOOD - 1)], 0.2)
