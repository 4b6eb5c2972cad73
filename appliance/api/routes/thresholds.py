"""Thresholds T1 (review) and T2 (NG): read, set (audited, published retained), replay a
candidate pair on stored scores, the score histogram with presets, and the audit log."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from appliance import thresholds
from appliance.api.deps import AppDep, EngineDep, Engineer, Viewer
from appliance.api.schemas import PreviewIn, PreviewPublic, ScoresPublic, ThresholdsIn, ThresholdsPublic
from appliance.recipes import Recipe
from appliance.storage import queries
from appliance.storage import recipes as recipes_db
from models.calibration import MIN_RATE
from models.decision import Thresholds

router = APIRouter(tags=["thresholds"])


SourceQuery = Query(None, min_length=1, max_length=200, description="a source (default: the default model)")


def _scope(recipe: Recipe, source_id: str | None) -> dict[str, str | None]:
    """The stored scores thresholds are tuned on: the source's (or every source's) under this model."""
    return {"source_id": source_id, "model_version": recipe.version}


@router.get("/thresholds")
def read_thresholds(appliance: AppDep, _: Viewer, source_id: str | None = SourceQuery) -> ThresholdsPublic:
    """T1 (review) and T2 (NG) a source is judged with, or the default model's every-source pair."""
    return ThresholdsPublic.of(appliance.recipe_for(source_id), source_id)


@router.put("/thresholds")
def update_thresholds(body: ThresholdsIn, appliance: AppDep, actor: Engineer) -> ThresholdsPublic:
    """Set T1/T2 with a reason, for one source's model (``source_id``) or for the default model on
    every source without a setting of its own: kept in the database (restarts, promotions and
    rollbacks keep them), applied at once, audited, published retained on config/threshold."""
    new = Thresholds.checked(body.t1, body.t2)
    recipe = appliance.recipe_for(body.source_id)
    recipes_db.set_thresholds(
        appliance.engine,
        source_id=body.source_id or recipes_db.ALL_SOURCES,
        version=recipe.version,
        t1=new.t1,
        t2=new.t2,
        old=recipe.thresholds.as_tuple(),
        actor=actor.name,
        reason=body.reason,
    )
    appliance.refresh_recipes()
    return ThresholdsPublic.of(appliance.recipe_for(body.source_id), body.source_id)


@router.post("/thresholds/preview")
def create_threshold_preview(body: PreviewIn, appliance: AppDep, _: Viewer) -> PreviewPublic:
    """Replay stored scores of the source (or all) under its current model: alerts a candidate
    T1/T2 would have raised, confirmed defects it would miss."""
    candidate = Thresholds.checked(body.t1, body.t2)
    recipe = appliance.recipe_for(body.source_id)
    replay = thresholds.preview(
        appliance.engine,
        thresholds=candidate,
        hours=body.hours,
        debounce=appliance.settings.debounce,
        scope=_scope(recipe, body.source_id),
    )
    return PreviewPublic(**replay)


@router.get("/thresholds/scores")
def read_threshold_scores(
    appliance: AppDep,
    _: Viewer,
    source_id: str | None = SourceQuery,
    hours: float = Query(24.0, gt=0, le=24 * 90),
    limit: int = Query(20_000, ge=10, le=200_000),
    false_alarm_rate: float = Query(0.01, ge=MIN_RATE, lt=0.5),
) -> ScoresPublic:
    """Recent scores of the source (or all) under its current model, for the threshold histogram
    (OK items, unjudged flags, confirmed defects), with presets: T1/T2 at a target false-alarm
    rate and max-F1 where defects are labelled, both taking every item not confirmed as a defect
    for a good part (:func:`appliance.thresholds.presets`)."""
    recipe = appliance.recipe_for(source_id)
    current = recipe.thresholds
    sets = thresholds.score_sets(appliance.engine, hours=hours, limit=limit, scope=_scope(recipe, source_id))
    presets = thresholds.presets(sets, current, false_alarm_rate, recipe.model.score_upper)
    return ScoresPublic(
        hours=hours,
        **sets,
        t1=current.t1,
        t2=current.t2,
        model_version=recipe.version,
        source_id=source_id,
        presets=presets,
        calibrated_on=recipe.model.calibrated_on,
    )


@router.get("/audit")
def read_audit_log(engine: EngineDep, _: Engineer, limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
    """Threshold and model changes: who, when, old, new, why."""
    return queries.audit_log(engine, limit=limit)
