"""The seed's basic experiment through the engine alone, used by ``appliance run`` until the
runtime lands: 1-layer logistic regression separating 4 from 9 on scikit-learn's digits."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from engine import Sequential, losses, no_grad, seed
from engine import layers as L
from engine.solvers import Adam
from engine.training import ArrayIterator, Monitor, Trainer


def digits_4_vs_9(random_state: int = 0) -> tuple[np.ndarray, ...]:
    """Train/validation split of the 4s and 9s, pixels scaled to [0, 1], label 1 for a 9."""
    digits = load_digits()
    keep = np.isin(digits.target, (4, 9))
    x = (digits.images[keep] / 16.0).astype(np.float32)[:, None]
    y = (digits.target[keep] == 9).astype(np.float32)[:, None]
    return tuple(train_test_split(x, y, test_size=0.25, random_state=random_state, stratify=y))


def logistic_regression_4_vs_9(epochs: int = 30, log: Callable[[str], None] | None = None) -> float:
    """Affine → Sigmoid → BinaryCrossEntropy with Adam; returns validation accuracy."""
    seed(0)
    x_train, x_valid, y_train, y_valid = digits_4_vs_9()
    model = Sequential(L.Affine(64, 1), L.Sigmoid())

    def loss_fn(m, x, t):
        return losses.binary_cross_entropy(m(x), t).mean()

    trainer = Trainer(model, loss_fn, Adam(model, lr=0.01), callbacks=[Monitor(log)] if log else [])
    trainer.fit(
        ArrayIterator([x_train, y_train], 64, seed=0),
        epochs,
        valid=ArrayIterator([x_valid, y_valid], 256, shuffle=False),
    )
    model.eval()
    with no_grad():
        predicted = model(x_valid).data > 0.5
    return float(np.mean(predicted == (y_valid > 0.5)))
