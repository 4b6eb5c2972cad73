"""Jobs in worker processes: their lifecycle, and nothing of the work itself.

Each job runs in its own spawned process, so the API and the pipeline stay responsive. The worker
writes status, progress and log lines to the job's row; a cancel request is honoured between
epochs. What a job does lives with its workflow: ``retrain`` in
:mod:`appliance.workflows.retrain`, ``project`` and ``search`` in :mod:`appliance.workflows.runs`.
"""

from __future__ import annotations

import json
import multiprocessing
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from appliance.storage import queries, store

_processes: dict[int, multiprocessing.Process] = {}


class JobCancelled(Exception):
    """The job was asked to stop."""


def submit(engine: Engine, *, kind: str, params: dict[str, Any], actor: str, db_url: str, data_dir: Path) -> int:
    """Record a job and start its worker process; returns the job id."""
    job_id = store.create_job(engine, kind=kind, params=params, actor=actor)
    process = multiprocessing.get_context("spawn").Process(
        target=run_job, args=(job_id, db_url, str(data_dir)), name=f"job-{job_id}", daemon=True
    )
    process.start()
    _processes[job_id] = process
    return job_id


class JobContext:
    """What a running job uses to report progress and to notice cancellation."""

    def __init__(self, engine: Engine, job_id: int) -> None:
        self.engine, self.job_id = engine, job_id

    def update(self, **changes: Any) -> None:
        """``progress``, ``message`` (a log line), ``status`` and/or ``result``."""
        store.update_job(self.engine, job_id=self.job_id, **changes)

    def check_cancel(self) -> None:
        if queries.job(self.engine, job_id=self.job_id).cancel_requested:
            raise JobCancelled


def runners() -> dict[str, Callable[[JobContext, Engine, Path, dict[str, Any]], dict[str, Any]]]:
    """The work of each job kind (imported in the worker only: it needs the engine)."""
    from appliance.workflows.retrain import retrain
    from appliance.workflows.runs import project_run, search_run

    return {"retrain": retrain, "project": project_run, "search": search_run}


def run_job(job_id: int, db_url: str, data_dir: str) -> None:
    """Worker process entry point."""
    from appliance.storage.db import make_engine

    engine = make_engine(db_url)
    ctx = JobContext(engine, job_id)
    job = queries.job(engine, job_id=job_id)
    ctx.update(status="running", message=f"{job.kind} job started")
    try:
        result = runners()[job.kind](ctx, engine, Path(data_dir), json.loads(job.params))
        ctx.update(status="succeeded", progress=1.0, message="done", result=result)
    except JobCancelled:
        ctx.update(status="cancelled", message="cancelled on request")
    except Exception as exc:  # the job's row must say why it failed, whatever it was
        ctx.update(status="failed", message=f"{type(exc).__name__}: {exc}")
        ctx.update(message=traceback.format_exc()[-2000:])


def stop_all(timeout: float = 5.0) -> None:
    """Terminate the job workers this process started (the appliance is stopping)."""
    for process in _processes.values():
        if process.is_alive():
            process.terminate()
            process.join(timeout)
    _processes.clear()
