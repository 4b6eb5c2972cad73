"""``appliance search``: NNC's automatic structure search, run as trials in a process pool.

Starting from the project's network (trial 0, trained as it is), the search proposes mutated
networks (:mod:`models.search`), trains and evaluates each one like ``appliance train`` would, and
marks the Pareto front of validation error against multiply-adds. A search folder holds::

    search.json                 the settings and the base network's key (a resume must match them)
    trials/0007/network.yaml    the trial's network; project.yaml trains it again with `appliance train`
    trials/0007/trial.json      its result, written last: a trial without it is re-run on resume
    trials/0007/...             the training run (learning curve, checkpoints, results/best.zip)
    trials.csv                  every trial: spec, error, costs, Pareto flag
    tradeoff.png                log multiply-adds against error, the Pareto front highlighted
    search.log

The error is the validation error rate for classification and the validation loss otherwise,
the best over the trial's epochs (the epoch ``results/best.zip`` holds).

Trials go to a ``concurrent.futures.Executor``: by default a local process pool with one worker per
core, each limited to one BLAS thread. Anything with the same ``submit`` interface can take them
instead, e.g. a Dask cluster (``distributed.Client(address).get_executor()``) or Ray's
``ray.util.multiprocessing``; the trial function and its arguments are plain picklable data and
the search folder must be on storage every worker sees (see deploy/SCALE-OUT.md).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from appliance.project import Project, ProjectError, SearchConfig, load_project
from appliance.workflows.trials import (
    TrialJob,
    export_trial,
    init_worker,
    plot_tradeoff,
    run_trial,
    write_json,
)
from models.search import Candidate, Limits, Proposer, SearchError, Trial, check_base, pareto_flags
from models.spec import SpecError

TABLE_KEYS = (
    "trial",
    "status",
    "error",
    "multiply_adds",
    "parameters",
    "pareto",
    "parent",
    "mutations",
    "epochs",
    "seconds",
    "key",
    "spec",
)


@dataclass
class SearchResult:
    directory: Path
    trials: list[dict[str, Any]]
    base: dict[str, Any]
    best: dict[str, Any] | None
    pareto: list[dict[str, Any]]
    stopped_by: str


def refused_fast(scheduler: str) -> None:
    """Name a ``tcp://`` address nothing listens on at once: Dask's client retries a refused
    connection until its timeout (10 s here), and a mistyped port is the usual cause."""
    host, _, port = scheduler.removeprefix("tcp://").rpartition(":")
    if not scheduler.startswith("tcp://") or not port.isdigit():
        return  # another protocol, or an address Dask will judge itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=3).close()
    except ConnectionRefusedError as exc:
        msg = f"no Dask scheduler answers at {scheduler}: nothing listens there ({exc.strerror})"
        raise ProjectError(msg) from exc
    except OSError:
        return  # unreachable or slow: Dask's own timeout decides


def dask_executor(address: str) -> tuple[Executor, int, Callable[[], None]]:
    """An executor on the Dask cluster whose scheduler is at ``address`` (``dask://host:port`` or
    ``tcp://host:port``), the threads its workers have, and how to let it go."""
    try:
        from distributed import Client
    except ImportError as exc:
        msg = "running trials on Dask needs the dask extra: pip install 'anomaly-appliance[dask]'"
        raise ProjectError(msg) from exc
    scheduler = "tcp://" + address.removeprefix("dask://") if address.startswith("dask://") else address
    refused_fast(scheduler)
    try:
        client = Client(scheduler, timeout=10)
    except OSError as exc:
        msg = f"no Dask scheduler answers at {scheduler}: {exc}"
        raise ProjectError(msg) from exc
    return client.get_executor(), max(1, sum(client.nthreads().values())), client.close


def search(
    project_file: str | Path,
    out: str | Path | None = None,
    resume: bool = False,
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = print,
    executor: Executor | str | None = None,
) -> SearchResult:
    """Run (or with ``resume``, continue) a structure search over the project's network, trials
    on a local process pool, on ``executor``, or on the Dask cluster it names (``dask://host:port``;
    trials in parallel: the cluster's threads unless ``workers`` is set)."""
    project_file = Path(project_file).resolve()
    project = load_project(project_file)
    settings = project.search.model_copy(update={k: v for k, v in (overrides or {}).items() if v is not None})
    settings = SearchConfig.model_validate(settings.model_dump())
    if project.dataset.validation is None:
        msg = f"{project_file}: a structure search needs a validation dataset to compare networks"
        raise ProjectError(msg)
    run = Path(out) if out else Path("runs") / f"search-{project_file.stem}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    if not isinstance(executor, str):
        return Search(project, project_file, run, settings, resume, log, executor).run()
    pool, threads, close = dask_executor(executor)
    try:
        settings = settings.model_copy(update={"workers": settings.workers or threads})
        return Search(project, project_file, run, settings, resume, log, pool).run()
    finally:
        close()


class Search:
    def __init__(
        self,
        project: Project,
        project_file: Path,
        run: Path,
        settings: SearchConfig,
        resume: bool,
        log: Callable[[str], None] | None,
        executor: Executor | None,
    ) -> None:
        self.project, self.project_file, self.run_dir, self.settings = project, project_file, run, settings
        self.log_fn, self.executor = log, executor
        self.epochs = settings.epochs or project.config.max_epoch
        self.limits = Limits(
            settings.error_min, settings.error_max, settings.multiply_adds_min, settings.multiply_adds_max
        )
        self.base = self._base_candidate()  # also settles self.task
        self.error_key = "valid_error_rate" if self.task == "classification" else "valid_error"
        self.proposer = Proposer(self.base, settings.method, settings.objective, self.limits)
        self.records: dict[int, dict[str, Any]] = {}
        self.candidates: dict[int, Candidate] = {}
        self._prepare(resume)

    # -- setup and state on disk
    def _base_candidate(self) -> Candidate:
        from appliance.workflows.train import build_network, load_data, resolve_task

        train_data = load_data(self.project, "training")
        self.task = resolve_task(self.project, train_data)  # trial projects state it: their network is a spec
        try:
            net = build_network(self.project, train_data, self.task)
        except SpecError as exc:
            raise ProjectError(str(exc)) from exc
        return check_base(net.spec)

    def _say(self, line: str) -> None:
        with (self.run_dir / "search.log").open("a", encoding="utf-8") as f:
            f.write(f"{dt.datetime.now().isoformat(timespec='seconds')} {line}\n")
        if self.log_fn:
            self.log_fn(line)

    def _prepare(self, resume: bool) -> None:
        state_file = self.run_dir / "search.json"
        state = {
            "project": str(self.project_file),
            "base_key": self.base.key,
            "method": self.settings.method,
            "objective": self.settings.objective,
            "seed": self.settings.seed,
            "epochs": self.epochs,
            "error": self.error_key,
        }
        if state_file.is_file():
            if not resume:
                msg = f"{self.run_dir} already holds a search; pass --resume to continue it or choose another folder"
                raise ProjectError(msg)
            saved = json.loads(state_file.read_text())
            for key in ("base_key", "method", "objective", "seed", "epochs"):
                if saved.get(key) != state[key]:
                    msg = (
                        f"cannot resume {self.run_dir}: its {key} is {saved.get(key)!r}, "
                        f"this project and settings give {state[key]!r}"
                    )
                    raise ProjectError(msg)
        elif resume:
            msg = f"nothing to resume: {state_file} does not exist"
            raise ProjectError(msg)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(state_file, {**state, "settings": self.settings.model_dump()})
        for directory in sorted((self.run_dir / "trials").glob("[0-9]*")):
            meta = directory / "candidate.json"
            if not meta.is_file():
                continue
            info = json.loads(meta.read_text())
            built = check_base(info["spec"])
            self.candidates[info["trial"]] = Candidate(
                info["spec"], built.net, built.costs, info["parent"], info["mutations"]
            )
            done = directory / "trial.json"
            if done.is_file():
                self.records[info["trial"]] = json.loads(done.read_text())

    def _trial_dir(self, trial_id: int) -> Path:
        return self.run_dir / "trials" / f"{trial_id:04d}"

    def _trials(self) -> list[Trial]:
        out = []
        for tid, rec in sorted(self.records.items()):
            cand = self.candidates[tid]
            out.append(
                Trial(
                    tid,
                    cand.key,
                    cand.spec,
                    rec.get("error"),
                    cand.costs.multiply_adds,
                    rec["status"],
                    cand.parent,
                    cand.mutations,
                )
            )
        return out

    def _write_candidate(self, trial_id: int, cand: Candidate) -> None:
        directory = self._trial_dir(trial_id)
        if directory.exists():  # an interrupted trial: start its training afresh
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        (directory / "network.yaml").write_text(yaml.safe_dump(cand.spec, sort_keys=False))
        data = self.project.model_dump(mode="json")
        data["network"] = {"spec": "network.yaml"}
        data["task"] = self.task
        data["config"]["max_epoch"] = self.epochs
        data["config"]["monitor_interval"] = 1
        data.pop("search", None)
        for key in ("training", "validation"):
            if data["dataset"].get(key):
                data["dataset"][key] = str(self.project.path(data["dataset"][key]).resolve())
        (directory / "project.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        write_json(
            directory / "candidate.json",
            {"trial": trial_id, "parent": cand.parent, "mutations": cand.mutations, "spec": cand.spec, "key": cand.key},
        )
        self.candidates[trial_id] = cand

    # -- the loop
    def run(self) -> SearchResult:
        s = self.settings
        workers = s.workers or os.cpu_count() or 1
        deadline = time.time() + s.time_limit_minutes * 60 if s.time_limit_minutes else None
        executor = self.executor or ProcessPoolExecutor(
            workers, mp_context=get_context("spawn"), initializer=init_worker, initargs=(workers,)
        )
        rerun = sorted(t for t in self.candidates if t not in self.records)
        if self.records or rerun:
            self._say(f"resuming: {len(self.records)} finished trials kept, {len(rerun)} to run again")
        else:
            b = self.base.costs
            self._say(
                f"search {s.method} / {s.objective}: up to {s.max_trials} trials of {self.epochs} epochs, "
                f"{workers} worker(s); base {b.multiply_adds:,} multiply-adds, {b.parameters:,} parameters"
            )
        pending: dict[Future, int] = {}
        stopped_by, exhausted = "trial budget", False
        try:
            while True:
                while len(pending) < workers and not exhausted:
                    if deadline is not None and time.time() >= deadline:
                        stopped_by = "time limit"
                        break
                    if rerun:
                        trial_id = rerun.pop(0)
                    elif len(self.candidates) >= s.max_trials:
                        break
                    else:
                        trial_id = max(self.candidates, default=-1) + 1
                        cand = self._propose(trial_id)
                        if cand is None:
                            exhausted, stopped_by = True, "no new candidate could be found"
                            break
                        self._write_candidate(trial_id, cand)
                    pending[executor.submit(run_trial, self._job(trial_id, deadline))] = trial_id
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    self._finish(pending.pop(future), future)
                self._report()
                if self._target_met():
                    stopped_by = "error_min reached"
                    break
        finally:
            if self.executor is None:
                executor.shutdown(wait=True, cancel_futures=True)
        if deadline is not None and time.time() >= deadline and stopped_by == "trial budget":
            stopped_by = "time limit"
        return self._result(stopped_by)

    def _propose(self, trial_id: int) -> Candidate | None:
        if trial_id == 0:
            return self.base
        rng = np.random.default_rng([self.settings.seed, trial_id])
        taken = {c.key for c in self.candidates.values()}
        return self.proposer.propose(self._trials(), rng, taken)

    def _job(self, trial_id: int, deadline: float | None) -> TrialJob:
        # hopeless = far worse than the best trial it would have to beat (see reference_error)
        madds = self.candidates[trial_id].costs.multiply_adds
        rivals = [
            t for t in self._trials() if t.usable and (self.settings.objective == "error" or t.multiply_adds <= madds)
        ]
        curve: list[float] = []
        if rivals:
            best = min(rivals, key=lambda t: t.error)
            curve = list(self.records[best.id].get("curve", []))
        directory = self._trial_dir(trial_id)
        return TrialJob(
            trial_id,
            str(directory),
            str(directory / "project.yaml"),
            self.error_key,
            curve,
            self.settings.early_stop_factor,
            deadline,
        )

    def _finish(self, trial_id: int, future: Future) -> None:
        try:
            result = future.result()
        except Exception as exc:  # the worker itself died  # noqa: BLE001
            result = {"trial": trial_id, "status": "failed", "error": None, "message": str(exc), "epochs": 0}
            write_json(self._trial_dir(trial_id) / "trial.json", result)
        if result["status"] == "time_limit":
            self._say(f"trial {trial_id}: cut by the time limit; it runs again on resume")
            return
        self.records[trial_id] = result
        cand = self.candidates[trial_id]
        error = result.get("error")
        shown = f"{error:.4f}" if error is not None else "-"
        what = "+".join(cand.mutations) or "base network"
        extra = f" ({result.get('message')})" if result["status"] == "failed" else ""
        self._say(
            f"trial {trial_id} [{what}]: {result['status']}{extra}, error {shown}, "
            f"{cand.costs.multiply_adds:,} multiply-adds, {result.get('seconds', 0):.1f} s"
        )

    def _target_met(self) -> bool:
        floor = self.settings.error_min
        return floor is not None and any(t.usable and t.error <= floor for t in self._trials())

    # -- results
    def table(self) -> list[dict[str, Any]]:
        trials = self._trials()
        usable = [t.usable and self.limits.error_ok(t.error) for t in trials]
        flags = pareto_flags([t.error for t in trials], [t.multiply_adds for t in trials], usable)
        rows = []
        for t, flag in zip(trials, flags, strict=True):
            rec = self.records[t.id]
            rows.append(
                {
                    "trial": t.id,
                    "status": t.status,
                    "error": t.error,
                    "multiply_adds": t.multiply_adds,
                    "parameters": self.candidates[t.id].costs.parameters,
                    "pareto": flag,
                    "parent": t.parent,
                    "mutations": "+".join(t.mutations),
                    "epochs": rec.get("epochs", 0),
                    "seconds": rec.get("seconds", 0.0),
                    "key": t.key,
                    "spec": json.dumps(t.spec["layers"], separators=(",", ":")),
                }
            )
        return rows

    def _report(self) -> None:
        rows = self.table()
        tmp = self.run_dir / "trials.csv.tmp"
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=TABLE_KEYS)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.run_dir / "trials.csv")
        plot_tradeoff(self.run_dir / "tradeoff.png", rows, self.error_key)

    def _result(self, stopped_by: str) -> SearchResult:
        rows = self.table()
        if rows:
            self._report()
        base = next((r for r in rows if r["trial"] == 0), {})
        front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["multiply_adds"])
        done = [r for r in rows if r["status"] == "done" and r["error"] is not None]
        best = min(done, key=lambda r: (r["error"], r["multiply_adds"])) if done else None
        self._say(f"stopped by {stopped_by}: {len(rows)} trials, {len(front)} on the Pareto front")
        return SearchResult(self.run_dir, rows, base, best, front, stopped_by)


__all__ = ["SearchError", "SearchResult", "export_trial", "search"]
