"""The appliance's datasets: collected from stored items, uploaded as a zip, or made from sample
data; listed and browsed."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, UploadFile
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from appliance.api.deps import AppDep, Engineer, Viewer
from appliance.api.schemas import DatasetIn, SampleIn
from appliance.api.uploads import MAX_BUNDLE_BYTES, MAX_UPLOAD_BYTES, read_upload
from appliance.datasets import ImageFormat, create_sample
from appliance.datasets import library as lib
from appliance.workflows.retrain import normal_images, review_band_images

router = APIRouter(prefix="/datasets", tags=["datasets"])


@router.get("")
def read_datasets(appliance: AppDep, _: Viewer) -> list[dict[str, Any]]:
    """Datasets of new normal data on the appliance, with their image counts."""
    return lib.list_datasets(appliance.data)


@router.post("", status_code=201)
def create_dataset(body: DatasetIn, appliance: AppDep, _: Engineer) -> dict[str, Any]:
    """Collect stored OK images and/or false-positive items into a named dataset (NNC CSV). With
    the OK images, a sample of the unjudged review items of the same span goes to its
    ``calibrate`` folder: teaching or retraining on the dataset calibrates on them, never trains."""
    folder = lib.dataset_dir(appliance.data, body.name)
    params = {
        "include_ok": body.include_ok,
        "include_false_positives": body.include_false_positives,
        "max_images": body.limit,
        "keep_ok_images": appliance.pipeline.keep_ok,
    }
    files = normal_images(appliance.engine, appliance.data, params)[: body.limit]
    return lib.collect_images(folder, files, review_band_images(appliance.engine, appliance.data, params))


@router.post("/upload", status_code=201)
async def create_dataset_from_zip(
    name: Annotated[str, Query(min_length=1, max_length=100)],
    file: UploadFile,
    appliance: AppDep,
    _: Engineer,
    layout: Literal["normal", "classes", "mvtec"] = "normal",
    channels: int = Query(1, ge=1, le=3, description="1 (grey) or 3 (colour)"),
    width: int = Query(28, ge=4, le=1024),
    height: int = Query(28, ge=4, le=1024),
    train_percent: float = Query(80.0, gt=0, le=100),
) -> dict[str, Any]:
    """Upload a zip as a named dataset: normal images (``normal``: retraining data), one folder
    per class (``classes``: NNC training/validation CSVs, images resized to width × height), or
    the MVTec AD layout (``mvtec``: test/good, test/<defect>/, ground_truth/: known-bad parts to
    test a detector on).
    Paths cannot leave the dataset folder."""
    folder = lib.dataset_dir(appliance.data, name)
    archive = lib.open_archive(await read_upload(file, MAX_BUNDLE_BYTES), file.filename or "upload")
    fmt = ImageFormat(channels, width, height) if layout == "classes" else None
    return await run_in_threadpool(  # decoding and resizing every image: off the event loop
        lib.dataset_from_zip,
        archive,
        folder,
        max_member=MAX_UPLOAD_BYTES,
        fmt=fmt,
        train_percent=train_percent,
        layout=layout,
    )


@router.post("/sample", status_code=201)
def create_sample_dataset(body: SampleIn, appliance: AppDep, _: Engineer) -> dict[str, Any]:
    """A ready dataset made from data inside scikit-learn (digits images, iris vectors), to try
    the training workflow without data of one's own."""
    folder = lib.dataset_dir(appliance.data, body.name, must_be_new=True)
    return {"name": body.name, **create_sample(body.sample, folder)}


@router.get("/{name}")
def read_dataset(name: str, appliance: AppDep, _: Viewer, limit: int = Query(50, ge=1, le=1000)) -> dict[str, Any]:
    """A dataset's CSV files with their row counts, header and first rows (for browsing)."""
    return lib.describe(lib.dataset_dir(appliance.data, name, must_exist=True), limit)


@router.get("/{name}/file", response_class=FileResponse)
def read_dataset_file(
    name: str, appliance: AppDep, _: Viewer, path: str = Query(min_length=1, max_length=500)
) -> FileResponse:
    """One file of a dataset (an image a CSV cell names)."""
    return FileResponse(lib.member_file(lib.dataset_dir(appliance.data, name, must_exist=True), path))
