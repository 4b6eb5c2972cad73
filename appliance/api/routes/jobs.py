"""Jobs in worker processes: retraining, project runs, structure searches; status, log, cancel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, PlainTextResponse

from appliance.api.deps import AppDep, EngineDep, Engineer, Viewer
from appliance.api.schemas import JobId, JobPublic, ProjectJobIn, RetrainIn, SearchJobIn
from appliance.datasets.library import dataset_dir
from appliance.errors import NotFound
from appliance.storage import queries, store
from appliance.storage.models import TrainingJob
from appliance.workflows.runs import project_file

router = APIRouter(prefix="/jobs", tags=["jobs"])


def job_public(row: TrainingJob) -> JobPublic:
    return JobPublic(
        **(row.model_dump() | {"params": json.loads(row.params or "{}"), "result": json.loads(row.result or "{}")})
    )


def _submit(appliance: AppDep, kind: str, params: dict[str, Any], actor: str) -> JobPublic:
    job_id = appliance.job_runner.submit(kind=kind, params=params, actor=actor)
    return job_public(queries.job(appliance.engine, job_id=job_id))


@router.post("/retrain", status_code=202)
def create_retraining_job(body: RetrainIn, appliance: AppDep, actor: Engineer) -> JobPublic:
    """Retrain the active detector on new normal data in a worker process; yields a candidate."""
    for name in body.datasets:
        dataset_dir(appliance.data, name, must_exist=True)
    appliance.active_model()  # there must be a model to retrain
    return _submit(appliance, "retrain", body.model_dump(), actor.name)


@router.post("/project", status_code=202)
def create_project_job(body: ProjectJobIn, appliance: AppDep, actor: Engineer) -> JobPublic:
    """Run a project file (under the data directory's projects/) as a training job."""
    project_file(appliance.data, body.model_dump())  # refused now when there is no such file
    return _submit(appliance, "project", body.model_dump(), actor.name)


@router.post("/search", status_code=202)
def create_search_job(body: SearchJobIn, appliance: AppDep, actor: Engineer) -> JobPublic:
    """Run a structure search over a project's network (under projects/) as a job; the result
    lists every trial with its error, multiply-adds and Pareto flag."""
    project_file(appliance.data, body.model_dump())
    return _submit(appliance, "search", body.model_dump(), actor.name)


@router.get("")
def read_jobs(engine: EngineDep, _: Viewer, limit: int = Query(50, ge=1, le=500)) -> list[JobPublic]:
    """Training jobs, newest first."""
    return [job_public(r) for r in queries.jobs(engine, limit=limit)]


@router.get("/{job_id}")
def read_job(job_id: JobId, engine: EngineDep, _: Viewer) -> JobPublic:
    """One job: status, progress, result."""
    return job_public(queries.job(engine, job_id=job_id))


@router.get("/{job_id}/log", response_class=PlainTextResponse)
def read_job_log(job_id: JobId, engine: EngineDep, _: Viewer) -> str:
    """A job's log lines."""
    return queries.job(engine, job_id=job_id).log


@router.post("/{job_id}/cancel")
def cancel_job(job_id: JobId, engine: EngineDep, _: Engineer) -> JobPublic:
    """Ask a queued or running job to stop (honoured between epochs)."""
    store.request_cancel(engine, job_id=job_id)
    return job_public(queries.job(engine, job_id=job_id))


@router.get("/{job_id}/tradeoff.png", response_class=FileResponse)
def read_search_tradeoff(job_id: JobId, engine: EngineDep, _: Viewer) -> FileResponse:
    """A search job's trade-off plot: log multiply-adds against error, the Pareto front highlighted."""
    run = json.loads(queries.job(engine, job_id=job_id).result or "{}").get("run")
    if not run or not (Path(run) / "tradeoff.png").is_file():
        msg = f"job {job_id} has no trade-off plot (yet)"
        raise NotFound(msg)
    return FileResponse(Path(run) / "tradeoff.png", media_type="image/png")
