"""Alerts: the list operators work through, acknowledgement and verdicts."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from appliance.api.deps import EngineDep, Operator, PagesDep, Viewer
from appliance.api.schemas import AlertPublic, AlertsPublic, Moment, Offset, RowId, VerdictIn
from appliance.storage import queries, store
from appliance.storage.models import as_utc

router = APIRouter(prefix="/alerts", tags=["alerts"])
# the filters the alert list and its export share
State = Literal["open", "acknowledged", "confirmed", "false_positive"] | None
Sources = Annotated[list[str] | None, Query(max_length=100, description="only these sources (repeatable)")]
Decisions = Annotated[list[Literal["ng", "review"]] | None, Query(description="only these decisions")]


@router.get("", response_model=AlertsPublic)
def read_alerts(
    engine: EngineDep,
    pages: PagesDep,
    _: Viewer,
    state: State = None,
    source_id: Sources = None,
    decision: Decisions = None,
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


EXPORT_COLUMNS = tuple(AlertPublic.model_fields)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet would run as a formula


@router.get("/export.csv", response_class=StreamingResponse)
def export_alerts(
    engine: EngineDep,
    _: Viewer,
    state: State = None,
    source_id: Sources = None,
    decision: Decisions = None,
    since: Annotated[Moment, Query(description="raised at or after (ISO 8601)")] = None,
    until: Annotated[Moment, Query(description="raised before (ISO 8601)")] = None,
) -> StreamingResponse:
    """Every alert that matches, newest first, as CSV (the alert list's fields, times in UTC; a
    time without a zone is taken as UTC), streamed a thousand rows at a time."""
    batches = queries.alert_batches(
        engine,
        state=state,
        sources=sorted(set(source_id or ())),
        decisions=sorted(set(decision or ())),
        since=since,
        until=until,
    )
    name = f"alerts-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}.csv"
    return StreamingResponse(
        _csv_lines(batches),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _csv_lines(batches: Iterator[list[Any]]) -> Iterator[str]:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    for rows in batches:
        for row in rows:
            writer.writerow(_cell(row._mapping[column]) for column in EXPORT_COLUMNS)
        yield out.getvalue()
        out.seek(0)
        out.truncate()
    yield out.getvalue()


def _cell(value: Any) -> Any:
    """A cell as a spreadsheet should read it: times in ISO 8601, and text that would start a
    formula (a part's name from a file, say) quoted as text."""
    if isinstance(value, dt.datetime):
        return as_utc(value).isoformat()
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


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
