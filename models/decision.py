"""The decision, made here and only here: OK / review / NG from a score and two thresholds
T1 ≤ T2 (``ok`` < T1 ≤ ``review`` < T2 ≤ ``ng``), with an optional N-of-M debounce per source.

The serving path (:class:`models.inference.Inferencer`), the live pipeline and the threshold
preview all call :func:`decide`; storage and alerts read the decision it made and the thresholds
it used (carried on the :class:`models.inference.Result`).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

FLAGGED = frozenset({"review", "ng"})  # the decisions that raise an alert


class ThresholdError(ValueError):
    """Thresholds that cannot decide anything (NaN, infinite where a person sets them, T1 > T2)."""


@dataclass(frozen=True)
class Thresholds:
    """T1 (review) and T2 (NG). A model without calibration has infinite ones (never flags)."""

    t1: float
    t2: float

    def __post_init__(self) -> None:
        if math.isnan(self.t1) or math.isnan(self.t2) or self.t1 > self.t2:
            msg = f"thresholds must be finite with T1 <= T2: T1 ({self.t1}) must not exceed T2 ({self.t2})"
            raise ThresholdError(msg)

    @classmethod
    def checked(cls, t1: float, t2: float) -> Thresholds:
        """Thresholds a person sets: finite, and T1 <= T2."""
        if not (math.isfinite(t1) and math.isfinite(t2)):
            msg = f"thresholds must be finite with T1 <= T2, got T1={t1}, T2={t2}"
            raise ThresholdError(msg)
        return cls(float(t1), float(t2))

    def as_tuple(self) -> tuple[float, float]:
        return (self.t1, self.t2)

    def crossed(self, decision: str) -> float:
        """The threshold a flagged item crossed: T2 for NG, T1 for review."""
        return self.t2 if decision == "ng" else self.t1


class Debounce:
    """N of M: an NG stays NG only when N of the source's last M items were NG; otherwise it is
    a review. One per source, fed every decision in capture order."""

    def __init__(self, n: int, m: int) -> None:
        if not 1 <= n <= m:
            msg = f"debounce needs 1 <= N <= M, got N={n}, M={m}"
            raise ThresholdError(msg)
        self.n, self.history = n, deque(maxlen=m)

    def apply(self, decision: str) -> str:
        self.history.append(decision == "ng")
        return "review" if decision == "ng" and sum(self.history) < self.n else decision


def decide(score: float, thresholds: Thresholds, debounce: Debounce | None = None) -> str:
    """``ok``, ``review`` or ``ng`` for one score."""
    if score >= thresholds.t2:
        decision = "ng"
    else:
        decision = "review" if score >= thresholds.t1 else "ok"
    return decision if debounce is None else debounce.apply(decision)


def is_flagged(decision: str) -> bool:
    """Whether a decision raises an alert."""
    return decision in FLAGGED
