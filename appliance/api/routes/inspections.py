"""Stored inspections, their images and heat maps."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, Response

from appliance.api.deps import AppDep, EngineDep, PagesDep, Viewer
from appliance.api.schemas import HourPublic, InspectionPublic, InspectionsPublic, Moment, Offset, RowId
from appliance.errors import NotFound
from appliance.storage import history, queries
from appliance.storage.models import utcnow

router = APIRouter(prefix="/inspections", tags=["inspections"])


@router.get("", response_model=InspectionsPublic)
def read_inspections(
    engine: EngineDep,
    pages: PagesDep,
    _: Viewer,
    source_id: str | None = None,
    decision: Literal["ok", "review", "ng"] | None = None,
    since: Annotated[Moment, Query(description="captured at or after (ISO 8601)")] = None,
    until: Annotated[Moment, Query(description="captured before (ISO 8601)")] = None,
    offset: Offset = 0,
    limit: int = Query(50, ge=1, le=1000),
    before_id: int | None = Query(None, ge=1, le=2**63 - 1, description="only older rows: the last id of a page"),
) -> Response:
    """Inspections, newest first, filtered by source, decision and capture time. Page back with
    ``before_id`` = the last id of the page before (``count`` counts the matches up to
    ``count_limit``: counting millions would cost seconds). New ones show
    within ``api_page_cache_s``."""
    query = {
        "source_id": source_id,
        "decision": decision,
        "since": since,
        "until": until,
        "offset": offset,
        "limit": limit,
        "before_id": before_id,
    }

    def render() -> bytes:
        rows, count = queries.inspections(engine, **query)
        page = InspectionsPublic.model_validate(
            {"data": [r._mapping for r in rows], "count": count, "count_limit": queries.COUNT_LIMIT}
        )
        return page.model_dump_json().encode()

    return Response(pages.get(("inspections", *query.values()), render), media_type="application/json")


@router.get("/hourly")
def read_hourly(
    engine: EngineDep,
    _: Viewer,
    source_id: str | None = Query(None, min_length=1, max_length=200),
    hours: float = Query(24.0 * 7, gt=0, le=24 * 400),
) -> list[HourPublic]:
    """Inspections per source and hour over the last ``hours`` (whole hours), read from the hourly
    aggregates the history keeps beyond its raw window: counts per decision and latency
    percentiles (of the rows rolled up: the newest minute or so is counted, its latencies not)."""
    now = utcnow()
    since = history.floor_hour(now - dt.timedelta(hours=hours))
    hours_ = {(sid, hour): agg for sid, hour, agg in history.hours(engine, since=since, source_id=source_id)}
    for sid, agg in history.fresh_by_source(engine, since=since, source_id=source_id).items():
        key = (sid, history.floor_hour(agg.first_capture))
        hours_[key] = hours_[key] + agg if key in hours_ else agg
    return [
        HourPublic.of(sid, hour, agg, complete=hour + dt.timedelta(hours=1) <= now)
        for (sid, hour), agg in sorted(hours_.items(), key=lambda item: (item[0][1], item[0][0]))
    ]


@router.get("/{inspection_id}")
def read_inspection(inspection_id: RowId, engine: EngineDep, _: Viewer) -> InspectionPublic:
    """One inspection."""
    return InspectionPublic.model_validate(
        queries.inspection(engine, inspection_id=inspection_id), from_attributes=True
    )


def _stored_image(appliance: AppDep, ref: str | None) -> FileResponse:
    if not ref or not appliance.images.path(ref).is_file():
        msg = "no image stored for this inspection (OK items keep only a sample)"
        raise NotFound(msg)
    return FileResponse(appliance.images.path(ref), media_type="image/png")


@router.get("/{inspection_id}/image", response_class=FileResponse)
def read_inspection_image(inspection_id: RowId, appliance: AppDep, _: Viewer) -> FileResponse:
    """The stored image of an inspection (PNG)."""
    return _stored_image(appliance, queries.inspection(appliance.engine, inspection_id=inspection_id).image_ref)


@router.get("/{inspection_id}/heatmap", response_class=FileResponse)
def read_inspection_heatmap(inspection_id: RowId, appliance: AppDep, _: Viewer) -> FileResponse:
    """The stored heat map of an inspection (PNG)."""
    return _stored_image(appliance, queries.inspection(appliance.engine, inspection_id=inspection_id).heatmap_ref)
