"""A training loop over arrays: epochs, mini-batches, shuffling, callbacks, resume."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.module import Module
from engine.schedulers import Scheduler
from engine.solvers import Solver
from engine.tensor import Tensor, no_grad


class NonFiniteError(FloatingPointError):
    """The loss or a gradient became NaN or infinite."""


class ArrayIterator:
    """Mini-batches over aligned arrays; reshuffled each epoch, reproducibly from ``seed``.

    The permutation of epoch ``e`` depends only on ``(seed, e)``, so a resumed run sees the same
    batches as an uninterrupted one.
    """

    def __init__(
        self,
        arrays: Sequence[np.ndarray],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        sizes = {len(a) for a in arrays}
        if len(sizes) != 1:
            msg = f"arrays have different lengths: {[len(a) for a in arrays]}"
            raise ValueError(msg)
        if batch_size <= 0:
            msg = f"Invalid batch_size: {batch_size}"
            raise ValueError(msg)
        self.arrays, self.batch_size, self.shuffle, self.seed, self.drop_last = (
            list(arrays),
            batch_size,
            shuffle,
            seed,
            drop_last,
        )
        self.size = sizes.pop()
        self.epoch = 0

    def __len__(self) -> int:
        full, rest = divmod(self.size, self.batch_size)
        return full if self.drop_last or not rest else full + 1

    def __iter__(self):
        order = (
            np.random.default_rng((self.seed, self.epoch)).permutation(self.size)
            if self.shuffle
            else np.arange(self.size)
        )
        self.epoch += 1
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield tuple(a[idx] for a in self.arrays)


class Callback:
    def on_train_begin(self, trainer: Trainer) -> None: ...

    def on_epoch_end(self, trainer: Trainer, record: dict[str, float]) -> None: ...

    def on_train_end(self, trainer: Trainer) -> None: ...


LossFn = Callable[..., Tensor]
MetricFn = Callable[[Module, Any], dict[str, float]]


class Trainer:
    """Forward → backward → update over mini-batches.

    Args:
        model: the network.
        loss_fn: ``loss_fn(model, *batch)`` → scalar Tensor (the cost).
        solver: updates the model's parameters.
        scheduler: optional learning rate per iteration.
        metrics_fn: optional ``metrics_fn(model, valid_iterator)`` → dict, run in eval mode.
        clip_grad_norm: clip the global gradient norm when set.
    """

    def __init__(
        self,
        model: Module,
        loss_fn: LossFn,
        solver: Solver,
        scheduler: Scheduler | None = None,
        callbacks: Sequence[Callback] = (),
        metrics_fn: MetricFn | None = None,
        clip_grad_norm: float | None = None,
    ) -> None:
        self.model, self.loss_fn, self.solver, self.scheduler = model, loss_fn, solver, scheduler
        self.callbacks, self.metrics_fn, self.clip_grad_norm = list(callbacks), metrics_fn, clip_grad_norm
        self.epoch = 0
        self.iteration = 0
        self.history: list[dict[str, float]] = []
        self.stop = False

    def fit(self, train: ArrayIterator, epochs: int, valid: ArrayIterator | None = None) -> list[dict[str, float]]:
        """Train until ``epochs`` epochs are done in total (a resumed run continues the count)."""
        for cb in self.callbacks:
            cb.on_train_begin(self)
        while self.epoch < epochs and not self.stop:
            train.epoch = self.epoch
            start = time.perf_counter()
            cost = self.train_epoch(train)
            record = {"epoch": self.epoch + 1, "cost": cost, "time": time.perf_counter() - start}
            if valid is not None:
                record.update(self.evaluate(valid))
            self.epoch += 1
            self.history.append(record)
            for cb in self.callbacks:
                cb.on_epoch_end(self, record)
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.history

    def train_epoch(self, train: ArrayIterator) -> float:
        self.model.train()
        total, count = 0.0, 0
        for batch in train:
            loss = self.step(batch)
            total += loss * len(batch[0])
            count += len(batch[0])
        return total / max(count, 1)

    def step(self, batch: Sequence[np.ndarray]) -> float:
        if self.scheduler is not None:
            self.solver.set_learning_rate(self.scheduler(self.iteration))
        loss = self.loss_fn(self.model, *batch)
        value = float(loss.data)
        if not math.isfinite(value):
            msg = f"loss is {value} at epoch {self.epoch + 1}, iteration {self.iteration + 1}"
            raise NonFiniteError(msg)
        self.solver.zero_grad()
        loss.backward()
        self._check_gradients()
        if self.clip_grad_norm:
            self.solver.clip_grad_by_norm(self.clip_grad_norm)
        self.solver.update()
        self.iteration += 1
        return value

    def _check_gradients(self) -> None:
        for name, p in zip(self.solver.names, self.solver.params, strict=True):
            if p.grad is not None and not math.isfinite(float(np.sum(p.grad))) and not np.isfinite(p.grad).all():
                where = f"epoch {self.epoch + 1}, iteration {self.iteration + 1}"
                msg = f"gradient of parameter {name!r} is not finite at {where}"
                raise NonFiniteError(msg)

    def evaluate(self, valid: ArrayIterator) -> dict[str, float]:
        """Mean validation loss (NNC's ``valid_error``) plus ``metrics_fn``'s metrics."""
        self.model.eval()
        total, count = 0.0, 0
        with no_grad():
            for batch in valid:
                total += float(self.loss_fn(self.model, *batch).data) * len(batch[0])
                count += len(batch[0])
            out = {"valid_loss": total / max(count, 1)}
            if self.metrics_fn is not None:
                out.update(self.metrics_fn(self.model, valid))
        self.model.train()
        return out

    # -- checkpoints ------------------------------------------------------------
    def save_checkpoint(self, path: str | Path) -> None:
        """Parameters, buffers, solver state and loop counters in one ``.npz``."""
        data = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        data.update({f"solver/{k}": v for k, v in self.solver.state_dict().items()})
        data["trainer/epoch"] = np.array(self.epoch)
        data["trainer/iteration"] = np.array(self.iteration)
        keys = sorted({k for r in self.history for k in r})
        data["trainer/history_keys"] = np.array(keys, dtype=str)
        data["trainer/history"] = np.array(
            [[r.get(k, np.nan) for k in keys] for r in self.history], dtype=np.float64
        ).reshape(len(self.history), len(keys))
        tmp = Path(f"{path}.tmp.npz")
        np.savez(tmp, **data)
        tmp.replace(path)

    def load_checkpoint(self, path: str | Path) -> None:
        with np.load(path, allow_pickle=False) as data:
            model = {k[6:]: data[k] for k in data.files if k.startswith("model/")}
            solver = {k[7:]: data[k] for k in data.files if k.startswith("solver/")}
            self.model.load_state_dict(model)
            self.solver.load_state_dict(solver)
            self.epoch = int(data["trainer/epoch"])
            self.iteration = int(data["trainer/iteration"])
            keys = [str(k) for k in data["trainer/history_keys"]]
            self.history = [
                {k: (int(v) if k == "epoch" else float(v)) for k, v in zip(keys, row, strict=True) if not np.isnan(v)}
                for row in data["trainer/history"]
            ]


class Checkpoint(Callback):
    """Save a checkpoint every ``interval`` epochs (``last.npz``; ``best.npz`` by ``monitor``)."""

    def __init__(
        self, directory: str | Path, interval: int = 1, monitor: str | None = "valid_loss", mode: str = "min"
    ) -> None:
        self.directory, self.interval, self.monitor, self.mode = Path(directory), interval, monitor, mode
        self.best = math.inf if mode == "min" else -math.inf

    def on_train_begin(self, trainer: Trainer) -> None:
        """A resumed run starts from the best value its restored history already holds."""
        for record in trainer.history:
            value = record.get(self.monitor) if self.monitor else None
            if value is not None and self._better(value):
                self.best = value

    def _better(self, value: float) -> bool:
        return value < self.best if self.mode == "min" else value > self.best

    def on_epoch_end(self, trainer: Trainer, record: dict[str, float]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if trainer.epoch % self.interval == 0:
            trainer.save_checkpoint(self.directory / "last.npz")
        value = record.get(self.monitor) if self.monitor else None
        if value is not None and self._better(value):
            self.best = value
            trainer.save_checkpoint(self.directory / "best.npz")


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(
        self, monitor: str = "valid_loss", patience: int = 5, min_delta: float = 0.0, mode: str = "min"
    ) -> None:
        if mode not in ("min", "max"):
            msg = f"Invalid mode: {mode!r}"
            raise ValueError(msg)
        self.monitor, self.patience, self.min_delta, self.mode = monitor, patience, min_delta, mode
        self.best, self.waited = None, 0

    def on_epoch_end(self, trainer: Trainer, record: dict[str, float]) -> None:
        if self.monitor not in record:
            msg = f"EarlyStopping monitors {self.monitor!r}, which the epoch record lacks: {sorted(record)}"
            raise KeyError(msg)
        value = record[self.monitor]
        sign = 1 if self.mode == "min" else -1
        if self.best is None or sign * (self.best - value) > self.min_delta:
            self.best, self.waited = value, 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            trainer.stop = True


class Monitor(Callback):
    """Call ``write(line)`` once per epoch with the record (cost, valid_loss, metrics)."""

    def __init__(self, write: Callable[[str], None], interval: int = 1) -> None:
        self.write, self.interval = write, interval

    def on_epoch_end(self, trainer: Trainer, record: dict[str, float]) -> None:
        if trainer.epoch % self.interval == 0:
            self.write(" ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
