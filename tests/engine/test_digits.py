"""The seed's experiments through the engine alone, on scikit-learn's digits."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from engine import Sequential, losses, no_grad, seed
from engine import layers as L
from engine.solvers import Adam
from engine.training import ArrayIterator, Trainer


def accuracy(model, x, y):
    model.eval()
    with no_grad():
        out = model(x).data
    predicted = out.argmax(axis=1) if out.shape[1] > 1 else (out[:, 0] > 0.5)
    return float(np.mean(predicted == y.reshape(-1)))


def test_logistic_regression_separates_4_from_9():
    seed(0)
    digits = load_digits()
    keep = np.isin(digits.target, (4, 9))
    x = (digits.images[keep] / 16).astype(np.float32)[:, None]
    y = (digits.target[keep] == 9).astype(np.float32)[:, None]
    x_train, x_valid, y_train, y_valid = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    model = Sequential(L.Affine(64, 1), L.Sigmoid())
    trainer = Trainer(model, lambda m, x, t: losses.binary_cross_entropy(m(x), t).mean(), Adam(model, lr=0.01))
    trainer.fit(ArrayIterator([x_train, y_train], 64), 30)
    assert accuracy(model, x_valid, y_valid) >= 0.95


def test_small_cnn_reaches_98_percent_on_ten_digits():
    seed(0)
    digits = load_digits()
    x = (digits.images / 16).astype(np.float32)[:, None]
    y = digits.target[:, None]
    x_train, x_valid, y_train, y_valid = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)

    def block(c_in, c_out):
        return [L.Convolution(c_in, c_out, (3, 3), pad=1), L.BatchNormalization(c_out), L.ReLU()]

    model = Sequential(
        *block(1, 16),
        *block(16, 32),
        L.MaxPooling((2, 2)),
        *block(32, 32),
        L.MaxPooling((2, 2)),
        L.Affine(32 * 2 * 2, 10),
    )
    trainer = Trainer(model, lambda m, x, t: losses.softmax_cross_entropy(m(x), t).mean(), Adam(model, lr=0.003))
    trainer.fit(ArrayIterator([x_train, y_train], 32), 15)
    assert accuracy(model, x_valid, y_valid) >= 0.98
