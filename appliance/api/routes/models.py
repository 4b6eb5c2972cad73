"""The model registry: list, upload, promote, roll back, discard, download; shadow a candidate on
the live line and compare it with the model it runs beside."""

from __future__ import annotations

import json
import zipfile

from fastapi import APIRouter, Query, UploadFile
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from appliance import registry
from appliance.api.deps import AppDep, EngineDep, Engineer, Viewer
from appliance.api.schemas import (
    JobPublic,
    ModelPublic,
    ModelTestIn,
    PromoteIn,
    RowId,
    ShadowIn,
    ShadowPublic,
    ThresholdsPublic,
)
from appliance.api.uploads import MAX_BUNDLE_BYTES, read_upload
from appliance.datasets.images import mvtec_layout
from appliance.datasets.library import dataset_dir
from appliance.errors import NotFound
from appliance.storage import queries, store
from appliance.storage.models import ModelVersion

router = APIRouter(prefix="/models", tags=["models"])


def model_public(row: ModelVersion) -> ModelPublic:
    return ModelPublic(**(row.model_dump() | {"metrics": json.loads(row.metrics or "{}")}))


@router.get("")
def read_models(engine: EngineDep, _: Viewer) -> list[ModelPublic]:
    """The model registry: versions, digests, status, metrics; newest first."""
    return [model_public(r) for r in queries.models(engine)]


@router.post("", status_code=201)
async def create_model(file: UploadFile, appliance: AppDep, _: Engineer) -> ModelPublic:
    """Upload a model bundle (.zip); it is checked, loaded once, and registered as a candidate."""
    data = await read_upload(file, MAX_BUNDLE_BYTES)
    version = await run_in_threadpool(registry.upload, appliance.engine, appliance.models_dir, data)  # off the loop
    return model_public(queries.model(appliance.engine, version=version))


@router.post("/rollback")
def rollback_model(body: PromoteIn, appliance: AppDep, actor: Engineer) -> ThresholdsPublic:
    """Return to the model that judged before: the default's, or (``source_id``) that source's own."""
    recipe = appliance.rollback(actor.name, body.reason, body.source_id)
    return ThresholdsPublic.of(recipe, body.source_id)


@router.post("/{version}/promote")
def promote_model(version: str, body: PromoteIn, appliance: AppDep, actor: Engineer) -> ThresholdsPublic:
    """Make a registered version the default model, or (``source_id``) that source's own model (its
    recipe): loaded and checked first, swapped in between two samples, audited. A model without
    finite, ordered calibrated thresholds is refused."""
    return ThresholdsPublic.of(appliance.promote(version, actor.name, body.reason, body.source_id), body.source_id)


@router.post("/{version}/test", status_code=202)
def create_model_test(version: str, body: ModelTestIn, appliance: AppDep, actor: Engineer) -> JobPublic:
    """Test a registered detector on an uploaded dataset in the MVTec AD layout, as a job: image
    and pixel AUROC, AUPRO, the false-alarm rate at T2 against the nominal one, defects flagged,
    per defect; plots and gallery at ``/jobs/{id}/files/...``."""
    registry.model_path(appliance.engine, appliance.models_dir, version)  # registered, on disk
    mvtec_layout(dataset_dir(appliance.data, body.dataset, must_exist=True))
    job_id = appliance.job_runner.submit(
        kind="test", params={"version": version, **body.model_dump()}, actor=actor.name
    )
    return JobPublic.of(queries.job(appliance.engine, job_id=job_id))


@router.post("/{version}/discard")
def discard_model(version: str, body: PromoteIn, engine: EngineDep, actor: Engineer) -> ModelPublic:
    """Set a candidate aside (kept on disk, not offered for promotion); the active model cannot be."""
    return model_public(store.discard_model(engine, version=version, actor=actor.name, reason=body.reason))


@router.get("/{version}/download", response_class=FileResponse)
def read_model_bundle(version: str, appliance: AppDep, _: Viewer) -> FileResponse:
    """The model bundle (.zip)."""
    path = registry.model_path(appliance.engine, appliance.models_dir, version)
    return FileResponse(path, media_type="application/zip", filename=f"{version}.zip")


@router.get("/{version}/onnx")
def read_model_onnx(version: str, appliance: AppDep, _: Viewer) -> Response:
    """The model's ONNX graph alone."""
    with zipfile.ZipFile(registry.model_path(appliance.engine, appliance.models_dir, version)) as zf:
        graph = zf.read("model.onnx")
    headers = {"Content-Disposition": f'attachment; filename="{registry.safe_name(version)}.onnx"'}
    return Response(graph, media_type="application/octet-stream", headers=headers)


@router.post("/{version}/shadow", status_code=201)
def create_shadow(version: str, body: ShadowIn, appliance: AppDep, actor: Engineer) -> ShadowPublic:
    """Put a registered version in shadow on a source a model judges: it scores every frame that
    model scores (preprocessing shared when the input specs match), raises no alerts, publishes
    nothing; its results are stored beside the model's. One shadow per source; audited."""
    return ShadowPublic(**appliance.start_shadow(version, body.source_id, actor.name, body.reason))


@router.get("/{version}/shadow")
def read_shadows(
    version: str, appliance: AppDep, _: Viewer, source_id: str | None = Query(None, max_length=200)
) -> list[ShadowPublic]:
    """The version's shadows, newest first: running ones compared live with the model they run
    beside (agreement, confusion, alert rate per hour and shift, score distributions, judged
    alerts each would have caught or raised, the newest disagreements with both heat maps);
    ended ones (promoted or stopped) as their comparison was kept."""
    return [ShadowPublic(**c) for c in appliance.shadow_comparison(version, source_id)]


@router.post("/{version}/shadow/stop")
def stop_shadow(version: str, body: ShadowIn, appliance: AppDep, actor: Engineer) -> ShadowPublic:
    """End the version's shadow on a source without promoting it; the comparison is kept (audited).
    To promote it instead: ``POST /models/{version}/promote`` with the ``source_id``."""
    return ShadowPublic(**appliance.stop_shadow(version, body.source_id, actor.name, body.reason))


@router.get("/{version}/shadow/results/{result_id}/heatmap", response_class=FileResponse)
def read_shadow_heatmap(version: str, result_id: RowId, appliance: AppDep, _: Viewer) -> FileResponse:
    """The shadow model's heat map of a frame where it disagreed with the source's model (PNG)."""
    ref = queries.shadow_result(appliance.engine, result_id=result_id).heatmap_ref
    if not ref or not appliance.images.path(ref).is_file():
        msg = f"no heat map stored for shadow result {result_id} (kept only where the two models disagree)"
        raise NotFound(msg)
    return FileResponse(appliance.images.path(ref), media_type="image/png")
