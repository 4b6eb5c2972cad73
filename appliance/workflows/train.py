"""``appliance train``: NNC's training tab as a function.

A run folder holds ``learning_curve.csv`` (written every epoch, so an interrupted run keeps it)
and ``learning_curve.png``, ``monitoring_report.yml``, ``checkpoints/`` (parameters + solver state,
``last.npz`` and ``best.npz``), ``results/last.zip`` and ``results/best.zip`` (model bundles),
``config.yaml`` (the project as used) and ``train.log``.

Reported per epoch, NNC's way and as real metrics, with names nobody confuses:
``cost`` (mean training loss over the epoch), ``train_error`` and ``valid_error`` (mean loss of the
training / validation data, NNC's "error"), and ``valid_accuracy`` / ``valid_error_rate``
(classification), ``valid_rmse`` (regression), ``valid_auroc`` (autoencoder with anomaly labels).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from appliance.datasets import NNCDataset
from appliance.datasets.nnc import nnc_image_spec
from appliance.project import Project, ProjectError, load_project
from appliance.workflows.curves import CURVE_KEYS, plot_curve, write_curve
from engine import Tensor, losses, no_grad, seed
from engine.schedulers import CosineScheduler, ExponentialScheduler, PolynomialScheduler, StepScheduler
from engine.solvers import create_solver
from engine.training import ArrayIterator, Callback, Checkpoint, Trainer
from models import bundle as bundle_io
from models.preprocess import InputSpec
from models.spec import Network, build, load_spec
from models.zoo import ZOO, get_spec


@dataclass
class Data:
    x: np.ndarray
    y: np.ndarray | None


@dataclass
class Task:
    """What the network is trained to do, and how its loss and metrics are computed."""

    kind: str  # classification | regression | autoencoder
    outputs: int = 1
    score: str = "mean"  # an autoencoder's anomaly score: mean or max squared error per sample

    def loss(self, out: Tensor, x: np.ndarray, y: np.ndarray | None) -> Tensor:
        if self.kind == "autoencoder":
            return losses.squared_error(out, x).mean()
        if self.kind == "regression":
            return losses.squared_error(out, y.reshape(out.shape)).mean()
        if self.outputs == 1:  # sigmoid head: probability of class 1
            return losses.binary_cross_entropy(out, y.reshape(-1, 1)).mean()
        return losses.softmax_cross_entropy(out, y.reshape(-1, 1).astype(np.int64)).mean()

    def metrics(self, out: np.ndarray, x: np.ndarray, y: np.ndarray | None) -> dict[str, float]:
        if y is None and self.kind != "autoencoder":
            return {}
        if self.kind == "classification":
            predicted = (out[:, 0] >= 0.5).astype(int) if self.outputs == 1 else out.argmax(axis=1)
            accuracy = float(np.mean(predicted == y.reshape(-1).astype(int)))
            return {"valid_accuracy": accuracy, "valid_error_rate": 1 - accuracy}
        if self.kind == "regression":
            return {"valid_rmse": float(np.sqrt(np.mean((out.reshape(len(y), -1) - y.reshape(len(y), -1)) ** 2)))}
        if y is not None and len(np.unique(y)) == 2:
            from sklearn.metrics import roc_auc_score

            return {"valid_auroc": float(roc_auc_score(y.reshape(-1) > 0, anomaly_scores(out, x, self.score)))}
        return {}


def anomaly_scores(recon: np.ndarray, x: np.ndarray, reduce: str = "mean") -> np.ndarray:
    """NNC's autoencoder anomaly score: the mean squared reconstruction error per sample, or the
    largest (``max``: NNC's sine-wave tutorial, where a short burst must not be averaged away)."""
    errors = ((recon - x) ** 2).reshape(len(x), -1)
    return errors.max(axis=1) if reduce == "max" else errors.mean(axis=1)


def predict(module: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    module.eval()
    with no_grad():
        out = np.concatenate([module(Tensor(x[i : i + batch_size])).data for i in range(0, len(x), batch_size)])
    return out


@dataclass
class RunResult:
    directory: Path
    history: list[dict[str, float]]
    last_bundle: Path
    best_bundle: Path | None
    task: str
    final: dict[str, float] = field(default_factory=dict)


def load_data(project: Project, which: str) -> Data | None:
    rel = getattr(project.dataset, which)
    if rel is None:
        return None
    ds = NNCDataset(project.path(rel), normalize=project.dataset.normalize)
    x = ds.load(project.dataset.input)
    target = project.dataset.target
    y = ds.load(target) if target and target in ds.variables else None
    return Data(x, y)


def overcomplete_warning(net: Network) -> str | None:
    """An autoencoder whose narrowest layer holds as many numbers as its input can learn to copy
    anything, anomalies included (the conv autoencoder's default on 28×28 digits: a 7×7×32 = 1568
    bottleneck for 784 pixels, AUROC 0.64 where a 16-number code reaches 0.90)."""
    from models.stats import network_stats

    size = int(np.prod(net.input_shape))
    rows = network_stats(net)
    while len(rows) > 1 and tuple(rows[-1].output_shape) == tuple(net.output_shape):
        rows = rows[:-1]  # the reconstruction itself is not a bottleneck
    narrowest = min(rows, key=lambda r: int(np.prod(r.output_shape)))
    width = int(np.prod(narrowest.output_shape))
    if width < size:
        return None
    return (
        f"warning: the autoencoder's narrowest layer ({narrowest.path}, {width:,} values) is not smaller than its "
        f"input ({size:,}): it can learn to copy anomalies too. Give it a code (e.g. options: {{code: 16}}) or "
        "fewer maps"
    )


def resolve_task(project: Project, train: Data) -> str:
    if project.task:
        return project.task
    if project.network.zoo in ZOO:
        zoo_task = ZOO[project.network.zoo].task
        return {"segmentation": "regression"}.get(zoo_task, zoo_task)
    return "classification" if train.y is not None else "autoencoder"


def build_network(project: Project, train: Data, task: str) -> Network:
    shape = list(train.x.shape[1:])
    if project.network.zoo is not None:
        options = dict(project.network.options)
        if task == "classification" and "classes" in ZOO[project.network.zoo].build.__code__.co_varnames:
            if train.y is None:
                msg = f"classification needs the target variable {project.dataset.target!r} in the training data"
                raise ProjectError(msg)
            options.setdefault("classes", int(train.y.max()) + 1)
        net = build(get_spec(project.network.zoo, shape, **options))
    else:
        spec = project.network.spec
        spec = load_spec(project.path(spec) if isinstance(spec, str) else spec)
        net = build(spec)
        if list(net.input_shape) != shape:
            msg = f"network input {list(net.input_shape)} does not match the dataset's {shape}"
            raise ProjectError(msg)
    return net


def make_scheduler(project: Project, iters_per_epoch: int, base_lr: float):
    s = project.config.scheduler
    if s is None:
        return None
    total = project.config.max_epoch * iters_per_epoch
    warmup = s.warmup_epochs * iters_per_epoch
    if s.type == "step":
        step = s.step_epochs * iters_per_epoch if s.step_epochs else None
        return StepScheduler(base_lr, s.gamma, step, [m * iters_per_epoch for m in s.milestones], warmup)
    if s.type == "exponential":
        return ExponentialScheduler(base_lr, s.gamma, iters_per_epoch, warmup)
    if s.type == "cosine":
        return CosineScheduler(base_lr, total, s.min_lr, warmup)
    return PolynomialScheduler(base_lr, total, s.power, warmup)


class Monitor(Callback):
    """Every ``interval`` epochs: NNC's errors and real metrics into the record; every epoch:
    the learning curve CSV, the log, the progress bar."""

    def __init__(
        self,
        run: Path,
        task: Task,
        train: Data,
        valid: Data | None,
        interval: int,
        log: Callable[[str], None],
        progress: Any,
    ) -> None:
        self.run, self.task, self.train, self.valid, self.interval = run, task, train, valid, interval
        self.log, self.progress = log, progress

    def on_epoch_end(self, trainer: Trainer, record: dict[str, float]) -> None:
        if record["epoch"] % self.interval == 0 or record["epoch"] == 1:
            record["train_error"] = self._error(trainer.model, self.train)
            if self.valid is not None:
                out = predict(trainer.model, self.valid.x)
                record["valid_error"] = float(self.task.loss(Tensor(out), self.valid.x, self.valid.y).data)
                record.update(self.task.metrics(out, self.valid.x, self.valid.y))
            trainer.model.train()
        write_curve(self.run / "learning_curve.csv", trainer.history)
        line = " ".join(f"{k}={record[k]:.5g}" for k in CURVE_KEYS[1:-1] if k in record)
        self.log(f"epoch {record['epoch']}: {line}")
        if self.progress is not None:
            self.progress.set_postfix_str(line)
            self.progress.update(1)

    def _error(self, model: Any, data: Data) -> float:
        out = predict(model, data.x)
        return float(self.task.loss(Tensor(out), data.x, data.y).data)


def input_spec_for(project: Project, x: np.ndarray) -> InputSpec:
    shape = x.shape[1:]
    if len(shape) == 3 and shape[0] in (1, 3):
        return nnc_image_spec(shape[0], shape[1:], project.dataset.normalize)
    return InputSpec(kind="vector", shape=shape, size=None)


def train(
    project_file: str | Path,
    out: str | Path | None = None,
    resume: bool = False,
    log: Callable[[str], None] = print,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Train a project; ``resume`` continues the run in ``out`` from its last checkpoint.

    ``callbacks`` run after the monitor each epoch, so they see the epoch's validation metrics."""
    project_file = Path(project_file)
    project = load_project(project_file)
    run = Path(out) if out else Path("runs") / f"{project_file.stem}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    checkpoint = run / "checkpoints" / "last.npz"
    if resume and not checkpoint.is_file():
        msg = f"nothing to resume: {checkpoint} does not exist"
        raise ProjectError(msg)
    run.mkdir(parents=True, exist_ok=True)
    log_file = (run / "train.log").open("a", encoding="utf-8")

    def say(line: str) -> None:
        log_file.write(f"{dt.datetime.now().isoformat(timespec='seconds')} {line}\n")
        log_file.flush()
        if log:
            log(line)

    try:
        return _train(project, project_file, run, checkpoint, resume, say, progress, callbacks)
    finally:
        log_file.close()


def _train(
    project: Project,
    project_file: Path,
    run: Path,
    checkpoint: Path,
    resume: bool,
    say: Callable[[str], None],
    progress: bool,
    extra: Sequence[Callback] = (),
) -> RunResult:
    cfg = project.config
    train_data = load_data(project, "training")
    valid_data = load_data(project, "validation")
    task = Task(resolve_task(project, train_data), score=project.score.reduce if project.score else "mean")
    if task.kind in ("classification", "regression") and train_data.y is None:
        msg = f"task {task.kind} needs the target variable {project.dataset.target!r} in the training data"
        raise ProjectError(msg)
    seed(cfg.seed)
    net = build_network(project, train_data, task.kind)
    task.outputs = int(np.prod(net.output_shape))
    (run / "config.yaml").write_text(yaml.safe_dump(project.model_dump(mode="json"), sort_keys=False))
    solver = create_solver(cfg.solver.type, net.module, weight_decay=cfg.weight_decay, **cfg.solver.hyper())
    batches = ArrayIterator(
        [train_data.x] + ([train_data.y] if train_data.y is not None else []), cfg.batch_size, seed=cfg.seed
    )
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.max_epoch, desc="training", unit="epoch")
    monitor = Monitor(run, task, train_data, valid_data, cfg.monitor_interval, say, bar)
    best_key = _best_key(task, valid_data)
    callbacks = [
        monitor,
        Checkpoint(
            run / "checkpoints",
            monitor=best_key if cfg.save_best else None,
            mode="max" if best_key in ("valid_accuracy", "valid_auroc") else "min",
        ),
        *extra,
    ]

    def loss_fn(model: Any, x: np.ndarray, y: np.ndarray | None = None) -> Tensor:
        return task.loss(model(x), x, y)

    trainer = Trainer(
        net.module,
        loss_fn,
        solver,
        make_scheduler(project, len(batches), solver.lr),
        callbacks,
        clip_grad_norm=cfg.clip_grad_norm,
    )
    if resume:
        trainer.load_checkpoint(checkpoint)
        if bar is not None:
            bar.update(trainer.epoch)
        say(f"resumed from {checkpoint} after epoch {trainer.epoch}")
    else:
        say(
            f"training {net.name} ({task.kind}, {sum(p.size for p in net.module.parameters()):,} parameters) "
            f"on {len(train_data.x)} samples for {cfg.max_epoch} epochs"
        )
        if task.kind == "autoencoder" and (warning := overcomplete_warning(net)):
            say(warning)
    trainer.fit(batches, cfg.max_epoch)
    if bar is not None:
        bar.close()
    return _finish(project, project_file, run, net, task, trainer, train_data, valid_data)


def _best_key(task: Task, valid: Data | None) -> str:
    if valid is None:
        return "train_error"
    if task.kind == "classification" and valid.y is not None:
        return "valid_accuracy"
    if task.kind == "autoencoder" and valid.y is not None and len(np.unique(valid.y)) == 2:
        return "valid_auroc"
    return "valid_error"


def _finish(
    project: Project,
    project_file: Path,
    run: Path,
    net: Network,
    task: Task,
    trainer: Trainer,
    train_data: Data,
    valid_data: Data | None,
) -> RunResult:
    history = trainer.history
    write_curve(run / "learning_curve.csv", history)
    plot_curve(run / "learning_curve.png", history)
    report = {int(r["epoch"]): {k: float(v) for k, v in r.items() if k != "epoch"} for r in history}
    (run / "monitoring_report.yml").write_text(yaml.safe_dump(report, sort_keys=False))
    spec = input_spec_for(project, train_data.x)
    labels = [str(i) for i in range(max(task.outputs, 2))] if task.kind == "classification" else []
    kind = {"classification": "classifier", "regression": "regressor", "autoencoder": "autoencoder"}[task.kind]
    digest = hashlib.sha256()
    for path in (project.dataset.training, project.dataset.validation):
        if path:
            digest.update(project.path(path).read_bytes())
    provenance = {
        "project": str(project_file),
        "task": task.kind,
        "dataset_digest": digest.hexdigest(),
        "config": project.model_dump(mode="json"),
        "metrics": history[-1],
        "input_variable": project.dataset.input,
        "target_variable": project.dataset.target,
    }
    post = {"score": task.score} if task.kind == "autoencoder" else {}
    if task.kind == "autoencoder" and project.score:  # a named side output, as NNC's sine tutorial has
        post["score_name"] = project.score.name
    results = run / "results"
    last = results / "last.zip"
    bundle_io.bundle_from_network(net, kind, spec.to_dict(), labels, post, provenance).save(last)
    best = None
    if (run / "checkpoints" / "best.npz").is_file():
        with np.load(run / "checkpoints" / "best.npz", allow_pickle=False) as data:
            state = {k[6:]: data[k] for k in data.files if k.startswith("model/")}
        net.module.load_state_dict(state)
        best = results / "best.zip"
        bundle_io.bundle_from_network(net, kind, spec.to_dict(), labels, post, provenance).save(best)
    return RunResult(run, history, last, best, task.kind, history[-1])
