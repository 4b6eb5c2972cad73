"""Inspect an uploaded image or a vector with the active model; nothing is stored."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, UploadFile
from starlette.concurrency import run_in_threadpool

from appliance.api.deps import AppDep, Operator
from appliance.api.schemas import ResultPublic, VectorIn
from appliance.api.uploads import read_image
from models.inference import Result

router = APIRouter(prefix="/inspect", tags=["inspect"])


def result_public(result: Result) -> ResultPublic:
    return ResultPublic(
        score=result.score,
        norm_score=result.norm_score,
        decision=result.decision,
        label=result.label,
        model_version=result.model_version,
        latency_ms=result.latency_ms,
    )


@router.post("")
async def create_inspection_from_image(file: UploadFile, appliance: AppDep, _: Operator) -> ResultPublic:
    """Inspect an uploaded image (PNG, JPEG, BMP, TIFF) with the active model; nothing is stored."""
    image = await read_image(file)
    model = appliance.active_model()
    return result_public(await run_in_threadpool(model.predict, image))


@router.post("/vector")
def create_inspection_from_vector(body: VectorIn, appliance: AppDep, _: Operator) -> ResultPublic:
    """Inspect a sensor vector or window (flattened) with the active model; nothing is stored."""
    return result_public(appliance.active_model().predict(np.asarray(body.values, np.float32)))
