"""Threshold tuning on stored scores: what a candidate T1/T2 would have done (replayed through the
same :func:`models.decision.decide` as the line, debounce included), and the score sets with
presets that the console's histogram shows."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.engine import Engine

from appliance.storage import queries
from appliance.storage.models import utcnow
from models.calibration import calibrate, max_f1_threshold
from models.decision import Debounce, Thresholds, decide

SHIFT_HOURS = 8


def preview(
    engine: Engine,
    *,
    thresholds: Thresholds,
    hours: float,
    debounce: tuple[int, int] | None = None,
    scope: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    """Replay the stored scores of the last ``hours`` (of one source and model version, with
    ``scope``): alerts per hour and per shift the candidate thresholds would have raised, and the
    confirmed defects they would have missed."""
    since = utcnow() - dt.timedelta(hours=hours)
    scope = scope or {}
    states: dict[str, Debounce] = {}
    counts = {"ok": 0, "review": 0, "ng": 0}
    replayed = queries.scores_in_order(engine, since=since, **scope)
    for source_id, score in replayed:
        state = states.setdefault(source_id, Debounce(*debounce)) if debounce else None
        counts[decide(score, thresholds, state)] += 1
    confirmed = [s for s, _ in queries.alert_scores(engine, since=since, states=("confirmed",), **scope)]
    first = queries.first_capture(engine, since=since, **scope)
    span = max((utcnow() - first).total_seconds() / 3600, 1 / 60) if first else hours
    flagged = counts["ng"] + counts["review"]
    return {
        "hours": span,
        "inspections": len(replayed),
        "alerts_per_hour": flagged / span,
        "ng_per_hour": counts["ng"] / span,
        "review_per_hour": counts["review"] / span,
        "alerts_per_shift": flagged / span * SHIFT_HOURS,
        "confirmed_defects": len(confirmed),
        "missed_confirmed_defects": sum(decide(c, thresholds) == "ok" for c in confirmed),
    }


def score_sets(
    engine: Engine, *, hours: float, limit: int, scope: dict[str, str | None] | None = None
) -> dict[str, list[float]]:
    """Recent scores (of one source and model version, with ``scope``): ``normal`` (OK decisions,
    alerts judged false positive), ``flagged`` (alerts not judged yet) and ``confirmed`` (alerts
    confirmed as defects)."""
    since = utcnow() - dt.timedelta(hours=hours)
    scope = scope or {}
    rows = queries.recent_scores(engine, since=since, limit=limit, **scope)
    judged = queries.alert_scores(engine, since=since, **scope)
    return {
        "normal": [s for s, d in rows if d == "ok"] + [s for s, st in judged if st == "false_positive"],
        "flagged": [s for s, st in judged if st in ("open", "acknowledged")],
        "confirmed": [s for s, st in judged if st == "confirmed"],
    }


def presets(
    normal: list[float],
    confirmed: list[float],
    current: Thresholds,
    false_alarm_rate: float,
    upper: float | None = None,
) -> dict[str, dict[str, float]]:
    """T1/T2 at a target false-alarm rate on the normal scores (the model's own calibration rule,
    given 20 or more; ``upper``: the score's attainable maximum), and max-F1 where defects are
    confirmed."""
    out: dict[str, dict[str, float]] = {}
    if len(normal) >= 20:
        fit = calibrate(normal, false_alarm_rate, review_rate=min(0.5, 5 * false_alarm_rate), upper=upper)
        out["false_alarm_rate"] = {"t1": fit.t1, "t2": fit.t2, "rate": false_alarm_rate}
    if normal and confirmed:
        t2, f1 = max_f1_threshold(normal, confirmed)
        out["max_f1"] = {"t1": min(current.t1, t2), "t2": t2, "f1": f1}
    return out
