"""Trials as the search sees them, NNC's Pareto marking, the hypervolume of a front, and the
trials new candidates are mutated from."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from models.search.features import Spec
from models.search.space import Limits


# -- trials, the Pareto front and the two selection methods -------------------------------------
@dataclass
class Trial:
    """A finished (or failed) trial as the search sees it."""

    id: int
    key: str
    spec: Spec
    error: float | None
    multiply_adds: int
    status: str  # done | stopped_early | failed | time_limit
    parent: int | None = None
    mutations: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return self.status == "done" and self.error is not None and math.isfinite(self.error)


def pareto_flags(errors: Sequence[float | None], madds: Sequence[int], usable: Sequence[bool]) -> list[bool]:
    """NNC's marking rule: a trial is on the front when no other trial is at least as good in both
    validation error and multiply-adds and better in one of them."""
    flags = []
    for i, (e, m, ok) in enumerate(zip(errors, madds, usable, strict=True)):
        if not ok or e is None:
            flags.append(False)
            continue
        dominated = any(
            j != i
            and usable[j]
            and errors[j] is not None
            and errors[j] <= e
            and madds[j] <= m
            and (errors[j] < e or madds[j] < m)
            for j in range(len(errors))
        )
        flags.append(not dominated)
    return flags


def hypervolume(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` (both coordinates minimised) up to ``reference``: one number
    for a whole Pareto front, larger is better."""
    inside = sorted((x, y) for x, y in points if x < reference[0] and y < reference[1])
    area, best_y = 0.0, reference[1]
    for i, (x, y) in enumerate(inside):
        best_y = min(best_y, y)
        next_x = inside[i + 1][0] if i + 1 < len(inside) else reference[0]
        area += (next_x - x) * (reference[1] - best_y)
    return area


def reference_error(trials: Sequence[Trial], madds: int, objective: str, fallback: float) -> float:
    """The error a candidate must beat to improve the result: the best error overall (objective
    ``error``), or the best among trials at most as heavy as it (``error_and_madds``)."""
    pool = [t.error for t in trials if t.usable and (objective == "error" or t.multiply_adds <= madds)]
    return float(min(pool)) if pool else fallback


def parents(trials: Sequence[Trial], objective: str, limits: Limits) -> list[Trial]:
    """The trials new candidates are mutated from; empty until one has finished."""
    good = [t for t in trials if t.usable and limits.error_ok(t.error)] or [t for t in trials if t.usable]
    if objective == "error":
        return sorted(good, key=lambda t: t.error)[:3]
    flags = pareto_flags([t.error for t in good], [t.multiply_adds for t in good], [True] * len(good))
    return [t for t, f in zip(good, flags, strict=True) if f]
