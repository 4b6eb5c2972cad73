"""Training jobs in worker processes: retraining on new normal data, and full project runs.

Each job runs in its own spawned process, so the API and the pipeline stay responsive. The worker
writes status, progress and log lines to the job's row; a cancel request is honoured between
epochs. A retrain fine-tunes the active detector on new normal images (recent OK items, items
marked false positive, uploaded datasets), recalibrates it, compares it with the active model on
the same held-out normal images (and on confirmed defects, where there are any), and registers
the result as a *candidate*: promotion stays a human decision.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import multiprocessing
import traceback
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from sqlmodel import Session, col, select

from appliance.storage.models import Alert, Inspection, TrainingJob, utcnow

_processes: dict[int, multiprocessing.Process] = {}


class JobCancelled(Exception):
    """The job was asked to stop."""


def submit(engine: Any, *, kind: str, params: dict[str, Any], actor: str, db_url: str, data_dir: Path) -> int:
    """Record a job and start its worker process; returns the job id."""
    with Session(engine) as session:
        job = TrainingJob(kind=kind, params=json.dumps(params), created_by=actor)
        session.add(job)
        session.commit()
        job_id = job.id
    process = multiprocessing.get_context("spawn").Process(
        target=run_job, args=(job_id, db_url, str(data_dir)), name=f"job-{job_id}", daemon=True
    )
    process.start()
    _processes[job_id] = process
    return job_id


def request_cancel(engine: Any, job_id: int) -> TrainingJob | None:
    with Session(engine) as session:
        job = session.get(TrainingJob, job_id)
        if job is None:
            return None
        if job.status in ("queued", "running"):
            job.cancel_requested = True
            session.add(job)
            session.commit()
            session.refresh(job)
        return job


class JobContext:
    """What a running job uses to report progress and to notice cancellation."""

    def __init__(self, engine: Any, job_id: int) -> None:
        self.engine, self.job_id = engine, job_id

    def update(
        self,
        *,
        progress: float | None = None,
        message: str | None = None,
        status: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> None:
        with Session(self.engine) as session:
            job = session.get(TrainingJob, self.job_id)
            if progress is not None:
                job.progress = float(min(max(progress, 0.0), 1.0))
            if message is not None:
                job.message = message
                job.log += f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} {message}\n"
            if status is not None:
                job.status = status
                if status == "running":
                    job.started_at = utcnow()
                elif status in ("succeeded", "failed", "cancelled"):
                    job.finished_at = utcnow()
            if result is not None:
                job.result = json.dumps(result)
            session.add(job)
            session.commit()

    def check_cancel(self) -> None:
        with Session(self.engine) as session:
            if session.get(TrainingJob, self.job_id).cancel_requested:
                raise JobCancelled


def run_job(job_id: int, db_url: str, data_dir: str) -> None:
    """Worker process entry point."""
    from appliance.storage.db import make_engine

    engine = make_engine(db_url)
    ctx = JobContext(engine, job_id)
    with Session(engine) as session:
        job = session.get(TrainingJob, job_id)
        kind, params = job.kind, json.loads(job.params)
    ctx.update(status="running", message=f"{kind} job started")
    try:
        runner = {"retrain": retrain, "project": project_run, "search": search_run}[kind]
        result = runner(ctx, engine, Path(data_dir), params)
        ctx.update(status="succeeded", progress=1.0, message="done", result=result)
    except JobCancelled:
        ctx.update(status="cancelled", message="cancelled on request")
    except Exception as exc:  # the job's row must say why it failed, whatever it was
        ctx.update(status="failed", message=f"{type(exc).__name__}: {exc}")
        ctx.update(message=traceback.format_exc()[-2000:])


# -- retraining ------------------------------------------------------------------------------------
def normal_images(engine: Any, data_dir: Path, params: dict[str, Any]) -> list[Path]:
    """Image files of new normal data: recent OK items, false positives, uploaded datasets."""
    from appliance.images import ImageStore

    store_ = ImageStore(data_dir / "images")
    refs: list[str] = []
    with Session(engine) as session:
        if params.get("include_ok", True):
            rows = session.exec(
                select(Inspection.image_ref)
                .where(Inspection.decision == "ok", col(Inspection.image_ref).is_not(None))
                .order_by(col(Inspection.id).desc())
                .limit(int(params.get("max_images", 500)))
            )
            refs += list(rows)
        if params.get("include_false_positives", True):
            rows = session.exec(
                select(Inspection.image_ref)
                .join(Alert, Alert.inspection_id == Inspection.id)
                .where(Alert.state == "false_positive", col(Inspection.image_ref).is_not(None))
            )
            refs += list(rows)
    files = [store_.path(r) for r in dict.fromkeys(refs) if store_.path(r).is_file()]
    for name in params.get("datasets", []):
        folder = dataset_dir(data_dir, name)
        files += sorted(
            p for p in folder.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
        )
    return files


def confirmed_defect_images(engine: Any, data_dir: Path) -> list[Path]:
    from appliance.images import ImageStore

    store_ = ImageStore(data_dir / "images")
    with Session(engine) as session:
        refs = session.exec(
            select(Inspection.image_ref)
            .join(Alert, Alert.inspection_id == Inspection.id)
            .where(Alert.state == "confirmed", col(Inspection.image_ref).is_not(None))
        ).all()
    return [store_.path(r) for r in refs if store_.path(r).is_file()]


def retrain(ctx: JobContext, engine: Any, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    from appliance.storage import store
    from engine.training import Callback
    from models import bundle as bundle_io
    from models.detector.model import Detector
    from models.inference import Inferencer
    from models.preprocess import InputSpec, preprocess_batch

    active = store.active_model(engine)
    if active is None:
        msg = "no active model to retrain"
        raise ValueError(msg)
    models_dir = data_dir / "models"
    bundle = bundle_io.load(models_dir / active[1])
    spec = InputSpec.from_dict(bundle.meta["input"])
    files = normal_images(engine, data_dir, params)
    min_images = int(params.get("min_images", 40))
    if len(files) < min_images:
        msg = f"only {len(files)} new normal images; retraining needs at least {min_images}"
        raise ValueError(msg)
    ctx.update(message=f"retraining {active[0]} on {len(files)} normal images", progress=0.02)
    images = [img for img in (cv2.imread(str(f), cv2.IMREAD_UNCHANGED) for f in files) if img is not None]
    x = preprocess_batch(images, spec)
    detector = Detector.from_bundle(bundle)
    detector.config.epochs = int(params.get("epochs", 10))

    class Progress(Callback):
        def on_epoch_end(self, trainer, record):
            ctx.check_cancel()
            ctx.update(
                progress=0.05 + 0.85 * record["epoch"] / detector.config.epochs,
                message=f"epoch {record['epoch']}/{detector.config.epochs}: cost {record['cost']:.4f}",
                result={"curve": trainer.history},  # the learning curve so far, for a live plot
            )

    summary = detector.fit(x, callbacks=(Progress(),))
    candidate = detector.to_bundle(
        spec,
        provenance={"retrained_from": active[0], "normal_images": len(x), "job": ctx.job_id},
        name="retrained-detector",
    )
    version = candidate.meta["version"] = f"{candidate.meta['version']}-job{ctx.job_id}"
    path = models_dir / f"detector-{version}.zip"
    candidate.save(path)
    comparison = compare(
        Inferencer(models_dir / active[1]), Inferencer(path), x, confirmed_defect_images(engine, data_dir)
    )
    store.register_model(
        engine,
        version=candidate.meta["version"],
        filename=path.name,
        digest=bundle_io.file_digest(path),
        kind=candidate.kind,
        metrics={"calibration": summary["calibration"], "comparison": comparison},
    )
    ctx.update(message=f"candidate {candidate.meta['version']} registered; promote it to use it", progress=0.98)
    return {
        "candidate_version": candidate.meta["version"],
        "normal_images": len(x),
        "comparison": comparison,
        "train_seconds": summary["train_seconds"],
        "curve": detector.history,
    }


def compare(active: Any, candidate: Any, normal: np.ndarray, defect_files: list[Path]) -> dict[str, Any]:
    """Both models on the same normal images (false-alarm rate at each one's T2) and, where
    confirmed defects exist, their AUROC."""
    from models.metrics import image_auroc

    def scores(model: Any, batch: list[np.ndarray]) -> np.ndarray:
        return np.array([r.score for r in model.predict_batch(batch)]) if batch else np.array([])

    # the normal images arrive preprocessed (float in [0, 1]): back to 8-bit, as a camera gives them
    normal_images_u8 = [np.clip(img[0] * 255, 0, 255).astype(np.uint8) for img in normal]
    defects = [img for img in (cv2.imread(str(f), cv2.IMREAD_UNCHANGED) for f in defect_files) if img is not None]
    out: dict[str, Any] = {"normal_images": len(normal_images_u8), "confirmed_defects": len(defects)}
    for name, model in (("active", active), ("candidate", candidate)):
        s_normal, s_defect = scores(model, normal_images_u8), scores(model, defects)
        entry = {
            "version": model.version,
            "t2": model.thresholds[1],
            "false_alarm_rate": float(np.mean(s_normal >= model.thresholds[1])) if len(s_normal) else None,
        }
        if len(s_defect) and len(s_normal):
            entry["auroc"] = image_auroc(
                np.r_[s_normal, s_defect], np.r_[np.zeros(len(s_normal)), np.ones(len(s_defect))]
            )
        out[name] = entry
    return out


# -- project runs ----------------------------------------------------------------------------------
def project_run(ctx: JobContext, engine: Any, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    from appliance.workflows import train

    project = _project_file(data_dir, params)

    from appliance.project import load_project
    from appliance.workflows import evaluate
    from engine.training import Callback

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


# -- structure search ------------------------------------------------------------------------------
def search_run(ctx: JobContext, engine: Any, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    """``appliance search`` on a project file, in its own process group (its trials need a process
    pool, which a job worker may not start itself). Progress is trials finished over the budget; a
    cancel interrupts it, and the finished trials stay in the search folder."""
    import os
    import signal
    import subprocess
    import sys
    import time

    project = _project_file(data_dir, params)
    run = data_dir / "runs" / f"search-job-{ctx.job_id}"
    trials = int(params.get("trials", 20))
    command = [sys.executable, "-m", "appliance.cli", "search", str(project), "-o", str(run), "--quiet"]
    command += ["--trials", str(trials)]
    for key in ("method", "objective", "epochs", "workers"):
        if params.get(key) is not None:
            command += [f"--{key}", str(params[key])]
    ctx.update(message=f"search over {project.name}: {trials} trials", progress=0.0)
    from appliance.workflows.search import die_with_parent

    process = subprocess.Popen(  # its own group, so a cancel reaches its trial workers; ends with this job
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=die_with_parent,
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


def _project_file(data_dir: Path, params: dict[str, Any]) -> Path:
    root = (data_dir / "projects").resolve()
    project = (root / str(params.get("project", ""))).resolve()
    if not project.is_relative_to(root) or not project.is_file():
        msg = f"no project file {params.get('project')!r} under {data_dir / 'projects'}"
        raise ValueError(msg)
    return project


# -- datasets ----------------------------------------------------------------------------------------
def dataset_dir(data_dir: Path, name: str) -> Path:
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        msg = f"dataset name {name!r} may hold letters, digits, '-', '_' and '.' only"
        raise ValueError(msg)
    return data_dir / "datasets" / name


def stop_all(timeout: float = 5.0) -> None:
    """Terminate the job workers this process started (the appliance is stopping)."""
    for process in _processes.values():
        if process.is_alive():
            process.terminate()
            process.join(timeout)
    _processes.clear()


def fail_interrupted(engine: Any) -> int:
    """Jobs left queued or running by a previous process will never finish: say so."""
    with Session(engine) as session:
        stale = session.exec(select(TrainingJob).where(col(TrainingJob.status).in_(("queued", "running")))).all()
        for job in stale:
            job.status, job.finished_at = "failed", utcnow()
            job.message = "interrupted: the appliance stopped while the job ran; start it again"
            job.log += f"{job.message}\n"
            session.add(job)
        session.commit()
        return len(stale)
