"""Shadow mode: a candidate model scores every frame a source's model scores, on the live line,
and decides nothing (no alerts, nothing published). Its results are stored beside the source's
model's (``shadowresult``, with both heat maps where the two disagree); this module compares them.

The comparison of one shadow (:func:`comparison`):

- agreement of decisions and the confusion table (the source's model × the shadow);
- each one's alert rate (review + NG) overall, per hour and per shift;
- the distributions of their normalised scores (T2 at 0.5 for both, so they share an axis);
- on the alerts operators judged: confirmed defects the shadow would have caught too, false
  positives it would have raised too (what only the shadow flags has no verdict: counted apart);
- the newest disagreements, with links to the image and both heat maps.

While a shadow runs it is computed from the stored results (those of the raw window); when it ends
(promoted or stopped) it is kept with the shadow's row, so the model's record holds it.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy.engine import Engine

from appliance.storage import queries
from appliance.storage.models import ShadowBinding, as_utc

DECISIONS = ("ok", "review", "ng")
KEPT_SCORES = 2000  # normalised scores of each model kept with an ended shadow


def _binding(b: ShadowBinding) -> dict[str, Any]:
    return {
        "id": b.id,
        "source_id": b.source_id,
        "model_version": b.model_version,
        "state": "running" if b.ended_at is None else b.outcome,
        "started_at": as_utc(b.started_at).isoformat(),
        "started_by": b.started_by,
        "reason": b.reason,
        "ended_at": None if b.ended_at is None else as_utc(b.ended_at).isoformat(),
        "ended_by": b.ended_by,
    }


def _shift(hour: dt.datetime, shift_hours: int, first_shift_hour: int) -> dt.datetime:
    """The start of the shift an hour belongs to (shifts of ``shift_hours`` from ``first_shift_hour``)."""
    return hour - dt.timedelta(hours=(hour.hour - first_shift_hour) % shift_hours)


def comparison(
    engine: Engine,
    binding: ShadowBinding,
    *,
    api_url: str = "",
    disagreements: int = 24,
    scores: int = 5000,
    shift_hours: int = 8,
    first_shift_hour: int = 6,
) -> dict[str, Any]:
    """The shadow compared with the source's model (see the module); an ended shadow's kept one."""
    if binding.ended_at is not None and binding.summary:
        return json.loads(binding.summary) | {"binding": _binding(binding)}
    bid = int(binding.id)
    upto = queries.shadow_last(engine, binding_id=bid)
    confusion = {a: dict.fromkeys(DECISIONS, 0) for a in DECISIONS}
    for active, shadow, n in queries.shadow_confusion(engine, binding_id=bid, upto=upto):
        confusion.setdefault(active, dict.fromkeys(DECISIONS, 0))[shadow] = n
    frames = sum(sum(row.values()) for row in confusion.values())
    agree = sum(confusion[d][d] for d in DECISIONS)
    hours = queries.shadow_hourly(engine, binding_id=bid, upto=upto)
    shifts: dict[dt.datetime, list[int]] = {}
    for hour, n, a, s in hours:
        totals = shifts.setdefault(_shift(hour, shift_hours, first_shift_hour), [0, 0, 0])
        for i, v in enumerate((n, a, s)):
            totals[i] += v
    flagged_active = sum(a for _, _, a, _ in hours)
    flagged_shadow = sum(s for _, _, _, s in hours)
    verdicts = {"confirmed": {"n": 0, "shadow_caught": 0}, "false_positive": {"n": 0, "shadow_raised": 0}}
    for state, decision, n in queries.shadow_verdicts(engine, binding_id=bid, upto=upto):
        key = "shadow_caught" if state == "confirmed" else "shadow_raised"
        verdicts[state]["n"] += n
        verdicts[state][key] += n if decision in queries.FLAGGED else 0
    pairs = queries.shadow_scores(engine, binding_id=bid, upto=upto, limit=scores)
    base = api_url.rstrip("/")
    return {
        "binding": _binding(binding),
        "frames": frames,
        "agreement": agree / frames if frames else None,
        "confusion": confusion,
        "alert_rate": {
            "active": flagged_active / frames if frames else None,
            "shadow": flagged_shadow / frames if frames else None,
        },
        # flagged by one model only: the shadow's have no verdict (nobody saw an alert for them)
        "only_active_flagged": confusion["review"]["ok"] + confusion["ng"]["ok"],
        "only_shadow_flagged": confusion["ok"]["review"] + confusion["ok"]["ng"],
        "hours": [
            {"hour": h.isoformat(), "frames": n, "active_flagged": a, "shadow_flagged": s} for h, n, a, s in hours
        ],
        "shifts": [
            {"start": start.isoformat(), "hours": shift_hours, "frames": n, "active_rate": a / n, "shadow_rate": s / n}
            for start, (n, a, s) in sorted(shifts.items())
            if n
        ],
        "scores": {"active": [a for a, _ in pairs], "shadow": [s for _, s in pairs]},
        "verdicts": verdicts,
        "disagreements": [
            {
                "id": r.id,
                "t_capture": as_utc(r.t_capture).isoformat(),
                "inspection_id": r.inspection_id,
                "active_decision": r.active_decision,
                "active_score": r.active_score,
                "decision": r.decision,
                "score": r.score,
                "image_url": f"{base}/inspections/{r.inspection_id}/image" if r.inspection_id else None,
                "active_heatmap_url": f"{base}/inspections/{r.inspection_id}/heatmap" if r.inspection_id else None,
                "shadow_heatmap_url": (
                    f"{base}/models/{binding.model_version}/shadow/results/{r.id}/heatmap" if r.heatmap_ref else None
                ),
            }
            for r in queries.shadow_disagreements(engine, binding_id=bid, upto=upto, limit=disagreements)
        ],
    }


def kept(summary: dict[str, Any]) -> dict[str, Any]:
    """What an ended shadow keeps of its comparison (the score lists trimmed)."""
    out = {k: v for k, v in summary.items() if k != "binding"}
    out["scores"] = {k: v[:KEPT_SCORES] for k, v in summary["scores"].items()}
    return out
