"""Stored inspections, their images and heat maps."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, Response

from appliance.api.deps import AppDep, EngineDep, PagesDep, Viewer
from appliance.api.schemas import InspectionPublic, InspectionsPublic, Offset, RowId
from appliance.errors import NotFound
from appliance.storage import queries

router = APIRouter(prefix="/inspections", tags=["inspections"])


@router.get("", response_model=InspectionsPublic)
def read_inspections(
    engine: EngineDep,
    pages: PagesDep,
    _: Viewer,
    source_id: str | None = None,
    decision: Literal["ok", "review", "ng"] | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    offset: Offset = 0,
    limit: int = Query(50, ge=1, le=1000),
    before_id: int | None = Query(None, ge=1, le=2**63 - 1, description="only older rows: the last id of a page"),
) -> Response:
    """Inspections, newest first, filtered by source, decision and capture time. Page back with
    ``before_id`` = the last id of the page before (``count`` counts every match). New ones show
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
        page = InspectionsPublic.model_validate({"data": [r._mapping for r in rows], "count": count})
        return page.model_dump_json().encode()

    return Response(pages.get(("inspections", *query.values()), render), media_type="application/json")


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
