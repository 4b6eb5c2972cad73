"""One structure-search trial as a worker runs it (plain data in, a result out), and what is
made of finished trials: the trade-off plot and the export of a trial's model."""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from appliance.project import ProjectError, load_project
from engine.training import Callback, Trainer
from models import bundle as bundle_io


@dataclass
class TrialJob:
    """Everything a worker needs: plain data, so any executor can ship it."""

    id: int
    directory: str
    project_file: str
    error_key: str
    reference_curve: list[float] = field(default_factory=list)  # the best trial's error per epoch
    early_stop_factor: float | None = None
    deadline: float | None = None  # time.time() after which the trial gives up


class Guard(Callback):
    """Stops a hopeless trial (error many times the best trial's at the same epoch) or one whose
    time is up."""

    def __init__(self, job: TrialJob, epochs: int) -> None:
        self.job, self.status = job, "done"
        self.first_check = max(2, epochs // 3)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, float]) -> None:
        job = self.job
        if job.deadline is not None and time.time() > job.deadline:
            self.status, trainer.stop = "time_limit", True
            return
        epoch, error = int(record["epoch"]), record.get(job.error_key)
        if job.early_stop_factor and error is not None and epoch >= self.first_check and job.reference_curve:
            ref = job.reference_curve[min(epoch, len(job.reference_curve)) - 1]
            if error > job.early_stop_factor * max(ref, 1e-3):
                self.status, trainer.stop = "stopped_early", True


def run_trial(job: TrialJob) -> dict[str, Any]:
    """Train and evaluate one trial; returns (and writes as trial.json) its result."""
    from appliance.workflows.train import train

    directory = Path(job.directory)
    project = load_project(job.project_file)
    guard = Guard(job, project.config.max_epoch)
    start = time.perf_counter()
    result: dict[str, Any] = {"trial": job.id}
    try:
        run = train(job.project_file, directory, log=None, progress=False, callbacks=[guard])
    except Exception as exc:  # a trial that cannot train is a result too  # noqa: BLE001
        result.update(status="failed", message=f"{type(exc).__name__}: {exc}", error=None, curve=[], epochs=0)
    else:
        curve = [float(r[job.error_key]) for r in run.history if job.error_key in r]
        finite = [e for e in curve if math.isfinite(e)]
        result.update(
            status=guard.status if finite else "failed",
            error=min(finite) if finite else None,
            curve=curve,
            epochs=len(run.history),
        )
    result["seconds"] = round(time.perf_counter() - start, 3)
    if result["status"] != "time_limit":  # a trial cut by the time limit runs again on resume
        write_json(directory / "trial.json", result)
    return result


def die_with_parent() -> None:
    """Ask Linux to end this process when its parent ends (even by ``kill -9``): no orphan keeps
    training, or waits forever, after the process that started it is gone."""
    if sys.platform == "linux":
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def init_worker(workers: int) -> None:
    """A trial worker dies with the search; several trials side by side use one BLAS thread each,
    so they do not fight over the cores."""
    die_with_parent()
    if workers > 1:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)


# -- the search ---------------------------------------------------------------------------------


def plot_tradeoff(path: Path, rows: Sequence[dict[str, Any]], error_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    shown = [r for r in rows if r["error"] is not None]
    other = [r for r in shown if not r["pareto"] and r["trial"] != 0 and r["status"] == "done"]
    stopped = [r for r in shown if r["status"] != "done"]
    if stopped:
        ax.scatter(
            [r["multiply_adds"] for r in stopped],
            [r["error"] for r in stopped],
            c="0.7",
            marker="x",
            s=22,
            label="stopped early",
        )
    front = sorted((r for r in shown if r["pareto"]), key=lambda r: r["multiply_adds"])
    if other:
        ax.scatter([r["multiply_adds"] for r in other], [r["error"] for r in other], c="0.6", s=22, label="trial")
    if front:
        ax.step([r["multiply_adds"] for r in front], [r["error"] for r in front], where="post", c="C3", lw=1, alpha=0.6)
        ax.scatter([r["multiply_adds"] for r in front], [r["error"] for r in front], c="C3", s=36, label="Pareto front")
        for r in front:
            ax.annotate(str(r["trial"]), (r["multiply_adds"], r["error"]), textcoords="offset points", xytext=(4, 4))
    base = next((r for r in shown if r["trial"] == 0), None)
    if base is not None:
        ax.scatter([base["multiply_adds"]], [base["error"]], marker="*", s=160, c="C0", label="base network", zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel("multiply-adds (log)")
    ax.set_ylabel(f"validation error ({error_name})")
    ax.set_title(f"structure search: {len(rows)} trials")
    ax.grid(True, which="both", alpha=0.3)
    if shown:  # a search stopped before any trial finished has nothing to name
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def export_trial(run: str | Path, trial_id: int, out: str | Path) -> Path:
    """Copy a trial's model bundle (its best epoch) out of a search folder, checking it loads."""
    directory = Path(run) / "trials" / f"{trial_id:04d}"
    if not (directory / "trial.json").is_file():
        msg = f"{Path(run)} has no finished trial {trial_id}"
        raise ProjectError(msg)
    source = next((p for p in (directory / "results" / n for n in ("best.zip", "last.zip")) if p.is_file()), None)
    if source is None:
        msg = f"trial {trial_id} in {Path(run)} has no model bundle (it failed before the end of training)"
        raise ProjectError(msg)
    bundle_io.load(source)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, out)
    return out


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=plain_json))
    tmp.replace(path)


def plain_json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    msg = f"cannot store {type(value).__name__} in JSON"
    raise TypeError(msg)
