"""Jobs in worker processes: teaching a source, testing a model, retraining, project runs,
structure searches; status, log, cancel, report files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, PlainTextResponse

from appliance.api.deps import AppDep, EngineDep, Engineer, Viewer
from appliance.api.schemas import JobId, JobPublic, ProjectJobIn, RetrainIn, SearchJobIn, TeachIn
from appliance.datasets.library import dataset_dir
from appliance.errors import InvalidInput, NotFound
from appliance.sources import check_paths
from appliance.storage import queries, store
from appliance.workflows import teach
from appliance.workflows.retrain import enough_normal_images
from appliance.workflows.runs import project_file

router = APIRouter(prefix="/jobs", tags=["jobs"])


def _submit(appliance: AppDep, kind: str, params: dict[str, Any], actor: str) -> JobPublic:
    job_id = appliance.job_runner.submit(kind=kind, params=params, actor=actor)
    return JobPublic.of(queries.job(appliance.engine, job_id=job_id))


@router.post("/retrain", status_code=202)
def create_retraining_job(body: RetrainIn, appliance: AppDep, actor: Engineer) -> JobPublic:
    """Retrain the active detector on new normal data in a worker process; yields a candidate."""
    for name in body.datasets:
        dataset_dir(appliance.data, name, must_exist=True)
    appliance.active_model()  # there must be a model to retrain
    # the share of OK images the line keeps: the review band joins the calibration in that share
    params = {**body.model_dump(), "keep_ok_images": appliance.pipeline.keep_ok}
    enough_normal_images(appliance.engine, appliance.data, params)  # refused now, not after queueing
    return _submit(appliance, "retrain", params, actor.name)


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


@router.post("/teach", status_code=202)
def create_teach_job(body: TeachIn, appliance: AppDep, actor: Engineer) -> JobPublic:
    """Teach one source a new detector, trained from scratch on its good parts (its teach frames,
    an uploaded dataset or a server folder) and tested on held-out good parts and any known-bad
    ones; the result is a candidate with its test report (``/jobs/{id}/files/...``)."""
    appliance.recipe_source(body.source_id)
    if appliance.pipeline.workers[body.source_id].source.payload != "image":
        msg = f"source {body.source_id!r} yields sensor readings; teach it with `appliance detector fit --normal`"
        raise InvalidInput(msg)
    if body.source == "dataset" and not body.dataset:
        msg = "source 'dataset' needs 'dataset' (the name of an uploaded dataset)"
        raise InvalidInput(msg)
    if body.source == "folder":
        if not body.folder:
            msg = "source 'folder' needs 'folder' (a folder on the appliance)"
            raise InvalidInput(msg)
        check_paths(f"folder:{body.folder}", appliance.settings.source_roots)
    params = body.model_dump()
    teach.check(appliance.data, params)  # too few images, a bad known-bad set: refused now
    return _submit(appliance, "teach", params, actor.name)


@router.get("")
def read_jobs(engine: EngineDep, _: Viewer, limit: int = Query(50, ge=1, le=500)) -> list[JobPublic]:
    """Training jobs, newest first."""
    return [JobPublic.of(r) for r in queries.jobs(engine, limit=limit)]


@router.get("/{job_id}")
def read_job(job_id: JobId, engine: EngineDep, _: Viewer) -> JobPublic:
    """One job: status, progress, result."""
    return JobPublic.of(queries.job(engine, job_id=job_id))


@router.get("/{job_id}/log", response_class=PlainTextResponse)
def read_job_log(job_id: JobId, engine: EngineDep, _: Viewer) -> str:
    """A job's log lines."""
    return queries.job(engine, job_id=job_id).log


@router.post("/{job_id}/cancel")
def cancel_job(job_id: JobId, engine: EngineDep, _: Engineer) -> JobPublic:
    """Ask a queued or running job to stop (honoured between epochs)."""
    store.request_cancel(engine, job_id=job_id)
    return JobPublic.of(queries.job(engine, job_id=job_id))


@router.get("/{job_id}/files/{name}", response_class=FileResponse)
def read_job_file(job_id: JobId, name: str, appliance: AppDep, _: Viewer) -> FileResponse:
    """A teach or test job's report files: score_histogram.png, roc_pr.png, gallery.png, report.json."""
    queries.job(appliance.engine, job_id=job_id)
    path = teach.job_dir(appliance.data, job_id) / "report" / name
    if name not in teach.REPORT_FILES or not path.is_file():
        msg = f"job {job_id} has no file {name!r} (its report files: {', '.join(teach.REPORT_FILES)})"
        raise NotFound(msg)
    return FileResponse(path, media_type="application/json" if name.endswith(".json") else "image/png")


@router.get("/{job_id}/tradeoff.png", response_class=FileResponse)
def read_search_tradeoff(job_id: JobId, engine: EngineDep, _: Viewer) -> FileResponse:
    """A search job's trade-off plot: log multiply-adds against error, the Pareto front highlighted."""
    run = json.loads(queries.job(engine, job_id=job_id).result or "{}").get("run")
    if not run or not (Path(run) / "tradeoff.png").is_file():
        msg = f"job {job_id} has no trade-off plot (yet)"
        raise NotFound(msg)
    return FileResponse(Path(run) / "tradeoff.png", media_type="image/png")
