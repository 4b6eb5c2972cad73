"""Liveness, readiness, Prometheus metrics, and who the caller is."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import PlainTextResponse

from appliance.api.deps import AppDep, Viewer
from appliance.api.schemas import MePublic
from appliance.metrics import prometheus_api, prometheus_mqtt
from appliance.storage import queries

router = APIRouter(tags=["health"])


@router.get("/me")
def read_me(actor: Viewer) -> MePublic:
    """The role of the calling token (the console shows only what it may do)."""
    return MePublic(role=actor.role)


@router.get("/health")
async def read_health(appliance: AppDep) -> dict[str, Any]:
    """Liveness, with frame counters and latency over all sources (no source names: they may
    hold camera credentials; see /sources with a token). Answered on the event loop from memory,
    never queued behind requests that hold the API's worker threads (uploads, decoding)."""
    status = appliance.pipeline.status().values()
    totals = {k: sum(st.get(k, 0) for st in status) for k in ("frames_in", "scored", "queue_dropped")}
    teach = sum(st["mode"] == "teach" for st in status)
    totals |= {"sources_inspecting": len(status) - teach, "sources_in_teach_mode": teach}
    worst = {
        path: max((st[path]["p99"] for st in status), default=0.0)
        for path in ("capture_to_decision_ms", "capture_to_alert_published_ms")
    }
    out = {"status": "alive", "sources": len(status), **totals, "worst_p99_ms": worst}
    if appliance.first_training is not None:  # epoch k of n while the first-start model trains
        out["first_start_training"] = appliance.first_training
    return out


@router.get("/health/ready")
def read_readiness(appliance: AppDep) -> dict[str, Any]:
    """Readiness, naming what is not ready (database, broker, sources). A source in teach mode is
    ready: it streams and keeps frames for teaching, as it should before its model exists."""
    problems = [p for p in (queries.database_problem(appliance.engine),) if p]
    spool = appliance.pipeline.spool
    if spool is not None and len(spool):
        problems.append(f"{len(spool)} inspections wait on local disk for the database")
    if not appliance.publisher.connected.is_set():
        problems.append("MQTT broker not connected")
    problems += [
        f"source {sid} is {st['state']}" for sid, st in appliance.pipeline.status().items() if st["state"] != "online"
    ]
    if problems:
        raise HTTPException(503, "; ".join(problems))
    return {"status": "ready"}


@router.get("/metrics", response_class=PlainTextResponse)
def read_metrics(appliance: AppDep, request: Request) -> str:
    """Prometheus metrics: frames, decisions, latency percentiles, outbox backlog; MQTT messages
    the broker acknowledged and refused; API requests that waited for the line to catch up."""
    publisher = appliance.publisher
    return (
        appliance.pipeline.prometheus()
        + prometheus_mqtt(publisher.sent, publisher.refused)
        + prometheus_api(request.app.state.api_counts["deferred"])
    )
