"""Alerts: the list operators work through, acknowledgement and verdicts."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from appliance.api.deps import EngineDep, Operator, PagesDep, Viewer
from appliance.api.schemas import AlertPublic, AlertsPublic, Offset, RowId, VerdictIn
from appliance.storage import queries, store

router = APIRouter(prefix="/alerts", tags=["alerts"])


@router.get("", response_model=AlertsPublic)
def read_alerts(
    engine: EngineDep,
    pages: PagesDep,
    _: Viewer,
    state: Literal["open", "acknowledged", "confirmed", "false_positive"] | None = None,
    source_id: Annotated[list[str] | None, Query(max_length=100, description="only these sources (repeatable)")] = None,
    decision: Annotated[list[Literal["ng", "review"]] | None, Query(description="only these decisions")] = None,
    offset: Offset = 0,
    limit: int = Query(50, ge=1, le=1000),
) -> Response:
    """Alerts, open ones first, then newest first (new ones show within ``api_page_cache_s``),
    with how many match and how many of those sources and decisions are open."""
    sources, decisions = tuple(sorted(set(source_id or ()))), tuple(sorted(set(decision or ())))

    def render() -> bytes:
        rows, counts = queries.alerts(
            engine, state=state, sources=sources, decisions=decisions, offset=offset, limit=limit
        )
        count = counts.get(state, 0) if state else sum(counts.values())
        page = {"data": [r._mapping for r in rows], "count": count, "open": counts.get("open", 0)}
        return AlertsPublic.model_validate(page).model_dump_json().encode()

    key = ("alerts", state, sources, decisions, offset, limit)
    return Response(pages.get(key, render), media_type="application/json")


@router.post("/{alert_id}/acknowledge")
def acknowledge_alert(alert_id: RowId, engine: EngineDep, actor: Operator) -> AlertPublic:
    """Acknowledge an alert (seen, not yet judged)."""
    alert = store.update_alert(engine, alert_id=alert_id, actor=actor.name, acknowledge=True)
    return AlertPublic.model_validate(alert, from_attributes=True)


@router.post("/{alert_id}/verdict")
def create_alert_verdict(alert_id: RowId, body: VerdictIn, engine: EngineDep, actor: Operator) -> AlertPublic:
    """Judge an alert: a confirmed defect, or a false positive (queued as new normal data)."""
    alert = store.update_alert(engine, alert_id=alert_id, actor=actor.name, verdict=body.verdict)
    return AlertPublic.model_validate(alert, from_attributes=True)
