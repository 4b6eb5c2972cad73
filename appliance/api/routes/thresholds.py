"""Thresholds T1 (review) and T2 (NG): read, set (audited, published retained), replay a
candidate pair on stored scores, the score histogram with presets, and the audit log."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from appliance import thresholds
from appliance.api.deps import AppDep, EngineDep, Engineer, Viewer
from appliance.api.schemas import PreviewIn, PreviewPublic, ScoresPublic, ThresholdsIn, ThresholdsPublic
from appliance.storage import queries, store
from models.decision import Thresholds

router = APIRouter(tags=["thresholds"])


@router.get("/thresholds")
def read_thresholds(appliance: AppDep, _: Viewer) -> ThresholdsPublic:
    """The active model's thresholds T1 (review) and T2 (NG)."""
    model = appliance.active_model()
    return ThresholdsPublic(t1=model.thresholds[0], t2=model.thresholds[1], model_version=model.version)


@router.put("/thresholds")
def update_thresholds(body: ThresholdsIn, appliance: AppDep, actor: Engineer) -> ThresholdsPublic:
    """Set T1/T2 with a reason: applied at once, audited, published retained on config/threshold."""
    model = appliance.active_model()
    old = model.thresholds
    model.set_thresholds(body.t1, body.t2)
    store.set_thresholds(
        appliance.engine,
        version=model.version,
        t1=body.t1,
        t2=body.t2,
        old=old,
        actor=actor.name,
        reason=body.reason,
        topic=appliance.topics.threshold,
    )
    return ThresholdsPublic(t1=body.t1, t2=body.t2, model_version=model.version)


@router.post("/thresholds/preview")
def create_threshold_preview(body: PreviewIn, appliance: AppDep, _: Viewer) -> PreviewPublic:
    """Replay stored scores: alerts a candidate T1/T2 would have raised, confirmed defects it would miss."""
    candidate = Thresholds.checked(body.t1, body.t2)
    replay = thresholds.preview(
        appliance.engine, thresholds=candidate, hours=body.hours, debounce=appliance.settings.debounce
    )
    return PreviewPublic(**replay)


@router.get("/thresholds/scores")
def read_threshold_scores(
    appliance: AppDep,
    _: Viewer,
    hours: float = Query(24.0, gt=0, le=24 * 90),
    limit: int = Query(20_000, ge=10, le=200_000),
    false_alarm_rate: float = Query(0.01, gt=0, lt=0.5),
) -> ScoresPublic:
    """Recent scores for the threshold histogram (OK items, unjudged flags, confirmed defects) with
    presets: T2 at a target false-alarm rate on the normal scores, and max-F1 where defects are labelled."""
    model = appliance.active_model()
    current = Thresholds(*model.thresholds)
    sets = thresholds.score_sets(appliance.engine, hours=hours, limit=limit)
    presets = thresholds.presets(sets["normal"], sets["confirmed"], current, false_alarm_rate)
    return ScoresPublic(hours=hours, **sets, t1=current.t1, t2=current.t2, model_version=model.version, presets=presets)


@router.get("/audit")
def read_audit_log(engine: EngineDep, _: Engineer, limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
    """Threshold and model changes: who, when, old, new, why."""
    return queries.audit_log(engine, limit=limit)
