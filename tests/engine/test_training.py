"""The training loop: batching, NaN/Inf failure messages, checkpoints and exact resume."""

from __future__ import annotations

import numpy as np
import pytest

from engine import Sequential, Tensor, losses, seed
from engine import functions as F
from engine import layers as L
from engine.schedulers import StepScheduler
from engine.solvers import SGD, Adam
from engine.training import ArrayIterator, Checkpoint, EarlyStopping, Monitor, NonFiniteError, Trainer

RNG = np.random.default_rng(5)
X = RNG.standard_normal((50, 4)).astype(np.float32)
Y = (X @ np.array([1.0, -2.0, 0.5, 0.0], np.float32) > 0).astype(np.float32)[:, None]


def mse(model, x, t):
    return losses.squared_error(model(x), t).mean()


def make():
    seed(11)
    model = Sequential(L.Affine(4, 8), L.BatchNormalization(8), L.Tanh(), L.Affine(8, 1), L.Sigmoid())
    return model, Adam(model, lr=0.01)


def test_array_iterator_covers_everything_and_reshuffles():
    it = ArrayIterator([np.arange(10), np.arange(10) * 2], batch_size=4, seed=3)
    assert len(it) == 3
    first = list(it)
    assert [len(b[0]) for b in first] == [4, 4, 2]
    assert sorted(np.concatenate([b[0] for b in first])) == list(range(10))
    assert all(np.array_equal(b[1], b[0] * 2) for b in first)
    second = np.concatenate([b[0] for b in it])
    assert not np.array_equal(np.concatenate([b[0] for b in first]), second)
    it.epoch = 0
    np.testing.assert_array_equal(np.concatenate([b[0] for b in it]), np.concatenate([b[0] for b in first]))
    assert len(ArrayIterator([np.arange(10)], 4, drop_last=True)) == 2


def test_array_iterator_refuses_misaligned_arrays():
    with pytest.raises(ValueError, match=r"different lengths: \[10, 9\]"):
        ArrayIterator([np.zeros(10), np.zeros(9)], 2)


def test_training_reduces_the_loss_and_reports_validation():
    model, solver = make()
    lines = []
    trainer = Trainer(model, mse, solver, callbacks=[Monitor(lines.append)])
    history = trainer.fit(ArrayIterator([X, Y], 10), 15, valid=ArrayIterator([X, Y], 50, shuffle=False))
    assert history[-1]["cost"] < 0.5 * history[0]["cost"]
    assert {"epoch", "cost", "valid_loss", "time"} <= set(history[-1])
    assert len(lines) == 15 and lines[0].startswith("epoch=1 cost=")


def test_nan_loss_names_epoch_and_iteration():
    model, solver = make()
    bad = X.copy()
    bad[7, 2] = np.nan
    trainer = Trainer(model, mse, solver)
    with pytest.raises(NonFiniteError, match=r"loss is nan at epoch 1, iteration 1"):
        trainer.fit(ArrayIterator([bad, Y], 50, shuffle=False), 1)


def test_non_finite_gradient_names_the_parameter():
    model, solver = make()

    def loss_fn(m, x, t):  # finite loss (sqrt(0) = 0), non-finite gradient (sqrt'(0) = inf)
        w = m.layers[0].W
        return mse(m, x, t) + F.sqrt(w - w).sum()

    trainer = Trainer(model, loss_fn, solver)
    with (
        np.errstate(divide="ignore", invalid="ignore"),
        pytest.raises(
            NonFiniteError, match=r"gradient of parameter 'layers.0.W' is not finite at epoch 1, iteration 1"
        ),
    ):
        trainer.fit(ArrayIterator([X, Y], 50), 1)


def test_scheduler_drives_the_learning_rate():
    model = Sequential(L.Affine(4, 1))
    solver = SGD(model, lr=1.0)
    trainer = Trainer(model, mse, solver, scheduler=StepScheduler(0.1, 0.5, step_size=5))
    trainer.fit(ArrayIterator([X, Y], 10), 2)  # 10 iterations
    assert solver.lr == pytest.approx(0.05)


def test_checkpoint_resume_equals_an_uninterrupted_run(tmp_path):
    valid = ArrayIterator([X, Y], 50, shuffle=False)
    model, solver = make()
    straight = Trainer(model, mse, solver)
    straight.fit(ArrayIterator([X, Y], 8, seed=1), 6, valid=valid)

    model_a, solver_a = make()
    first = Trainer(model_a, mse, solver_a, callbacks=[Checkpoint(tmp_path)])
    first.fit(ArrayIterator([X, Y], 8, seed=1), 3, valid=valid)  # "killed" after epoch 3

    model_b, solver_b = make()
    resumed = Trainer(model_b, mse, solver_b)
    resumed.load_checkpoint(tmp_path / "last.npz")
    assert resumed.epoch == 3 and len(resumed.history) == 3
    resumed.fit(ArrayIterator([X, Y], 8, seed=1), 6, valid=valid)
    assert len(resumed.history) == 6
    for (k, a), (_, b) in zip(model.state_dict().items(), model_b.state_dict().items(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=k)
    assert resumed.history[-1]["cost"] == pytest.approx(straight.history[-1]["cost"], rel=1e-5)
    assert (tmp_path / "best.npz").exists()


def test_early_stopping():
    model = Sequential(L.Affine(4, 1))
    trainer = Trainer(model, mse, SGD(model, lr=0.0), callbacks=[EarlyStopping("valid_loss", patience=2)])
    history = trainer.fit(ArrayIterator([X, Y], 10), 50, valid=ArrayIterator([X, Y], 50))
    assert len(history) == 3  # no improvement with lr 0: stops after patience epochs
    with pytest.raises(KeyError, match="monitors 'accuracy'"):
        Trainer(model, mse, SGD(model), callbacks=[EarlyStopping("accuracy")]).fit(ArrayIterator([X, Y], 10), 1)


def test_metrics_fn_runs_in_eval_mode():
    model, solver = make()
    seen = []

    def metrics(m, valid):
        seen.append(m.layers[1].training)
        return {"accuracy": float(np.mean((m(Tensor(X)).data > 0.5) == Y))}

    record = Trainer(model, mse, solver, metrics_fn=metrics).fit(
        ArrayIterator([X, Y], 10), 1, valid=ArrayIterator([X, Y], 50)
    )[-1]
    assert seen == [False] and 0.0 <= record["accuracy"] <= 1.0 and model.layers[1].training
