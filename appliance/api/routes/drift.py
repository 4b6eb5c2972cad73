"""Drift watch: each source's state against its reference, the drift events with the values
they compared, and a reset when the new conditions are the line's normal."""

from __future__ import annotations

import json

from fastapi import APIRouter, Query

from appliance.api.deps import AppDep, EngineDep, Engineer, Viewer
from appliance.api.schemas import DriftEventPublic, DriftResetIn, DriftSourcePublic, EventId
from appliance.errors import Unavailable
from appliance.storage import queries
from appliance.storage.models import DriftEvent

router = APIRouter(prefix="/drift", tags=["drift"])


def _event(event: DriftEvent, values: bool) -> DriftEventPublic:
    detail = json.loads(event.detail)
    return DriftEventPublic(
        id=event.id,
        source_id=event.source_id,
        model_version=event.model_version,
        state=event.state,
        created_at=event.created_at,
        reason=detail.get("reason", ""),
        hints=detail.get("hints", []),
        tests=detail.get("tests", []),
        before=detail.get("before") if values else None,
        after=detail.get("after") if values else None,
        score_below=detail.get("score_below"),
    )


def _source(appliance: AppDep, source_id: str) -> DriftSourcePublic:
    """A running source's watch (``off``: in teach mode, the watch switched off, or the database away)."""
    watch, recipe = appliance.pipeline.drift, appliance.recipes.get(source_id)
    status = None if watch is None or recipe is None else watch.source_status(source_id, recipe.version)
    if status is None:
        return DriftSourcePublic(source_id=source_id, model_version=recipe and recipe.version, state="off")
    return DriftSourcePublic(source_id=source_id, **status)


@router.get("")
def read_drift(appliance: AppDep, _: Viewer) -> list[DriftSourcePublic]:
    """Each running source's drift state: learning its reference, stable or drifting, with the
    last window's tests (``off``: in teach mode, or the watch is switched off)."""
    return [_source(appliance, source_id) for source_id in sorted(appliance.pipeline.workers)]


@router.get("/events")
def read_drift_events(
    engine: EngineDep,
    _: Viewer,
    source_id: str | None = Query(None, max_length=200),
    limit: int = Query(50, ge=1, le=500),
) -> list[DriftEventPublic]:
    """Drift events, newest first (without the compared values; read one event for those)."""
    return [_event(e, values=False) for e in queries.drift_events(engine, source_id=source_id, limit=limit)]


@router.get("/events/{event_id}")
def read_drift_event(event_id: EventId, engine: EngineDep, _: Viewer) -> DriftEventPublic:
    """One drift event with the reference's and the window's values per feature (the histograms)."""
    return _event(queries.drift_event(engine, event_id=event_id), values=True)


@router.post("/{source_id:path}/reset")
def create_drift_reset(source_id: str, body: DriftResetIn, appliance: AppDep, actor: Engineer) -> DriftSourcePublic:
    """The source's current conditions are its normal: forget its references and learn anew
    from the next frames (audited; a drifting source is announced stable)."""
    appliance.recipe_source(source_id)  # one that runs here
    watch = appliance.pipeline.drift
    if watch is None:
        msg = "the drift watch is off (settings: drift.enabled)"
        raise Unavailable(msg)
    watch.reset(source_id, actor.name, body.reason)
    return _source(appliance, source_id)
