"""The engine's seeded random generator: ``seed(n)`` makes initialisation reproducible."""

from __future__ import annotations

import numpy as np

_generator = np.random.default_rng(313)


def seed(value: int) -> None:
    """Reset the generator used by initializers and dropout when none is given."""
    global _generator
    _generator = np.random.default_rng(value)


def generator(rng: np.random.Generator | None = None) -> np.random.Generator:
    return _generator if rng is None else rng
