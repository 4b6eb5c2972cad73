"""The REST API (FastAPI). Bearer tokens with roles: viewer < operator < engineer < admin.

Routes are named verb-first; their one-line docstrings feed OpenAPI. Domain errors become 4xx
with a clear message here and only here.
"""

import csv
import datetime as dt
import io
import json
import pathlib
import re
import uuid
import zipfile
from typing import Annotated, Any, Literal

import cv2
import numpy as np
import yaml
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field
from sqlmodel import Session, col, func, select

from appliance import jobs
from appliance.datasets import ImageFormat, create_image_dataset, create_sample, write_csv
from appliance.datasets.create import CreateError
from appliance.images import overlay
from appliance.project import ProjectError, load_project
from appliance.storage import store
from appliance.storage.models import (
    Alert,
    AuditLog,
    Inspection,
    InspectionBase,
    ModelVersion,
    TrainingJob,
    utcnow,
)
from connectors.sources import SourceError, open_source
from models.bundle import BundleError
from models.calibration import calibrate, max_f1_threshold
from models.inference import Inferencer
from models.preprocess import PreprocessError
from models.spec import SpecError, build
from models.stats import stats_json
from models.zoo import ZOO, get_spec, list_models

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_BUNDLE_BYTES = 200 * 1024 * 1024
RowId = Annotated[int, Path(ge=1, le=2**63 - 1, description="row id")]
Offset = Annotated[int, Query(ge=0, le=10**9)]
JobId = Annotated[int, Path(ge=1, le=2**31 - 1, description="job id")]


# -- response models ------------------------------------------------------------------------
class InspectionPublic(InspectionBase):
    id: int
    t_decided: dt.datetime


class InspectionsPublic(BaseModel):
    data: list[InspectionPublic]
    count: int


class AlertPublic(BaseModel):
    id: int
    event_id: str
    inspection_id: int
    source_id: str
    decision: str
    score: float
    norm_score: float
    threshold: float
    model_version: str
    state: str
    created_at: dt.datetime
    acknowledged_by: str | None = None
    verdict_by: str | None = None


class AlertsPublic(BaseModel):
    data: list[AlertPublic]
    count: int


class ResultPublic(BaseModel):
    score: float
    norm_score: float
    decision: str
    label: str | None
    model_version: str
    latency_ms: float


class VectorIn(BaseModel):
    values: list[float] = Field(min_length=1, max_length=1_000_000)


class ThresholdsIn(BaseModel):
    t1: float = Field(allow_inf_nan=False)
    t2: float = Field(allow_inf_nan=False)
    reason: str = Field(min_length=3, max_length=500)


class ThresholdsPublic(BaseModel):
    t1: float
    t2: float
    model_version: str


class PreviewIn(BaseModel):
    t1: float = Field(allow_inf_nan=False)
    t2: float = Field(allow_inf_nan=False)
    hours: float = Field(24.0, gt=0, le=24 * 90)


class PreviewPublic(BaseModel):
    hours: float
    inspections: int
    alerts_per_hour: float
    ng_per_hour: float
    review_per_hour: float
    alerts_per_shift: float
    confirmed_defects: int
    missed_confirmed_defects: int


class SourceIn(BaseModel):
    url: str = Field(min_length=3, max_length=500)
    source_id: str | None = Field(None, max_length=200)


class ModelPublic(BaseModel):
    version: str
    filename: str
    digest: str
    kind: str
    status: str
    metrics: dict[str, Any]
    created_at: dt.datetime
    activated_at: dt.datetime | None


class PromoteIn(BaseModel):
    reason: str = Field(min_length=3, max_length=500)


class RetrainIn(BaseModel):
    epochs: int = Field(10, ge=1, le=500)
    max_images: int = Field(500, ge=10, le=100_000)
    min_images: int = Field(40, ge=20, le=100_000)
    include_ok: bool = True
    include_false_positives: bool = True
    datasets: list[str] = Field(default_factory=list, max_length=50)


class ProjectJobIn(BaseModel):
    project: str = Field(min_length=1, max_length=200)


class SearchJobIn(BaseModel):
    project: str = Field(min_length=1, max_length=200)
    trials: int = Field(20, ge=2, le=1000)
    method: Literal["random", "bayes"] = "bayes"
    objective: Literal["error", "error_and_madds"] = "error_and_madds"
    epochs: int | None = Field(None, ge=1, le=1000)
    workers: int | None = Field(None, ge=1, le=64)


class JobPublic(BaseModel):
    id: int
    kind: str
    status: str
    progress: float
    message: str
    cancel_requested: bool
    params: dict[str, Any]
    result: dict[str, Any]
    created_by: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class DatasetIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    include_ok: bool = True
    include_false_positives: bool = True
    limit: int = Field(1000, ge=1, le=100_000)


class VerdictIn(BaseModel):
    verdict: Literal["confirmed", "false_positive"]


class MePublic(BaseModel):
    role: str


class ScoresPublic(BaseModel):
    hours: float
    normal: list[float]  # OK decisions, and alerts judged false positive
    flagged: list[float]  # review / NG not judged yet
    confirmed: list[float]  # alerts confirmed as defects
    t1: float
    t2: float
    model_version: str
    presets: dict[str, dict[str, float]]


class NetworkStatsIn(BaseModel):
    zoo: str | None = Field(None, max_length=100)
    input: list[int] | None = Field(None, min_length=1, max_length=4)
    options: dict[str, Any] = Field(default_factory=dict)
    spec: dict[str, Any] | None = None


class SampleIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    sample: Literal["digits", "digits_4or9", "digits_4or9_anomaly", "iris"]


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    role: Literal["viewer", "operator", "engineer", "admin"]


class ProjectIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    dataset: str = Field(min_length=1, max_length=100)
    zoo: str | None = Field(None, max_length=100)
    options: dict[str, Any] = Field(default_factory=dict)
    spec: dict[str, Any] | None = None
    task: Literal["classification", "regression", "autoencoder"] | None = None
    max_epoch: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(64, ge=1, le=4096)
    solver: str = Field("Adam", max_length=40)
    lr: float = Field(0.001, gt=0, le=10)


# -- the app ------------------------------------------------------------------------------------
def create_app(ctx: Any) -> FastAPI:
    """``ctx`` is the running appliance: engine, slot, pipeline, images, topics, publisher."""
    app = FastAPI(title="Anomaly appliance", version="1", description="Inspections, alerts, thresholds, sources.")

    def role_at_least(minimum: str):
        def check(request: Request) -> str:
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
            role = store.token_role(ctx.engine, token=token)
            if role is None:
                raise HTTPException(401, "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"})
            if store.ROLES.index(role) < store.ROLES.index(minimum):
                raise HTTPException(403, f"this needs the {minimum} role; the token has {role}")
            return role

        return check

    @app.middleware("http")
    async def refuse_nul_characters(request: Request, call_next: Any) -> Response:
        """NUL characters cannot be stored (PostgreSQL text refuses them): named as a 422, never a 500."""
        raw = f"{request.url.path}?{request.url.query}".lower()
        if "%00" in raw or "\x00" in raw:
            return JSONResponse({"detail": "NUL characters are not allowed in the path or query"}, status_code=422)
        if request.headers.get("content-type", "").startswith("application/json"):
            body = await request.body()
            if b"\\u0000" in body.lower():
                return JSONResponse({"detail": "NUL characters are not allowed in JSON bodies"}, status_code=422)
        return await call_next(request)

    viewer = Depends(role_at_least("viewer"))
    Operator = Annotated[str, Depends(role_at_least("operator"))]
    Engineer = Annotated[str, Depends(role_at_least("engineer"))]

    @app.get("/me", tags=["health"])
    def read_me(role: Annotated[str, Depends(role_at_least("viewer"))]) -> MePublic:
        """The role of the calling token (the console shows only what it may do)."""
        return MePublic(role=role)

    @app.get("/health", tags=["health"])
    def read_health() -> dict[str, Any]:
        """Liveness, with frame counters and latency over all sources (no source names: they may
        hold camera credentials; see /sources with a token)."""
        status = ctx.pipeline.status().values()
        totals = {k: sum(st.get(k, 0) for st in status) for k in ("frames_in", "scored", "queue_dropped")}
        worst = {
            path: max((st[path]["p99"] for st in status), default=0.0)
            for path in ("capture_to_decision_ms", "capture_to_alert_published_ms")
        }
        return {"status": "alive", "sources": len(status), **totals, "worst_p99_ms": worst}

    @app.get("/health/ready", tags=["health"])
    def read_readiness() -> dict[str, Any]:
        """Readiness, naming what is not ready (model, broker, sources)."""
        problems = []
        if ctx.slot.get() is None:
            problems.append("no active model")
        if not ctx.publisher.connected.is_set():
            problems.append("MQTT broker not connected")
        problems += [
            f"source {sid} is {st['state']}"
            for sid, st in ctx.pipeline.status().items()
            if st["state"] not in ("online",)
        ]
        if problems:
            raise HTTPException(503, "; ".join(problems))
        return {"status": "ready"}

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def read_metrics() -> str:
        """Prometheus metrics: frames, decisions, latency percentiles, outbox backlog."""
        return ctx.pipeline.prometheus()

    @app.get("/sources", tags=["sources"], dependencies=[viewer])
    def read_sources() -> dict[str, Any]:
        """Sources with their state and counters."""
        return ctx.pipeline.status()

    @app.post("/sources", tags=["sources"], status_code=201)
    def create_source(body: SourceIn, _: Engineer, request: Request) -> dict[str, Any]:
        """Add and start a source from its source string; it is kept across restarts."""
        try:
            source = open_source(body.url, body.source_id)
            ctx.pipeline.add_source(source)
        except (SourceError, ValueError) as exc:
            raise HTTPException(400, str(exc)) from exc
        store.save_source(ctx.engine, source_id=source.source_id, url=body.url, actor=_who(request))
        return source.status()

    @app.delete("/sources/{source_id:path}", tags=["sources"], status_code=204)
    def delete_source(source_id: str, _: Engineer) -> None:
        """Stop and remove a source."""
        if source_id not in ctx.pipeline.workers:
            raise HTTPException(404, f"no source {source_id!r}")
        ctx.pipeline.remove_source(source_id)
        store.delete_source(ctx.engine, source_id=source_id)

    @app.get("/sources/{source_id:path}/frame", tags=["sources"], dependencies=[viewer], response_class=Response)
    def read_source_frame(source_id: str, heatmap: bool = True) -> Response:
        """The newest inspected frame of a source (PNG), with its heat map blended over it."""
        latest = ctx.pipeline.latest.get(source_id)
        if latest is None:
            raise HTTPException(404, f"no frame of source {source_id!r} inspected yet")
        image, anomaly_map, inspection = latest
        ok, data = cv2.imencode(".png", overlay(image, anomaly_map if heatmap else None))
        headers = {
            "X-Score": f"{inspection.score:.6g}",
            "X-Decision": inspection.decision,
            "X-Captured": inspection.t_capture.isoformat(),
        }
        return Response(data.tobytes(), media_type="image/png", headers=headers)

    @app.post("/sources/{source_id:path}/trigger", tags=["sources"])
    def create_triggered_inspection(source_id: str, _: Operator) -> dict[str, Any]:
        """Capture one frame of a source now and inspect it (stored, and alerted if flagged)."""
        try:
            return ctx.pipeline.capture_and_inspect(source_id)
        except KeyError as exc:
            raise HTTPException(404, str(exc.args[0])) from exc
        except (TimeoutError, ValueError) as exc:
            raise HTTPException(503, str(exc)) from exc

    @app.post("/inspect", tags=["inspect"])
    async def create_inspection_from_image(file: UploadFile, _: Operator) -> ResultPublic:
        """Inspect an uploaded image (PNG, JPEG, BMP, TIFF) with the active model; nothing is stored."""
        data = await file.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, f"upload larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB")
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
        if image is None:
            raise HTTPException(400, f"{file.filename or 'upload'} is not a readable image")
        return _inspect(image)

    @app.post("/inspect/vector", tags=["inspect"])
    def create_inspection_from_vector(body: VectorIn, _: Operator) -> ResultPublic:
        """Inspect a sensor vector or window (flattened) with the active model; nothing is stored."""
        return _inspect(np.asarray(body.values, np.float32))

    def _active_model() -> Inferencer:
        model = ctx.slot.get()
        if model is None:
            raise HTTPException(503, "no active model")
        return model

    def _inspect(sample: np.ndarray) -> ResultPublic:
        model = _active_model()
        try:
            result = model.predict(sample)
        except PreprocessError as exc:
            raise HTTPException(422, str(exc)) from exc
        return ResultPublic(
            score=result.score,
            norm_score=result.norm_score,
            decision=result.decision,
            label=result.label,
            model_version=result.model_version,
            latency_ms=result.latency_ms,
        )

    @app.get("/inspections", tags=["inspections"], dependencies=[viewer])
    def read_inspections(
        source_id: str | None = None,
        decision: Literal["ok", "review", "ng"] | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        offset: Offset = 0,
        limit: int = Query(50, ge=1, le=1000),
    ) -> InspectionsPublic:
        """Inspections, newest first, filtered by source, decision and capture time."""
        query = select(Inspection)
        if source_id:
            query = query.where(Inspection.source_id == source_id)
        if decision:
            query = query.where(Inspection.decision == decision)
        if since:
            query = query.where(col(Inspection.t_capture) >= since)
        if until:
            query = query.where(col(Inspection.t_capture) < until)
        with Session(ctx.engine) as session:
            count = session.exec(select(func.count()).select_from(query.subquery())).one()
            rows = session.exec(query.order_by(col(Inspection.id).desc()).offset(offset).limit(limit)).all()
        return InspectionsPublic(
            data=[InspectionPublic.model_validate(r, from_attributes=True) for r in rows], count=count
        )

    @app.get("/inspections/{inspection_id}", tags=["inspections"], dependencies=[viewer])
    def read_inspection(inspection_id: RowId) -> InspectionPublic:
        """One inspection."""
        return InspectionPublic.model_validate(_inspection(inspection_id), from_attributes=True)

    def _inspection(inspection_id: int) -> Inspection:
        with Session(ctx.engine) as session:
            row = session.get(Inspection, inspection_id)
        if row is None:
            raise HTTPException(404, f"no inspection {inspection_id}")
        return row

    @app.get(
        "/inspections/{inspection_id}/image", tags=["inspections"], dependencies=[viewer], response_class=FileResponse
    )
    def read_inspection_image(inspection_id: RowId) -> FileResponse:
        """The stored image of an inspection (PNG)."""
        return _file(_inspection(inspection_id).image_ref)

    @app.get(
        "/inspections/{inspection_id}/heatmap", tags=["inspections"], dependencies=[viewer], response_class=FileResponse
    )
    def read_inspection_heatmap(inspection_id: RowId) -> FileResponse:
        """The stored heat map of an inspection (PNG)."""
        return _file(_inspection(inspection_id).heatmap_ref)

    def _file(ref: str | None) -> FileResponse:
        if not ref or not ctx.images.path(ref).is_file():
            raise HTTPException(404, "no image stored for this inspection (OK items keep only a sample)")
        return FileResponse(ctx.images.path(ref), media_type="image/png")

    @app.get("/alerts", tags=["alerts"], dependencies=[viewer])
    def read_alerts(
        state: Literal["open", "acknowledged", "confirmed", "false_positive"] | None = None,
        offset: Offset = 0,
        limit: int = Query(50, ge=1, le=1000),
    ) -> AlertsPublic:
        """Alerts, open ones first, then newest first."""
        query = select(Alert)
        if state:
            query = query.where(Alert.state == state)
        with Session(ctx.engine) as session:
            count = session.exec(select(func.count()).select_from(query.subquery())).one()
            order = [col(Alert.state) != "open", col(Alert.id).desc()]
            rows = session.exec(query.order_by(*order).offset(offset).limit(limit)).all()
        return AlertsPublic(data=[AlertPublic.model_validate(r, from_attributes=True) for r in rows], count=count)

    @app.post("/alerts/{alert_id}/acknowledge", tags=["alerts"])
    def acknowledge_alert(alert_id: RowId, role: Operator, request: Request) -> AlertPublic:
        """Acknowledge an alert (seen, not yet judged)."""
        return _update_alert(alert_id, request, acknowledge=True)

    @app.post("/alerts/{alert_id}/verdict", tags=["alerts"])
    def create_alert_verdict(alert_id: RowId, body: VerdictIn, role: Operator, request: Request) -> AlertPublic:
        """Judge an alert: a confirmed defect, or a false positive (queued as new normal data)."""
        return _update_alert(alert_id, request, verdict=body.verdict)

    def _update_alert(alert_id: int, request: Request, acknowledge: bool = False, verdict: str | None = None):
        who = _who(request)
        with Session(ctx.engine) as session:
            alert = session.get(Alert, alert_id)
            if alert is None:
                raise HTTPException(404, f"no alert {alert_id}")
            if acknowledge and alert.state == "open":
                alert.state, alert.acknowledged_by, alert.acknowledged_at = "acknowledged", who, utcnow()
            if verdict:
                alert.state, alert.verdict_by, alert.verdict_at = verdict, who, utcnow()
            session.add(alert)
            session.commit()
            session.refresh(alert)
        return AlertPublic.model_validate(alert, from_attributes=True)

    def _who(request: Request) -> str:
        token = request.headers.get("authorization", "").partition(" ")[2]
        return f"token:{token[:6]}…"

    @app.get("/thresholds", tags=["thresholds"], dependencies=[viewer])
    def read_thresholds() -> ThresholdsPublic:
        """The active model's thresholds T1 (review) and T2 (NG)."""
        model = _active_model()
        return ThresholdsPublic(t1=model.thresholds[0], t2=model.thresholds[1], model_version=model.version)

    @app.put("/thresholds", tags=["thresholds"])
    def update_thresholds(body: ThresholdsIn, _: Engineer, request: Request) -> ThresholdsPublic:
        """Set T1/T2 with a reason: applied at once, audited, published retained on config/threshold."""
        model = _active_model()
        if body.t1 > body.t2:
            raise HTTPException(422, f"T1 ({body.t1}) must not exceed T2 ({body.t2})")
        old = model.thresholds
        model.set_thresholds(body.t1, body.t2)
        store.set_thresholds(
            ctx.engine,
            t1=body.t1,
            t2=body.t2,
            old=old,
            actor=_who(request),
            reason=body.reason,
            topic=ctx.topics.threshold,
        )
        return ThresholdsPublic(t1=body.t1, t2=body.t2, model_version=model.version)

    @app.post("/thresholds/preview", tags=["thresholds"], dependencies=[viewer])
    def create_threshold_preview(body: PreviewIn) -> PreviewPublic:
        """Replay stored scores: alerts a candidate T1/T2 would have raised, confirmed defects it would miss."""
        if body.t1 > body.t2:
            raise HTTPException(422, f"T1 ({body.t1}) must not exceed T2 ({body.t2})")
        since = utcnow() - dt.timedelta(hours=body.hours)
        with Session(ctx.engine) as session:
            scores = session.exec(select(Inspection.score).where(col(Inspection.t_capture) >= since)).all()
            confirmed = session.exec(
                select(Alert.score).where(Alert.state == "confirmed", col(Alert.created_at) >= since)
            ).all()
        s = np.asarray(scores, float)
        first = session_first_capture(ctx.engine, since)
        hours = max((utcnow() - first).total_seconds() / 3600, 1 / 60) if first else body.hours
        ng, review = int((s >= body.t2).sum()), int(((s >= body.t1) & (s < body.t2)).sum())
        return PreviewPublic(
            hours=hours,
            inspections=len(s),
            alerts_per_hour=(ng + review) / hours,
            ng_per_hour=ng / hours,
            review_per_hour=review / hours,
            alerts_per_shift=(ng + review) / hours * 8,
            confirmed_defects=len(confirmed),
            missed_confirmed_defects=int(sum(c < body.t1 for c in confirmed)),
        )

    @app.get("/thresholds/scores", tags=["thresholds"], dependencies=[viewer])
    def read_threshold_scores(
        hours: float = Query(24.0, gt=0, le=24 * 90),
        limit: int = Query(20_000, ge=10, le=200_000),
        false_alarm_rate: float = Query(0.01, gt=0, lt=0.5),
    ) -> ScoresPublic:
        """Recent scores for the threshold histogram (OK items, unjudged flags, confirmed defects) with
        presets: T2 at a target false-alarm rate on the normal scores, and max-F1 where defects are labelled."""
        model = _active_model()
        since = utcnow() - dt.timedelta(hours=hours)
        with Session(ctx.engine) as session:
            rows = session.exec(
                select(Inspection.score, Inspection.decision)
                .where(col(Inspection.t_capture) >= since)
                .order_by(col(Inspection.id).desc())
                .limit(limit)
            ).all()
            judged = session.exec(
                select(Alert.score, Alert.state).where(
                    col(Alert.state).in_(["confirmed", "false_positive", "open", "acknowledged"]),
                    col(Alert.created_at) >= since,
                )
            ).all()
        normal = [float(sc) for sc, d in rows if d == "ok"] + [float(sc) for sc, st in judged if st == "false_positive"]
        confirmed = [float(sc) for sc, st in judged if st == "confirmed"]
        flagged = [float(sc) for sc, st in judged if st in ("open", "acknowledged")]
        presets: dict[str, dict[str, float]] = {}
        if len(normal) >= 20:  # the model's own calibration rule, on the recent normal scores
            fit = calibrate(normal, false_alarm_rate, review_rate=min(0.5, 5 * false_alarm_rate))
            presets["false_alarm_rate"] = {"t1": fit.t1, "t2": fit.t2, "rate": false_alarm_rate}
        if normal and confirmed:
            t2, f1 = max_f1_threshold(normal, confirmed)
            presets["max_f1"] = {"t1": min(model.thresholds[0], t2), "t2": t2, "f1": f1}
        return ScoresPublic(
            hours=hours,
            normal=normal,
            flagged=flagged,
            confirmed=confirmed,
            t1=model.thresholds[0],
            t2=model.thresholds[1],
            model_version=model.version,
            presets=presets,
        )

    @app.get("/models", tags=["models"], dependencies=[viewer])
    def read_models() -> list[ModelPublic]:
        """The model registry: versions, digests, status, metrics; newest first."""
        with Session(ctx.engine) as session:
            rows = session.exec(select(ModelVersion).order_by(col(ModelVersion.id).desc())).all()
        return [_model_public(r) for r in rows]

    def _model_public(row: ModelVersion) -> ModelPublic:
        data = row.model_dump()
        data["metrics"] = json.loads(row.metrics or "{}")
        return ModelPublic(**data)

    @app.post("/models", tags=["models"], status_code=201)
    async def create_model(file: UploadFile, _: Engineer) -> ModelPublic:
        """Upload a model bundle (.zip); it is checked, loaded once, and registered as a candidate."""
        data = await file.read(MAX_BUNDLE_BYTES + 1)
        if len(data) > MAX_BUNDLE_BYTES:
            raise HTTPException(413, f"bundle larger than {MAX_BUNDLE_BYTES // (1024 * 1024)} MiB")
        ctx.models_dir.mkdir(parents=True, exist_ok=True)
        staging = ctx.models_dir / f"upload-{uuid.uuid4().hex}.zip"
        staging.write_bytes(data)
        try:
            inferencer = Inferencer(staging)  # a corrupt, truncated or newer bundle fails here
            final = ctx.models_dir / f"model-{_safe(inferencer.version)}.zip"
            if final.exists() and final.read_bytes() != data:
                raise HTTPException(409, f"model version {inferencer.version!r} exists with other contents")
            staging.replace(final)
            version = ctx.register(final)
        except BundleError as exc:
            raise HTTPException(422, str(exc)) from exc
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from exc
        finally:
            staging.unlink(missing_ok=True)
        with Session(ctx.engine) as session:
            row = session.exec(select(ModelVersion).where(ModelVersion.version == version)).one()
        return _model_public(row)

    @app.post("/models/{version}/promote", tags=["models"])
    def promote_model(version: str, body: PromoteIn, _: Engineer, request: Request) -> ThresholdsPublic:
        """Make a registered version the active model: swapped between two samples, audited."""
        try:
            inferencer = ctx.promote(version, actor=_who(request), reason=body.reason)
        except KeyError as exc:
            raise HTTPException(404, str(exc.args[0])) from exc
        except BundleError as exc:
            raise HTTPException(422, str(exc)) from exc
        return ThresholdsPublic(
            t1=inferencer.thresholds[0], t2=inferencer.thresholds[1], model_version=inferencer.version
        )

    @app.post("/models/rollback", tags=["models"])
    def rollback_model(body: PromoteIn, _: Engineer, request: Request) -> ThresholdsPublic:
        """Return to the model that was active before the current one."""
        previous = store.previous_model(ctx.engine)
        if previous is None:
            raise HTTPException(409, "no earlier model to roll back to")
        return promote_model(previous, body, _, request)

    @app.get("/models/{version}/download", tags=["models"], dependencies=[viewer], response_class=FileResponse)
    def read_model_bundle(version: str) -> FileResponse:
        """The model bundle (.zip)."""
        return FileResponse(_model_path(version), media_type="application/zip", filename=f"{version}.zip")

    @app.get("/models/{version}/onnx", tags=["models"], dependencies=[viewer])
    def read_model_onnx(version: str) -> Response:
        """The model's ONNX graph alone."""
        with zipfile.ZipFile(_model_path(version)) as zf:
            return Response(
                zf.read("model.onnx"),
                media_type="application/octet-stream",
                headers={"Content-Disposition": f'attachment; filename="{_safe(version)}.onnx"'},
            )

    def _model_path(version: str):
        with Session(ctx.engine) as session:
            row = session.exec(select(ModelVersion).where(ModelVersion.version == version)).first()
        if row is None or not (ctx.models_dir / row.filename).is_file():
            raise HTTPException(404, f"no model version {version!r}")
        return ctx.models_dir / row.filename

    @app.post("/jobs/retrain", tags=["jobs"], status_code=202)
    def create_retraining_job(body: RetrainIn, _: Engineer, request: Request) -> JobPublic:
        """Retrain the active detector on new normal data in a worker process; yields a candidate."""
        for name in body.datasets:
            _dataset_path(name, must_exist=True)
        return _submit("retrain", body.model_dump(), request)

    @app.post("/jobs/project", tags=["jobs"], status_code=202)
    def create_project_job(body: ProjectJobIn, _: Engineer, request: Request) -> JobPublic:
        """Run a project file (under the data directory's projects/) as a training job."""
        return _submit("project", body.model_dump(), request)

    @app.post("/jobs/search", tags=["jobs"], status_code=202)
    def create_search_job(body: SearchJobIn, _: Engineer, request: Request) -> JobPublic:
        """Run a structure search over a project's network (under projects/) as a job; the result
        lists every trial with its error, multiply-adds and Pareto flag."""
        return _submit("search", body.model_dump(), request)

    @app.get("/jobs/{job_id}/tradeoff.png", tags=["jobs"], dependencies=[viewer], response_class=FileResponse)
    def read_search_tradeoff(job_id: JobId) -> FileResponse:
        """A search job's trade-off plot: log multiply-adds against error, the Pareto front highlighted."""
        run = read_job(job_id).result.get("run")
        if not run or not (pathlib.Path(run) / "tradeoff.png").is_file():
            raise HTTPException(404, f"job {job_id} has no trade-off plot (yet)")
        return FileResponse(pathlib.Path(run) / "tradeoff.png", media_type="image/png")

    def _submit(kind: str, params: dict[str, Any], request: Request) -> JobPublic:
        job_id = jobs.submit(
            ctx.engine, kind=kind, params=params, actor=_who(request), db_url=ctx.settings.db_url, data_dir=ctx.data
        )
        return read_job(job_id)

    @app.get("/jobs", tags=["jobs"], dependencies=[viewer])
    def read_jobs(limit: int = Query(50, ge=1, le=500)) -> list[JobPublic]:
        """Training jobs, newest first."""
        with Session(ctx.engine) as session:
            rows = session.exec(select(TrainingJob).order_by(col(TrainingJob.id).desc()).limit(limit)).all()
        return [_job_public(r) for r in rows]

    @app.get("/jobs/{job_id}", tags=["jobs"], dependencies=[viewer])
    def read_job(job_id: JobId) -> JobPublic:
        """One job: status, progress, result."""
        with Session(ctx.engine) as session:
            row = session.get(TrainingJob, job_id)
        if row is None:
            raise HTTPException(404, f"no job {job_id}")
        return _job_public(row)

    @app.get("/jobs/{job_id}/log", tags=["jobs"], dependencies=[viewer], response_class=PlainTextResponse)
    def read_job_log(job_id: JobId) -> str:
        """A job's log lines."""
        with Session(ctx.engine) as session:
            row = session.get(TrainingJob, job_id)
        if row is None:
            raise HTTPException(404, f"no job {job_id}")
        return row.log

    @app.post("/jobs/{job_id}/cancel", tags=["jobs"])
    def cancel_job(job_id: JobId, _: Engineer) -> JobPublic:
        """Ask a queued or running job to stop (honoured between epochs)."""
        if jobs.request_cancel(ctx.engine, job_id) is None:
            raise HTTPException(404, f"no job {job_id}")
        return read_job(job_id)

    def _job_public(row: TrainingJob) -> JobPublic:
        data = row.model_dump()
        data["params"], data["result"] = json.loads(row.params or "{}"), json.loads(row.result or "{}")
        return JobPublic(**data)

    @app.get("/datasets", tags=["datasets"], dependencies=[viewer])
    def read_datasets() -> list[dict[str, Any]]:
        """Datasets of new normal data on the appliance, with their image counts."""
        root = ctx.data / "datasets"
        folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        return [{"name": p.name, "images": sum(1 for f in p.rglob("*.png"))} for p in folders]

    @app.post("/datasets", tags=["datasets"], status_code=201)
    def create_dataset(body: DatasetIn, _: Engineer) -> dict[str, Any]:
        """Collect stored OK images and/or false-positive items into a named dataset (NNC CSV)."""
        folder = _dataset_path(body.name, must_exist=False)
        params = {
            "include_ok": body.include_ok,
            "include_false_positives": body.include_false_positives,
            "max_images": body.limit,
        }
        files = jobs.normal_images(ctx.engine, ctx.data, params)[: body.limit]
        (folder / "images").mkdir(parents=True, exist_ok=True)
        rows = []
        for f in files:
            target = folder / "images" / f.name
            if not target.exists():
                target.write_bytes(f.read_bytes())
            rows.append([f"images/{f.name}"])
        write_csv(folder / "training.csv", ["x:image"], rows)
        return {"name": body.name, "images": len(rows)}

    @app.post("/datasets/upload", tags=["datasets"], status_code=201)
    async def create_dataset_from_zip(
        name: Annotated[str, Query(min_length=1, max_length=100)],
        file: UploadFile,
        _: Engineer,
        layout: Literal["normal", "classes"] = "normal",
        channels: int = Query(1, ge=1, le=3, description="1 (grey) or 3 (colour)"),
        width: int = Query(28, ge=4, le=1024),
        height: int = Query(28, ge=4, le=1024),
        train_percent: float = Query(80.0, gt=0, le=100),
    ) -> dict[str, Any]:
        """Upload a zip as a named dataset: normal images (``normal``: retraining data), or one folder
        per class (``classes``: NNC training/validation CSVs, images resized to width × height).
        Paths cannot leave the dataset folder."""
        folder = _dataset_path(name, must_exist=False)
        data = await file.read(MAX_BUNDLE_BYTES + 1)
        if len(data) > MAX_BUNDLE_BYTES:
            raise HTTPException(413, f"upload larger than {MAX_BUNDLE_BYTES // (1024 * 1024)} MiB")
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile as exc:
            raise HTTPException(422, f"{file.filename or 'upload'} is not a zip archive") from exc
        images, rows = folder / "images", []
        images.mkdir(parents=True, exist_ok=True)
        for info in archive.infolist():
            member = pathlib.PurePosixPath(info.filename)
            if info.is_dir() or member.suffix.lower() not in {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}:
                continue
            if member.is_absolute() or ".." in member.parts:
                raise HTTPException(422, f"archive member {info.filename!r} would leave the dataset folder")
            if info.file_size > MAX_UPLOAD_BYTES:
                raise HTTPException(413, f"archive member {info.filename!r} is too large")
            content = archive.read(info)
            if cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_UNCHANGED) is None:
                raise HTTPException(422, f"archive member {info.filename!r} is not a readable image")
            target = images / f"{len(rows):06d}{member.suffix.lower()}"
            target.write_bytes(content)
            rows.append([f"images/{target.name}"])
        if not rows:
            raise HTTPException(422, "the archive holds no images")
        if layout == "classes":
            try:
                fmt = ImageFormat(channels, width, height)
            except CreateError as exc:
                raise HTTPException(422, str(exc)) from exc
            return _classes_dataset(archive, folder, name, fmt, train_percent)
        write_csv(folder / "training.csv", ["x:image"], rows)
        return {"name": name, "images": len(rows)}

    def _classes_dataset(
        archive: zipfile.ZipFile, folder: pathlib.Path, name: str, fmt: ImageFormat, train_percent: float
    ) -> dict[str, Any]:
        import shutil
        import tempfile

        shutil.rmtree(folder / "images", ignore_errors=True)
        with tempfile.TemporaryDirectory() as tmp:
            archive.extractall(tmp)  # members were checked above: none leaves the folder
            root = pathlib.Path(tmp)
            subdirs = [p for p in root.iterdir() if p.is_dir()]
            if len(subdirs) == 1 and not any(p.is_file() for p in root.iterdir()):
                root = subdirs[0]  # the zip of a folder holding the class folders
            try:
                summary = create_image_dataset(root, folder, fmt, train_percent, seed=0)
            except CreateError as exc:
                raise HTTPException(422, str(exc)) from exc
        return {"name": name, **{k: v for k, v in summary.items() if k != "skipped"}}

    @app.post("/datasets/sample", tags=["datasets"], status_code=201)
    def create_sample_dataset(body: SampleIn, _: Engineer) -> dict[str, Any]:
        """A ready dataset made from data inside scikit-learn (digits images, iris vectors), to try
        the training workflow without data of one's own."""
        folder = _dataset_path(body.name, must_exist=False)
        if folder.exists():
            raise HTTPException(409, f"dataset {body.name!r} exists")
        return {"name": body.name, **create_sample(body.sample, folder)}

    @app.get("/datasets/{name}", tags=["datasets"], dependencies=[viewer])
    def read_dataset(name: str, limit: int = Query(50, ge=1, le=1000)) -> dict[str, Any]:
        """A dataset's CSV files with their row counts, header and first rows (for browsing)."""
        folder = _dataset_path(name, must_exist=True)
        files = {}
        for csv_path in sorted(folder.glob("*.csv")):
            with csv_path.open(newline="", encoding="utf-8") as f:
                table = list(csv.reader(f))
            files[csv_path.name] = {
                "header": table[0] if table else [],
                "rows": len(table) - 1,
                "head": table[1 : limit + 1],
            }
        return {"name": name, "files": files}

    @app.get("/datasets/{name}/file", tags=["datasets"], dependencies=[viewer], response_class=FileResponse)
    def read_dataset_file(name: str, path: str = Query(min_length=1, max_length=500)) -> FileResponse:
        """One file of a dataset (an image a CSV cell names)."""
        folder = _dataset_path(name, must_exist=True).resolve()
        target = (folder / path).resolve()
        if not target.is_relative_to(folder) or not target.is_file():
            raise HTTPException(404, f"no file {path!r} in dataset {name!r}")
        return FileResponse(target)

    def _dataset_path(name: str, must_exist: bool) -> pathlib.Path:
        try:
            folder = jobs.dataset_dir(ctx.data, name)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        if must_exist and not folder.is_dir():
            raise HTTPException(404, f"no dataset {name!r}")
        return folder

    @app.get("/networks", tags=["workflows"], dependencies=[viewer])
    def read_networks() -> list[dict[str, Any]]:
        """The model zoo: name, task, default input shape, description."""
        return [
            {"name": e.name, "task": e.task, "input": list(e.default_input), "description": e.description}
            for e in (ZOO[n] for n in list_models())
        ]

    @app.post("/networks/stats", tags=["workflows"], dependencies=[viewer])
    def create_network_stats(body: NetworkStatsIn) -> dict[str, Any]:
        """NNC's per-layer statistics of a zoo network or a spec: shapes, parameters, multiply-adds."""
        try:
            spec = body.spec if body.spec is not None else get_spec(body.zoo or "", body.input, **body.options)
            return stats_json(build(spec))
        except (SpecError, KeyError, ValueError) as exc:
            raise HTTPException(422, str(exc.args[0] if isinstance(exc, KeyError) else exc)) from exc

    @app.get("/projects", tags=["workflows"], dependencies=[viewer])
    def read_projects() -> list[dict[str, Any]]:
        """Project files under the data directory's projects/."""
        root = ctx.data / "projects"
        files = sorted(root.glob("*.yaml")) if root.is_dir() else []
        return [{"name": p.stem, "file": p.name, "text": p.read_text(encoding="utf-8")} for p in files]

    @app.post("/projects", tags=["workflows"], status_code=201)
    def create_project(body: ProjectIn, _: Engineer) -> dict[str, Any]:
        """Write a project file (network, one of the appliance's datasets, training config); checked
        before it is stored. Run it with POST /jobs/project."""
        name = _checked_name(body.name)
        data_folder = _dataset_path(body.dataset, must_exist=True)
        if (body.zoo is None) == (body.spec is None):
            raise HTTPException(422, "give exactly one of 'zoo' or 'spec'")
        project = {
            "network": {"zoo": body.zoo, "options": body.options} if body.zoo else {"spec": body.spec},
            "dataset": {
                "training": str(data_folder / "training.csv"),
                **(
                    {"validation": str(data_folder / "validation.csv")}
                    if (data_folder / "validation.csv").is_file()
                    else {}
                ),
            },
            "config": {
                "max_epoch": body.max_epoch,
                "batch_size": body.batch_size,
                "solver": {"type": body.solver, "lr": body.lr},
            },
        }
        if body.task:
            project["task"] = body.task
        root = ctx.data / "projects"
        root.mkdir(parents=True, exist_ok=True)
        staging = root / f".{name}.{uuid.uuid4().hex}.yaml"
        staging.write_text(yaml.safe_dump(project, sort_keys=False), encoding="utf-8")
        try:
            load_project(staging)
        except ProjectError as exc:
            staging.unlink()
            raise HTTPException(422, str(exc).replace(str(staging), "project")) from exc
        target = root / f"{name}.yaml"
        staging.replace(target)
        return {"name": name, "file": target.name, "text": target.read_text(encoding="utf-8")}

    def _checked_name(name: str) -> str:
        try:
            return jobs.dataset_dir(ctx.data, name).name  # the same rule as dataset names
        except ValueError as exc:
            raise HTTPException(422, str(exc).replace("dataset name", "name")) from exc

    def _job_model(job_id: int) -> Inferencer:
        job = read_job(job_id)
        bundle = job.result.get("bundle")
        if job.kind != "project" or job.status != "succeeded" or not bundle:
            raise HTTPException(409, f"job {job_id} has no trained model (a finished project job has one)")
        try:
            return Inferencer(bundle)
        except BundleError as exc:
            raise HTTPException(422, str(exc)) from exc

    def _prediction(model: Inferencer, sample: np.ndarray) -> dict[str, Any]:
        try:
            result = model.predict(sample)
        except PreprocessError as exc:
            raise HTTPException(422, str(exc)) from exc
        return {"label": result.label, "output": result.output, "score": result.score, "latency_ms": result.latency_ms}

    @app.post("/jobs/{job_id}/predict", tags=["workflows"], dependencies=[viewer])
    async def create_job_prediction(job_id: JobId, file: UploadFile) -> dict[str, Any]:
        """Classify (or score) an uploaded image with the model a project job trained; nothing is stored."""
        model = _job_model(job_id)
        data = await file.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, f"upload larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB")
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
        if image is None:
            raise HTTPException(400, f"{file.filename or 'upload'} is not a readable image")
        return _prediction(model, image)

    @app.post("/jobs/{job_id}/predict/vector", tags=["workflows"], dependencies=[viewer])
    def create_job_vector_prediction(job_id: JobId, body: VectorIn) -> dict[str, Any]:
        """Classify (or score) a vector with the model a project job trained; nothing is stored."""
        return _prediction(_job_model(job_id), np.asarray(body.values, np.float32))

    Admin = Annotated[str, Depends(role_at_least("admin"))]

    @app.get("/tokens", tags=["admin"])
    def read_tokens(_: Admin) -> list[dict[str, Any]]:
        """API tokens: name, role, state (the secrets themselves are never stored)."""
        return store.list_tokens(ctx.engine)

    @app.post("/tokens", tags=["admin"], status_code=201)
    def create_api_token(body: TokenIn, _: Admin, request: Request) -> dict[str, str]:
        """Create a token with a role; the token is in this answer only."""
        token = store.create_token(ctx.engine, name=body.name, role=body.role)
        store.audit(ctx.engine, actor=_who(request), action="token.create", new={"name": body.name, "role": body.role})
        return {"name": body.name, "role": body.role, "token": token}

    @app.delete("/tokens/{token_id}", tags=["admin"], status_code=204)
    def delete_api_token(token_id: RowId, _: Admin, request: Request) -> None:
        """Revoke a token: it stops working at once."""
        if not store.revoke_token(ctx.engine, token_id=token_id):
            raise HTTPException(404, f"no token {token_id}")
        store.audit(ctx.engine, actor=_who(request), action="token.revoke", new={"id": token_id})

    @app.get("/settings", tags=["admin"], dependencies=[Depends(role_at_least("engineer"))])
    def read_settings() -> dict[str, Any]:
        """The settings in force (secrets left out): MQTT, topics, retention, storage."""
        s = ctx.settings
        return {
            "site": s.mqtt.site,
            "line": s.mqtt.line,
            "mqtt": {
                "host": s.mqtt.host or "embedded broker",
                "port": s.mqtt.port,
                "tls": bool(s.mqtt.tls),
                "username": s.mqtt.username,
            },
            "topics": {"alerts": ctx.topics.alerts, "status": ctx.topics.status, "threshold": ctx.topics.threshold},
            "retention": {"days": s.retention_days, "max_gb": s.retention_max_gb},
            "database": ctx.engine.url.render_as_string(hide_password=True),
        }

    @app.post("/sources/test", tags=["sources"])
    def create_source_test(body: SourceIn, _: Engineer) -> dict[str, Any]:
        """Open a source string, read one sample within 5 s and close it; nothing is added."""
        try:
            source = open_source(body.url, body.source_id)
        except (SourceError, ValueError) as exc:
            raise HTTPException(400, str(exc)) from exc
        try:
            sample = source.read(5.0)
        finally:
            source.close()
        if sample is None:
            return {
                "ok": False,
                "message": f"no sample from {body.url} within 5 s",
                "state": source.status().get("state"),
            }
        shape = list(np.asarray(sample.payload).shape)
        return {"ok": True, "message": f"read one sample of shape {shape}", "shape": shape}

    @app.post("/models/{version}/discard", tags=["models"])
    def discard_model(version: str, body: PromoteIn, _: Engineer, request: Request) -> ModelPublic:
        """Set a candidate aside (kept on disk, not offered for promotion); the active model cannot be."""
        with Session(ctx.engine) as session:
            row = session.exec(select(ModelVersion).where(ModelVersion.version == version)).first()
            if row is None:
                raise HTTPException(404, f"no model version {version!r}")
            if row.status == "active":
                raise HTTPException(409, "the active model cannot be discarded; promote another first")
            row.status = "discarded"
            session.add(row)
            session.commit()
            session.refresh(row)
        store.audit(
            ctx.engine, actor=_who(request), action="model.discard", new={"version": version}, reason=body.reason
        )
        return _model_public(row)

    @app.get("/audit", tags=["thresholds"], dependencies=[Depends(role_at_least("engineer"))])
    def read_audit_log(limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
        """Threshold and model changes: who, when, old, new, why."""
        with Session(ctx.engine) as session:
            rows = session.exec(select(AuditLog).order_by(col(AuditLog.id).desc()).limit(limit)).all()
        return [
            {
                "ts": r.ts.isoformat(),
                "actor": r.actor,
                "action": r.action,
                "old": json.loads(r.old or "null"),
                "new": json.loads(r.new or "null"),
                "reason": r.reason,
            }
            for r in rows
        ]

    return app


def _safe(text: str) -> str:
    """A file-name-safe form of a version string (uploads cannot escape the models folder)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:100] or "model"


def session_first_capture(engine: Any, since: dt.datetime) -> dt.datetime | None:
    """The first capture time in the window (so a young appliance's rates use its real age)."""
    with Session(engine) as session:
        first = session.exec(select(func.min(Inspection.t_capture)).where(col(Inspection.t_capture) >= since)).one()
    if first is not None and first.tzinfo is None:
        first = first.replace(tzinfo=dt.UTC)
    return first
