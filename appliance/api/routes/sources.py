"""Sources: list, add (kept across restarts), remove, test; the newest frame; a triggered capture."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import cv2
from fastapi import APIRouter
from fastapi.responses import Response

from appliance.api.deps import AppDep, Engineer, Operator, Viewer
from appliance.api.schemas import SourceIn, TeachRejectIn
from appliance.datasets.images import read_image
from appliance.errors import NotFound
from appliance.images import FRAME_SUFFIXES, display, encode, overlay, plot_window
from appliance.sources import check_paths, try_source
from connectors.factory import build_source

router = APIRouter(prefix="/sources", tags=["sources"])


@router.get("")
def read_sources(appliance: AppDep, _: Viewer) -> dict[str, Any]:
    """Sources with their state and counters (source strings with any password masked)."""
    return appliance.pipeline.status()


@router.post("", status_code=201)
def create_source(body: SourceIn, appliance: AppDep, actor: Engineer) -> dict[str, Any]:
    """Add and start a source from its source string; it is kept across restarts. Files and
    folders must be inside the data folder or the configured ``allowed_paths``."""
    check_paths(body.url, appliance.settings.source_roots)
    source = build_source(body.url, body.source_id)  # started by the pipeline once it is accepted
    appliance.pipeline.add_source(source)
    appliance.sources.save(source_id=source.source_id, url=body.url, actor=actor.name)
    appliance.refresh_recipes()  # its own model, the default, or teach mode
    return appliance.pipeline.status()[source.source_id]


@router.post("/test")
def create_source_test(body: SourceIn, appliance: AppDep, _: Engineer) -> dict[str, Any]:
    """Open a source string, read one sample within 5 s and close it; nothing is added."""
    check_paths(body.url, appliance.settings.source_roots)
    return try_source(body.url, body.source_id)


@router.delete("/{source_id:path}", status_code=204)
def delete_source(source_id: str, appliance: AppDep, _: Engineer) -> None:
    """Stop and remove a source."""
    appliance.pipeline.remove_source(source_id)
    appliance.sources.delete(source_id=source_id)
    appliance.refresh_recipes()


@router.get("/{source_id:path}/frame", response_class=Response)
def read_source_frame(source_id: str, appliance: AppDep, _: Viewer, heatmap: bool = True) -> Response:
    """The newest inspected frame of a source (PNG), with its heat map blended over it (a sensor
    window: a plot of its channels); its score, normalised score, decision, capture time and label
    in ``X-`` headers."""
    latest = appliance.pipeline.latest.get(source_id)
    if latest is None:
        msg = f"no frame of source {source_id!r} inspected yet"
        raise NotFound(msg)
    image, anomaly_map, inspection = latest
    worker = appliance.pipeline.workers.get(source_id)
    if worker is not None and worker.source.payload == "vector":  # a sensor window: its plot
        shown = plot_window(image, getattr(worker.source, "channels", None))
    else:
        shown = overlay(image, anomaly_map if heatmap else None)
    _, data = cv2.imencode(".png", shown)
    if inspection is None:  # teach mode: a frame, nothing decided
        return Response(data.tobytes(), media_type="image/png", headers={"X-Decision": "teach"})
    headers = {
        "X-Score": f"{inspection.score:.6g}",
        "X-Norm-Score": f"{inspection.norm_score:.6g}",
        "X-Decision": inspection.decision,
        "X-Captured": inspection.t_capture.isoformat(),
        "X-Label": quote(inspection.label or ""),  # a defect type is the user's text: percent-encoded
    }
    return Response(data.tobytes(), media_type="image/png", headers=headers)


@router.get("/{source_id:path}/teach")
def read_teach_frames(source_id: str, appliance: AppDep, _: Viewer) -> dict[str, Any]:
    """The frames kept while the source is in teach mode (newest last), to review before teaching."""
    appliance.recipe_source(source_id)
    frames = appliance.teach.frames(source_id)
    return {"source_id": source_id, "count": len(frames), "frames": [p.name for p in frames]}


@router.get("/{source_id:path}/teach/{name}", response_class=Response)
def read_teach_frame(source_id: str, name: str, appliance: AppDep, _: Viewer) -> Response:
    """One kept teach frame (PNG; a frame of measured values, kept as TIFF, stretched to show)."""
    path = appliance.teach.frame(source_id, name)
    if path.suffix == FRAME_SUFFIXES[0]:
        return Response(path.read_bytes(), media_type="image/png")
    return Response(encode(display(read_image(path)))[1], media_type="image/png")


@router.post("/{source_id:path}/teach/reject")
def create_teach_rejection(source_id: str, body: TeachRejectIn, appliance: AppDep, _: Operator) -> dict[str, Any]:
    """Remove frames that are not good parts, so the source's detector never learns them."""
    return {"rejected": appliance.teach.reject(source_id, body.names)}


@router.post("/{source_id:path}/trigger")
def create_triggered_inspection(source_id: str, appliance: AppDep, _: Operator) -> dict[str, Any]:
    """Capture one frame of a source now and inspect it (stored, and alerted if flagged)."""
    return appliance.pipeline.capture_and_inspect(source_id)
