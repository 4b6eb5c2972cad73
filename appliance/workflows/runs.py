"""The work of project and search jobs: ``appliance train`` (then an evaluation) and
``appliance search`` on a project file under ``<data>/projects``, reporting progress, the learning
curve and the trials table to their job, and honouring a cancel."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from appliance.errors import NotFound
from appliance.jobs import JobCancelled, JobContext
from appliance.project import load_project
from appliance.workflows import evaluate, train
from appliance.workflows.trials import die_with_parent
from engine.training import Callback


def project_run(ctx: JobContext, engine: Engine, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    """``appliance train`` on a project file, then an evaluation on its validation data."""
    project = project_file(data_dir, params)
    config = load_project(project)
    epochs = config.config.max_epoch

    def log(line: str) -> None:
        ctx.check_cancel()
        ctx.update(message=line)

    class Curve(Callback):  # the learning curve in the job's result, for a live plot
        def on_epoch_end(self, trainer, record):
            ctx.update(progress=0.9 * record["epoch"] / epochs, result={"curve": trainer.history})

    result = train(project, data_dir / "runs" / f"job-{ctx.job_id}", log=log, progress=False, callbacks=[Curve()])
    bundle = result.best_bundle or result.last_bundle
    out = {"run": str(result.directory), "final": result.final, "bundle": str(bundle), "curve": result.history}
    if config.dataset.validation:
        ctx.update(message="evaluating on the validation data", progress=0.95)
        report = evaluate(bundle, config.path(config.dataset.validation), result.directory / "evaluation")
        with (result.directory / "evaluation" / "output_result.csv").open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        out["evaluation"] = {k: v for k, v in report.items() if k not in ("model", "dataset", "output_dir")}
        out["evaluation"]["output_head"] = rows[:201]
        datasets = (data_dir / "datasets").resolve()
        validation = config.path(config.dataset.validation).resolve()
        if validation.is_relative_to(datasets):  # one of the appliance's datasets: the console shows its images
            out["evaluation"]["dataset_name"] = validation.relative_to(datasets).parts[0]
    return out


def _interruptible_child() -> None:
    """Before the search starts: SIGINT at its default, so Python turns it into KeyboardInterrupt
    (a cancel) even when the appliance was started with SIGINT ignored, as a shell ignores it for
    commands it starts in the background (the search then ran on after a cancel and the job failed);
    and ended with the appliance."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    die_with_parent()


def search_run(ctx: JobContext, engine: Engine, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    """``appliance search`` on a project file, in its own process group (its trials need a process
    pool, which a job worker may not start itself). Progress is trials finished over the budget; a
    cancel interrupts it, and the finished trials stay in the search folder."""
    project = project_file(data_dir, params)
    run = data_dir / "runs" / f"search-job-{ctx.job_id}"
    trials = int(params.get("trials", 20))
    command = [sys.executable, "-m", "appliance.cli", "search", str(project), "-o", str(run), "--quiet"]
    command += ["--trials", str(trials)]
    for key in ("method", "objective", "epochs", "workers"):
        if params.get(key) is not None:
            command += [f"--{key}", str(params[key])]
    ctx.update(message=f"search over {project.name}: {trials} trials", progress=0.0)
    process = subprocess.Popen(  # its own group, so a cancel reaches its trial workers; ends with this job
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_interruptible_child,
    )
    seen = 0
    try:
        while process.poll() is None:
            time.sleep(1.0)
            done = len(list(run.glob("trials/*/trial.json")))
            if done != seen:
                seen = done
                ctx.update(
                    progress=0.98 * done / trials,
                    message=f"{done} of {trials} trials finished",
                    result={"run": str(run), "trials": _trial_rows(run)},
                )
            ctx.check_cancel()
    except JobCancelled:
        os.killpg(process.pid, signal.SIGINT)  # the search keeps its finished trials
        process.wait(60)
        raise
    if process.returncode != 0:
        msg = f"the search failed: {process.stderr.read().strip()[-1000:]}"
        raise RuntimeError(msg)
    return {"run": str(run), "trials": _trial_rows(run)}


def _trial_rows(run: Path) -> list[dict[str, Any]]:
    table = run / "trials.csv"
    if not table.is_file():
        return []
    with table.open(newline="", encoding="utf-8") as f:
        return [{k: v for k, v in row.items() if k != "spec"} for row in csv.DictReader(f)]


def project_file(data_dir: Path, params: dict[str, Any]) -> Path:
    root = (data_dir / "projects").resolve()
    project = (root / str(params.get("project", ""))).resolve()
    if not project.is_relative_to(root) or not project.is_file():
        msg = f"no project file {params.get('project')!r} under {data_dir / 'projects'}"
        raise NotFound(msg)
    return project
