"""Jobs in worker processes: their lifecycle, and nothing of the work itself.

Jobs wait in the database as ``queued``; the :class:`JobRunner` of the running appliance starts
the oldest ones in spawned worker processes, at most ``max_jobs`` at a time (a worker runs below
the line's priority, with one BLAS thread while the line inspects: see :func:`run_job`), reaps
the workers that ended, and fails a job whose worker died without saying why. The worker writes
status, progress and log lines to the job's row; a cancel request is honoured between epochs (or
before the start, for a queued job). What a job does lives with its workflow: ``retrain`` in
:mod:`appliance.workflows.retrain`, ``project`` and ``search`` in :mod:`appliance.workflows.runs`.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from appliance.storage import queries, store
from appliance.storage.models import as_utc, utcnow

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """The job was asked to stop."""


LINE_IDLE_S = 10.0  # no inspection decided for this long: the line is idle, a job may take every core


class JobContext:
    """What a running job uses to report progress, to notice cancellation and to share the cores
    with the line (between epochs, like the cancellation)."""

    def __init__(self, engine: Engine, job_id: int) -> None:
        self.engine, self.job_id = engine, job_id
        self.blas_threads: int | None = None  # as share_cores last asked for
        self.blas_actual = 0  # as the BLAS library then said it uses

    def update(self, **changes: Any) -> None:
        """``progress``, ``message`` (a log line), ``status`` and/or ``result``."""
        store.update_job(self.engine, job_id=self.job_id, **changes)

    def check_cancel(self) -> None:
        if queries.job(self.engine, job_id=self.job_id).cancel_requested:
            raise JobCancelled
        self.share_cores()

    def share_cores(self) -> str:
        """One BLAS thread while a line is inspecting (an inspection decided within ``LINE_IDLE_S``)
        or another job runs, every core otherwise (commissioning: the sources in teach mode judge
        nothing). Measured on this 2-core machine, beside a 100 frames/s line a retrain took 47-55 s
        with two threads and 32-34 s with one (the line's p99 19-37 ms → 16-19 ms); on an idle
        machine two threads train the detector about a quarter faster. Says what it chose when that
        changes (in the job's log) and returns why."""
        import numpy  # noqa: F401  threadpoolctl limits the BLAS libraries already loaded only
        from threadpoolctl import threadpool_info, threadpool_limits

        last = queries.last_decision(self.engine)
        busy = last is not None and (utcnow() - as_utc(last)).total_seconds() < LINE_IDLE_S
        others = queries.running_jobs(self.engine) > 1
        threads = 1 if busy or others else len(os.sched_getaffinity(0))
        why = "a line is inspecting" if busy else "another job runs" if others else "no line is inspecting"
        if threads != self.blas_threads:
            threadpool_limits(threads)
            blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
            actual = max(blas, default=threads)  # as the library says, not as asked
            if self.blas_threads is not None:
                self.update(message=f"{why}: {_threads(actual)} from now on")
            self.blas_threads, self.blas_actual = threads, actual
        return why


def _threads(n: int) -> str:
    return f"{n} BLAS thread{'s' if n != 1 else ''}"


def runners() -> dict[str, Callable[[JobContext, Engine, Path, dict[str, Any]], dict[str, Any]]]:
    """The work of each job kind (imported in the worker only: it needs the engine)."""
    from appliance.workflows.retrain import retrain
    from appliance.workflows.runs import project_run, search_run
    from appliance.workflows.teach import model_report, teach

    return {"retrain": retrain, "project": project_run, "search": search_run, "teach": teach, "test": model_report}


JOB_NICENESS = 10  # a job's worker yields the cores to the line: inspection is the appliance's real-time work


def run_job(job_id: int, db_url: str, data_dir: str) -> None:
    """Worker process entry point. The worker runs below the appliance's scheduling priority
    (``JOB_NICENESS``; beside a 100 frames/s line that alone took the line's capture-to-decision
    p99 during a retrain from 26-55 ms to 16-41 ms) with the BLAS threads
    :meth:`JobContext.share_cores` chooses."""
    from appliance.storage.db import make_engine

    niceness = os.nice(JOB_NICENESS)
    engine = make_engine(db_url)
    ctx = JobContext(engine, job_id)
    job = queries.job(engine, job_id=job_id)
    ctx.update(status="running")
    why = ctx.share_cores()
    ctx.update(message=f"{job.kind} job started (niceness {niceness}, {_threads(ctx.blas_actual)}: {why})")
    try:
        result = runners()[job.kind](ctx, engine, Path(data_dir), json.loads(job.params))
        ctx.update(status="succeeded", progress=1.0, message="done", result=result)
    except JobCancelled:
        ctx.update(status="cancelled", message="cancelled on request")
    except Exception as exc:  # the job's row must say why it failed, whatever it was
        from appliance.errors import user_errors

        ctx.update(message=traceback.format_exc()[-2000:])  # in the log, for whoever looks into it
        # the message, last: what the console and the API show; a mistake in what was asked for
        # reads as the sentence that names it, anything else with its kind
        theirs = isinstance(exc, user_errors())
        ctx.update(status="failed", message=str(exc) if theirs else f"{type(exc).__name__}: {exc}")


class JobRunner:
    """Starts queued jobs (oldest first, at most ``max_jobs`` at once) and reaps their workers.
    Several nodes on one database share the queue: a job runs on the node that claims it."""

    def __init__(
        self, engine: Engine, db_url: str, data_dir: Path, node: str, max_jobs: int = 1, every: float = 0.5
    ) -> None:
        self.engine, self.db_url, self.data_dir, self.node = engine, db_url, Path(data_dir), node
        self.max_jobs, self.every = max_jobs, every
        self.processes: dict[int, multiprocessing.Process] = {}
        self.wake, self.stopping = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, name="jobs", daemon=True)

    def start(self) -> JobRunner:
        self.thread.start()
        return self

    def submit(self, *, kind: str, params: dict[str, Any], actor: str) -> int:
        """Queue a job; it starts as soon as a slot is free. Returns the job id."""
        job_id = store.create_job(self.engine, kind=kind, params=params, actor=actor)
        self.wake.set()
        return job_id

    def _run(self) -> None:
        failing = False
        while not self.stopping.is_set():
            try:
                self.step()
                failing = False
            except Exception:  # a database outage must not end job scheduling; said once per outage
                if not failing:
                    log.exception("job scheduling failed; trying again")
                failing = True
            self.wake.wait(self.every)
            self.wake.clear()

    def step(self) -> None:
        """Reap ended workers, drop cancelled queued jobs, start queued ones into free slots."""
        for job_id, process in list(self.processes.items()):
            if not process.is_alive():  # is_alive() reaps the ended process: no zombie stays
                self.processes.pop(job_id)
                store.fail_unfinished_jobs(
                    self.engine,
                    node=self.node,
                    job_id=job_id,
                    message=f"the job's worker ended unexpectedly (exit code {process.exitcode})",
                )
        for job in queries.queued_jobs(self.engine):
            if job.cancel_requested:
                store.update_job(self.engine, job_id=job.id, status="cancelled", message="cancelled before it started")
            elif len(self.processes) < self.max_jobs and store.claim_job(self.engine, job_id=job.id, node=self.node):
                process = multiprocessing.get_context("spawn").Process(
                    target=run_job, args=(job.id, self.db_url, str(self.data_dir)), name=f"job-{job.id}", daemon=True
                )
                process.start()
                self.processes[job.id] = process

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the running workers (the appliance is stopping); their jobs are marked failed
        at the next start."""
        self.stopping.set()
        self.wake.set()
        if self.thread.ident is not None:
            self.thread.join(timeout)
        for process in self.processes.values():
            if process.is_alive():
                process.terminate()
                process.join(timeout)
        self.processes.clear()
