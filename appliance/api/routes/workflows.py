"""NNC's workflows over HTTP: the model zoo and network statistics, project files, and predictions
with the model a project job trained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, UploadFile
from starlette.concurrency import run_in_threadpool

from appliance.api.deps import AppDep, Engineer, Viewer
from appliance.api.schemas import JobId, NetworkStatsIn, ProjectIn, VectorIn
from appliance.api.uploads import read_image, read_upload
from appliance.datasets.library import dataset_dir
from appliance.errors import Conflict, Unreadable
from appliance.project import list_projects, write_project
from appliance.storage import queries
from models.inference import Inferencer, Result
from models.spec import build
from models.stats import stats_json
from models.zoo import ZOO, get_spec, list_models

router = APIRouter(tags=["workflows"])
MAX_STATS_PARAMETERS = 50_000_000  # what a viewer's statistics request may make the server allocate (200 MB)
MAX_PROJECT_BYTES = 8 * 1024 * 1024  # an .sdcproj is text: NNC's largest samples are under 1 MB


@router.get("/networks")
def read_networks(_: Viewer) -> list[dict[str, Any]]:
    """The model zoo: name, task, default input shape, description."""
    return [
        {"name": e.name, "task": e.task, "input": list(e.default_input), "description": e.description}
        for e in (ZOO[n] for n in list_models())
    ]


@router.post("/networks/stats")
def create_network_stats(body: NetworkStatsIn, _: Viewer) -> dict[str, Any]:
    """NNC's per-layer statistics of a zoo network or a spec: shapes, parameters, multiply-adds
    (networks of up to 50 million parameters)."""
    spec = body.spec if body.spec is not None else get_spec(body.zoo or "", body.input, **body.options)
    return stats_json(build(spec, max_parameters=MAX_STATS_PARAMETERS))


@router.post("/networks/import")
async def import_network(file: UploadFile, _: Engineer) -> dict[str, Any]:
    """An NNC project (.sdcproj) as our network spec, task and training config, with what the
    importer changed or left out (nothing is stored: save it as a project with POST /projects)."""
    data = await read_upload(file, MAX_PROJECT_BYTES)
    name = Path(file.filename or "project.sdcproj").name
    return await run_in_threadpool(_imported_project, data, name)


def _imported_project(data: bytes, name: str) -> dict[str, Any]:
    from appliance.datasets.sdcproj import import_sdcproj

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        msg = f"{name} is not a text file (an NNC project is UTF-8 INI text)"
        raise Unreadable(msg) from exc
    result = import_sdcproj(name, text=text)
    build(result.network, max_parameters=MAX_STATS_PARAMETERS)  # refuses what it could not train here
    project = result.project
    return {
        "name": Path(name).stem,
        "task": result.task,
        "network": result.network,
        "config": project["config"],
        "score": project.get("score"),
        "dataset": {k: v for k, v in project["dataset"].items() if k in ("input", "target")},
        "notes": result.notes,
    }


@router.get("/projects")
def read_projects(appliance: AppDep, _: Viewer) -> list[dict[str, Any]]:
    """Project files under the data directory's projects/."""
    return list_projects(appliance.data / "projects")


@router.post("/projects", status_code=201)
def create_project(body: ProjectIn, appliance: AppDep, _: Engineer) -> dict[str, Any]:
    """Write a project file (network, one of the appliance's datasets, training config); checked
    before it is stored. Run it with POST /jobs/project."""
    data_folder = dataset_dir(appliance.data, body.dataset, must_exist=True)
    settings = body.model_dump(exclude={"name", "dataset"})
    return write_project(appliance.data / "projects", body.name, data_folder, **settings)


def _job_model(appliance: AppDep, job_id: int) -> Inferencer:
    job = queries.job(appliance.engine, job_id=job_id)
    bundle = json.loads(job.result or "{}").get("bundle")
    if job.kind != "project" or job.status != "succeeded" or not bundle:
        msg = f"job {job_id} has no trained model (a finished project job has one)"
        raise Conflict(msg)
    return Inferencer(bundle)


def _prediction(result: Result) -> dict[str, Any]:
    return {"label": result.label, "output": result.output, "score": result.score, "latency_ms": result.latency_ms}


@router.post("/jobs/{job_id}/predict")
async def create_job_prediction(job_id: JobId, file: UploadFile, appliance: AppDep, _: Viewer) -> dict[str, Any]:
    """Classify (or score) an uploaded image with the model a project job trained; nothing is stored."""
    model = await run_in_threadpool(_job_model, appliance, job_id)
    image = await read_image(file)
    return _prediction(await run_in_threadpool(model.predict, image))


@router.post("/jobs/{job_id}/predict/vector")
def create_job_vector_prediction(job_id: JobId, body: VectorIn, appliance: AppDep, _: Viewer) -> dict[str, Any]:
    """Classify (or score) a vector with the model a project job trained; nothing is stored."""
    return _prediction(_job_model(appliance, job_id).predict(np.asarray(body.values, np.float32)))
