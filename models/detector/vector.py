"""Anomaly detection on sensor vectors and windows: a dense or 1-D convolutional autoencoder on
normal data only, with the same calibration as the image detector.

Inputs are standardised per element with statistics of the normal training data (stored in the
bundle's input spec, so serving applies the same transform); the score is the mean squared
reconstruction error of the standardised input.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from engine import Tensor, losses, no_grad, seed
from engine.solvers import Adam
from engine.training import ArrayIterator, Trainer
from models import bundle as bundle_io
from models.calibration import Calibration, calibrate, holdout_split
from models.detector import normal_training_data
from models.preprocess import InputSpec, preprocess_vector
from models.spec import build
from models.zoo import get_spec


@dataclass
class VectorDetectorConfig:
    shape: tuple[int, ...] = (8,)  # (features,) or (channels, window length)
    model: str = "dense"  # dense | conv1d
    hidden: int = 64
    code: int = 8
    epochs: int = 60
    batch_size: int = 32
    lr: float = 1e-3
    false_alarm_rate: float = 0.01
    holdout: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        self.shape = tuple(self.shape)
        if self.model not in ("dense", "conv1d"):
            msg = f"model must be 'dense' or 'conv1d', got {self.model!r}"
            raise ValueError(msg)
        if self.model == "conv1d" and len(self.shape) != 2:
            msg = f"a conv1d autoencoder needs (channels, length) windows, got shape {self.shape}"
            raise ValueError(msg)


class VectorDetector:
    def __init__(self, config: VectorDetectorConfig) -> None:
        self.config = c = config
        seed(c.seed)
        if c.model == "dense":
            spec = get_spec("dense_autoencoder", list(c.shape), hidden=c.hidden, code=c.code, output="")
        else:
            spec = get_spec("conv1d_autoencoder", list(c.shape))
        self.net = build(spec)
        self.input_spec: InputSpec | None = None
        self.calibration: Calibration | None = None

    def fit(self, windows: np.ndarray) -> dict[str, Any]:
        """Train on normal vectors/windows (N, *shape); calibrate on a held-out share."""
        c = self.config
        data = normal_training_data(windows, c.shape, "training data")
        held_idx, train_idx = holdout_split(len(data), c.holdout, c.batch_size, c.seed)
        held, train = data[held_idx], data[train_idx]
        mean, std = train.mean(axis=0), train.std(axis=0) + 1e-6
        self.input_spec = InputSpec(
            kind="vector", shape=c.shape, size=None, mean=mean.reshape(-1).tolist(), std=std.reshape(-1).tolist()
        )
        z = (train - mean) / std
        start = time.perf_counter()

        def loss(model, x):
            return losses.squared_error(model(x), x).mean()

        Trainer(self.net.module, loss, Adam(self.net.module, lr=c.lr)).fit(
            ArrayIterator([z], c.batch_size, seed=c.seed), c.epochs
        )
        seconds = time.perf_counter() - start
        self.calibration = calibrate(self.scores(held), c.false_alarm_rate)
        return {"train_seconds": seconds, "calibration": self.calibration.to_dict()}

    def scores(self, windows: np.ndarray) -> np.ndarray:
        """Mean squared reconstruction error of each standardised sample."""
        z = np.stack([preprocess_vector(w, self.input_spec) for w in windows])
        self.net.module.eval()
        with no_grad():
            recon = self.net.module(Tensor(z)).data
        self.net.module.train()
        return ((z - recon) ** 2).reshape(len(z), -1).mean(axis=1)

    def to_bundle(self, provenance: dict[str, Any] | None = None, name: str = "sensor-detector") -> bundle_io.Bundle:
        if self.calibration is None:
            msg = "the detector is not trained and calibrated yet"
            raise RuntimeError(msg)
        post = {"calibration": self.calibration.to_dict()}
        return bundle_io.bundle_from_network(
            self.net,
            "autoencoder",
            self.input_spec.to_dict(),
            postprocess=post,
            provenance={"config": asdict(self.config), **(provenance or {})},
            name=name,
        )
