"""Anomaly detection on sensor vectors and windows, trained on normal data only.

Model kinds (``VectorDetectorConfig.model``):

- ``kde`` (default): a Gaussian kernel density of the normal samples; the score is the negative
  log density. Its bandwidth is the one under which held-out normal samples are most likely
  (leave-one-out log-likelihood over a grid), widened by ``bandwidth_factor`` (2 by default: the
  likelihood-optimal bandwidth of a high-dimensional density ranks its tail too locally). The
  kernel family of PyOD's one-class SVM, without its support-vector selection.
- ``knn``: mean distance to the ``k`` nearest normal samples. Large benchmark studies (ADBench;
  Bouman et al., JMLR 2024) find it the strongest simple detector.
- ``gauss``: Mahalanobis distance under a Ledoit–Wolf shrunk covariance (global, correlated
  structure; PCA with every component weighted by its variance, regularised for small samples).
- ``ensemble``: the kernel density, kNN and Gaussian scores, each normalised by its out-of-fold
  normal scores (median 0, one standard deviation 1), averaged.

None of them trains by gradient descent, so they work from 20 normal samples up.
- ``dense`` / ``conv1d``: an autoencoder (engine network); the score is the mean squared
  reconstruction error, or with ``score="max"`` the largest error over time (NNC's sensor tutorial:
  a 1-D convolutional autoencoder, max squared error over time).

Inputs are scaled per element (per channel for ``(channels, length)`` windows) by the range of the
normal data, floored at the median range so that a nearly constant element cannot dominate the
distance; the statistics live in the bundle's input spec, so serving applies the same transform.

Thresholds come from normal scores the model did not fit: leave-one-out for kNN and the kernel
density (each sample against all the others), k-fold out-of-fold scores for the Gaussian, the
newest share for autoencoders when it holds at least 20 samples (else k-fold, one autoencoder per
fold). Folds are contiguous runs of the samples in their order: windows of a series overlap, and
a random fold or share would leave near-twins of its samples in training (on the vibration
benchmark the conv1d autoencoder then raised 3.5 % false alarms at a nominal 1 %). The
calibration records how many scores it rests on (``n``) and how they were made.

Every kind exports one ONNX graph from the scaled input to ``score``, served by onnxruntime like
the image detector.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp

from engine import Tensor, losses, no_grad, seed
from engine.solvers import Adam
from engine.training import ArrayIterator, Trainer
from models import bundle as bundle_io
from models.calibration import MIN_SCORES, Calibration, CalibrationError, calibrate, check_rate, holdout_split
from models.detector import normal_training_data
from models.onnx_export import GraphBuilder, emit, finish
from models.preprocess import InputSpec
from models.scoring import gaussian_fit, mahalanobis
from models.spec import Network, build
from models.zoo import get_spec

MODELS = ("kde", "knn", "gauss", "ensemble", "dense", "conv1d")
MEMBERS = ("kde", "knn", "gauss")  # the ensemble's
AUTOENCODERS = ("dense", "conv1d")
MIN_SAMPLES = MIN_SCORES  # the fewest normal samples a threshold may rest on
BLOCK = 1024  # rows of a distance matrix computed at once


@dataclass
class VectorDetectorConfig:
    shape: tuple[int, ...] = (8,)  # (features,) or (channels, window length)
    model: str = "kde"
    k: int = 5  # neighbours (knn)
    bandwidth_factor: float = 2.0  # kde: times the leave-one-out likelihood's bandwidth
    max_reference: int = 5000  # kde / knn keep at most this many normal samples (a random subset)
    folds: int = 10  # out-of-fold calibration (gauss, ensemble; autoencoders on small data: 5)
    score: str = "mean"  # autoencoders: mean squared error, or "max" over time
    hidden: int = 64
    code: int = 8
    epochs: int = 60
    batch_size: int = 32
    lr: float = 1e-3
    false_alarm_rate: float = 0.01
    holdout: float = 0.2  # autoencoders: the share held out for calibration when it holds >= 20
    seed: int = 0

    def __post_init__(self) -> None:
        self.shape = tuple(self.shape)
        if self.model not in MODELS:
            msg = f"model must be one of {', '.join(MODELS)}; got {self.model!r}"
            raise ValueError(msg)
        if self.model == "conv1d" and len(self.shape) != 2:
            msg = f"a conv1d autoencoder needs (channels, length) windows, got shape {self.shape}"
            raise ValueError(msg)
        if self.score not in ("mean", "max"):
            msg = f"score must be 'mean' or 'max', got {self.score!r}"
            raise ValueError(msg)
        if self.k < 1 or self.max_reference < MIN_SAMPLES or self.folds < 2 or not self.bandwidth_factor > 0:
            msg = f"need k >= 1, max_reference >= {MIN_SAMPLES}, folds >= 2 and bandwidth_factor > 0"
            raise ValueError(msg)
        check_rate(self.false_alarm_rate)


def range_scaling(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-element centre (mean) and scale (range floored at the median range) of normal data
    (N, *shape); ``(C, L)`` windows share one centre and scale per channel."""
    flat = data.reshape(len(data), data.shape[1], -1) if data.ndim == 3 else data.reshape(len(data), -1, 1)
    mean = flat.mean(axis=(0, 2)) if data.ndim == 3 else flat.mean(axis=0)[:, 0]
    spread = np.ptp(flat, axis=(0, 2)) if data.ndim == 3 else np.ptp(flat, axis=0)[:, 0]
    positive = spread[spread > 0]
    floor = float(np.median(positive)) if len(positive) else 1.0
    scale = np.maximum(spread, floor)
    if data.ndim == 3:
        mean, scale = np.repeat(mean, data.shape[2]), np.repeat(scale, data.shape[2])
    return mean.astype(np.float32), scale.astype(np.float32)


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None]
    return np.maximum(d, 0)


def knn_scores(x: np.ndarray, reference: np.ndarray, k: int, exclude_self: bool = False) -> np.ndarray:
    """Mean Euclidean distance from each row of ``x`` to its ``k`` nearest reference rows; with
    ``exclude_self`` (``x`` is ``reference``) each row's distance to itself is left out."""
    out = np.empty(len(x))
    for i in range(0, len(x), BLOCK):
        d = _sq_distances(x[i : i + BLOCK].astype(np.float64), reference.astype(np.float64))
        if exclude_self:
            d[np.arange(len(d)), np.arange(i, i + len(d))] = np.inf
        nearest = np.partition(d, k - 1, axis=1)[:, :k]
        out[i : i + BLOCK] = np.sqrt(nearest).mean(axis=1)
    return out


def kde_scores(x: np.ndarray, reference: np.ndarray, bandwidth: float, exclude_self: bool = False) -> np.ndarray:
    """Negative log of the Gaussian kernel sum over the reference rows (the density up to a
    constant); with ``exclude_self`` each row leaves itself out."""
    out = np.empty(len(x))
    for i in range(0, len(x), BLOCK):
        a = -_sq_distances(x[i : i + BLOCK].astype(np.float64), reference.astype(np.float64)) / (2 * bandwidth**2)
        if exclude_self:
            a[np.arange(len(a)), np.arange(i, i + len(a))] = -np.inf
        out[i : i + BLOCK] = -logsumexp(a, axis=1)
    return out


def loo_bandwidth(z: np.ndarray, seed_: int, rows: int = 1000) -> float:
    """The bandwidth that maximises the leave-one-out log-likelihood of (up to ``rows`` of) the
    normal samples, searched on a log grid around the median nearest-neighbour distance."""
    pick = np.random.default_rng(seed_).permutation(len(z))[:rows]
    d2 = _sq_distances(z[pick].astype(np.float64), z.astype(np.float64))
    d2[np.arange(len(pick)), pick] = np.inf
    nearest = np.sqrt(d2.min(axis=1))
    centre = float(np.median(nearest[nearest > 0])) if (nearest > 0).any() else 1.0
    grid = centre * np.geomspace(0.1, 10, 41)
    dims = z.shape[1]
    likelihood = [(logsumexp(-d2 / (2 * h * h), axis=1) - dims * np.log(h)).mean() for h in grid]
    return float(grid[int(np.argmax(likelihood))])


def _folds(n: int, folds: int) -> list[np.ndarray]:
    """Contiguous folds: windows of a series overlap their neighbours, so a random fold would
    leave near-twins of its samples in training and make out-of-fold scores too low."""
    return np.array_split(np.arange(n), min(folds, n))


class VectorDetector:
    def __init__(self, config: VectorDetectorConfig) -> None:
        self.config = c = config
        self.net: Network | None = None
        if c.model in AUTOENCODERS:
            self.net = self._new_autoencoder()
        self.input_spec: InputSpec | None = None
        self.calibration: Calibration | None = None
        self.state: dict[str, np.ndarray] = {}  # what the score needs (reference set, covariance, ...)

    @property
    def members(self) -> tuple[str, ...]:
        """The non-network detectors this model scores with (one, or the ensemble's)."""
        c = self.config
        return MEMBERS if c.model == "ensemble" else () if c.model in AUTOENCODERS else (c.model,)

    def _new_autoencoder(self, offset: int = 0) -> Network:
        c = self.config
        seed(c.seed + offset)
        if c.model == "dense":
            spec = get_spec("dense_autoencoder", list(c.shape), hidden=c.hidden, code=c.code, output="")
        else:
            spec = get_spec("conv1d_autoencoder", list(c.shape))
        return build(spec)

    # -- training ------------------------------------------------------------------------
    def fit(self, windows: np.ndarray, log: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Fit on normal vectors / windows (N, *shape) and calibrate on scores the model did not fit."""
        c, log = self.config, log or (lambda _: None)
        data = normal_training_data(windows, c.shape, "training data")
        if len(data) < MIN_SAMPLES:
            msg = f"need at least {MIN_SAMPLES} normal samples to calibrate a threshold, got {len(data)}"
            raise CalibrationError(msg)
        mean, scale = range_scaling(data)
        self.input_spec = InputSpec(kind="vector", shape=c.shape, size=None, mean=mean.tolist(), std=scale.tolist())
        z = ((data - mean.reshape(c.shape)) / scale.reshape(c.shape)).reshape(len(data), -1)
        start = time.perf_counter()
        if c.model in AUTOENCODERS:
            held_scores, how = self._fit_autoencoder(z, log)
        else:
            held, hows = {}, []
            for member in self.members:
                held[member], how = getattr(self, f"_fit_{member}")(z, log)
                hows.append(how)
            how = " / ".join(dict.fromkeys(hows))
            held_scores = held[c.model] if c.model in held else self._combine(held, fit=True)
        seconds = time.perf_counter() - start
        self.calibration = calibrate(held_scores, c.false_alarm_rate)
        n = len(held_scores)
        warning = (
            f"{n} normal scores show false-alarm rates down to about 1/{n + 1} = {1 / (n + 1):.1%}; "
            f"{c.false_alarm_rate:.1%} is extrapolated from their tail: expect more false alarms until more "
            "normal data is collected"
            if c.false_alarm_rate < 1 / (n + 1)
            else ""
        )
        return {
            "warning": warning,
            "train_seconds": seconds,
            "samples": len(data),
            "calibrated_on": f"{len(held_scores)} {how} normal scores",
            "calibration": self.calibration.to_dict(),
        }

    def _reference(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the reference set (at most ``max_reference``, sorted) and of the rest."""
        order = np.random.default_rng(self.config.seed).permutation(len(z))
        return np.sort(order[: self.config.max_reference]), order[self.config.max_reference :]

    def _fit_knn(self, z: np.ndarray, log: Callable[[str], None]) -> tuple[np.ndarray, str]:
        """Scores in row order: leave-one-out within the reference set; rows beyond it (when there
        are more than ``max_reference``) are truly held out."""
        ref_idx, rest = self._reference(z)
        reference = z[ref_idx]
        k = min(self.config.k, len(reference) - 1)
        self.state |= {"reference": reference.astype(np.float32), "k": np.array(k)}
        scores = np.empty(len(z))
        scores[ref_idx] = knn_scores(reference, reference, k, exclude_self=True)
        if len(rest):
            scores[rest] = knn_scores(z[rest], reference, k)
        log(f"kNN: {len(reference)} reference samples, k={k}")
        return scores, "leave-one-out"

    def _fit_kde(self, z: np.ndarray, log: Callable[[str], None]) -> tuple[np.ndarray, str]:
        ref_idx, rest = self._reference(z)
        reference = z[ref_idx]
        likeliest = loo_bandwidth(reference, self.config.seed)
        bandwidth = likeliest * self.config.bandwidth_factor
        self.state |= {"reference": reference.astype(np.float32), "bandwidth": np.array(bandwidth)}
        scores = np.empty(len(z))
        scores[ref_idx] = kde_scores(reference, reference, bandwidth, exclude_self=True)
        if len(rest):
            scores[rest] = kde_scores(z[rest], reference, bandwidth)
        log(
            f"kernel density: {len(reference)} reference samples, bandwidth {bandwidth:.4g} ({likeliest:.4g} likeliest)"
        )
        return scores, "leave-one-out"

    def _fit_gauss(self, z: np.ndarray, log: Callable[[str], None]) -> tuple[np.ndarray, str]:
        c = self.config
        oof = np.empty(len(z))
        for held in _folds(len(z), c.folds):
            train = np.setdiff1d(np.arange(len(z)), held)
            oof[held] = mahalanobis(z[held], *gaussian_fit(z[train]))
        location, whitening = gaussian_fit(z)
        self.state |= {"location": location.astype(np.float32), "whitening": whitening.astype(np.float32)}
        log(f"Gaussian: {z.shape[1]} elements, Ledoit–Wolf shrunk covariance")
        return oof, f"{min(c.folds, len(z))}-fold out-of-fold"

    def _combine(self, scores: dict[str, np.ndarray], fit: bool = False) -> np.ndarray:
        """The ensemble's score: each member's, less the median of its held-out normal scores, over
        their standard deviation, averaged (``fit``: those statistics are taken from ``scores``)."""
        total = np.zeros(len(next(iter(scores.values()))))
        for name, values in scores.items():
            if fit:
                spread = float(values.std()) or 1.0
                self.state |= {f"{name}_centre": np.array(float(np.median(values))), f"{name}_spread": np.array(spread)}
            total += (values - float(self.state[f"{name}_centre"])) / float(self.state[f"{name}_spread"])
        return total / len(scores)

    def _fit_autoencoder(self, z: np.ndarray, log: Callable[[str], None]) -> tuple[np.ndarray, str]:
        c = self.config
        n_hold = int(round(c.holdout * len(z)))
        if n_hold >= MIN_SAMPLES and len(z) - n_hold >= c.batch_size:
            held, train = holdout_split(len(z), c.holdout, c.batch_size, c.seed, "latest")  # the newest share
            self._train_autoencoder(self.net, z[train])
            log(f"autoencoder: trained on {len(train)}, calibrated on the newest {n_hold}")
            return self._autoencoder_scores(self.net, z[held]), "held-out"
        oof = np.empty(len(z))
        folds = _folds(len(z), min(5, c.folds))
        for i, held in enumerate(folds):
            net = self._new_autoencoder(offset=i + 1)
            self._train_autoencoder(net, z[np.setdiff1d(np.arange(len(z)), held)])
            oof[held] = self._autoencoder_scores(net, z[held])
        self._train_autoencoder(self.net, z)
        log(f"autoencoder: {len(folds)} fold models for calibration, the served one on all {len(z)}")
        return oof, f"{len(folds)}-fold out-of-fold"

    def _train_autoencoder(self, net: Network, z: np.ndarray) -> None:
        c = self.config
        x = z.reshape(len(z), *c.shape).astype(np.float32)

        def loss(model, xb):
            return losses.squared_error(model(xb), xb).mean()

        Trainer(net.module, loss, Adam(net.module, lr=c.lr)).fit(
            ArrayIterator([x], min(c.batch_size, len(x)), seed=c.seed), c.epochs
        )

    def _autoencoder_scores(self, net: Network, z: np.ndarray) -> np.ndarray:
        c = self.config
        x = z.reshape(len(z), *c.shape).astype(np.float32)
        net.module.eval()
        with no_grad():
            error = (net.module(Tensor(x)).data - x) ** 2
        net.module.train()
        if c.score == "max" and len(c.shape) == 2:  # per time step (mean over channels), max over time
            return error.mean(axis=1).max(axis=1)
        if c.score == "max":
            return error.reshape(len(x), -1).max(axis=1)
        return error.reshape(len(x), -1).mean(axis=1)

    # -- scoring with numpy / the engine (evaluation; serving runs the ONNX graph) ------------
    def scaled(self, windows: np.ndarray) -> np.ndarray:
        spec = self.input_spec
        x = np.asarray(windows, np.float32).reshape(len(windows), -1)
        return (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)

    def _member_scores(self, member: str, z: np.ndarray) -> np.ndarray:
        s = self.state
        if member == "knn":
            return knn_scores(z, s["reference"], int(s["k"]))
        if member == "kde":
            return kde_scores(z, s["reference"], float(s["bandwidth"]))
        return mahalanobis(z, s["location"], s["whitening"])

    def scores(self, windows: np.ndarray) -> np.ndarray:
        z = self.scaled(windows)
        if self.config.model in AUTOENCODERS:
            return self._autoencoder_scores(self.net, z)
        scores = {m: self._member_scores(m, z) for m in self.members}
        return scores[self.config.model] if self.config.model in scores else self._combine(scores)

    # -- export -----------------------------------------------------------------------------
    def onnx_model(self):
        c, s = self.config, self.state
        g = GraphBuilder()
        flat = g.op("Flatten", ["input"], "flat", axis=1)
        outputs = []
        if c.model in AUTOENCODERS:
            self.net.module.eval()
            recon = emit(g, self.net.module, "input", c.shape)
            sq = g.op("Mul", [d := g.op("Sub", [recon, "input"], "diff"), d], "sq_error")
            if c.score == "max" and len(c.shape) == 2:
                per_step = g.op("ReduceMean", [sq], "per_step", axes=[1], keepdims=0)
                score = g.op("ReduceMax", [per_step], "score", axes=[1], keepdims=1)
            else:
                reduce = "ReduceMax" if c.score == "max" else "ReduceMean"
                score = g.op(reduce, [g.op("Flatten", [sq], "sq_flat", axis=1)], "score", axes=[1], keepdims=1)
            outputs.append((recon, "reconstruction", c.shape))
        else:
            # kde and knn share one reference set (the same rows), so its distances are computed once
            d2 = _sq_distance_graph(g, flat, s) if {"kde", "knn"} & set(self.members) else ""
            graphs = {"knn": lambda: _knn_graph(g, d2, s), "kde": lambda: _kde_graph(g, d2, s)}
            branches = {m: graphs.get(m, lambda: _gauss_graph(g, flat, s))() for m in self.members}
            if c.model in branches:
                score = branches[c.model]
            else:
                parts = []
                for name, branch in branches.items():
                    centred = g.op("Sub", [branch, g.const(np.float32(s[f"{name}_centre"]), f"{name}_centre")])
                    spread = g.const(np.float32(len(branches) * s[f"{name}_spread"]), f"{name}_spread")
                    parts.append(g.op("Div", [centred, spread]))
                score = g.op("Sum", parts, "ensemble")
        return finish(g, f"vector-{c.model}", c.shape, [(score, "score", (1,)), *outputs])

    def to_bundle(self, provenance: dict[str, Any] | None = None, name: str = "sensor-detector") -> bundle_io.Bundle:
        if self.calibration is None:
            msg = "the detector is not trained and calibrated yet"
            raise RuntimeError(msg)
        networks = {"autoencoder": self.net.spec} if self.net is not None else {}
        params = bundle_io.params_of({"autoencoder": self.net.module}) if self.net is not None else {}
        params.update({f"state/{k}": np.asarray(v) for k, v in self.state.items()})
        meta = bundle_io.new_meta(
            "detector",
            name,
            networks,
            self.input_spec.to_dict(),
            postprocess={"method": self.config.model, "calibration": self.calibration.to_dict()},
            provenance={"config": asdict(self.config), **(provenance or {})},
        )
        return bundle_io.Bundle(meta, params, self.onnx_model().SerializeToString())


def _sq_distance_graph(g: GraphBuilder, flat: str, s: dict[str, np.ndarray]) -> str:
    """(batch, reference rows) squared distances: |x|² - 2 x·R + |R|², clipped at 0."""
    reference = s["reference"].astype(np.float32)
    x2 = g.op("ReduceSumSquare", [flat], "x2", axes=[1], keepdims=1)
    cross = g.op("MatMul", [flat, g.const(np.ascontiguousarray(reference.T), "reference_t")], "cross")
    r2 = g.const((reference.astype(np.float64) ** 2).sum(1).astype(np.float32)[None], "r2")
    two = g.const(np.float32(2.0), "two")
    d2 = g.op("Add", [g.op("Sub", [x2, g.op("Mul", [cross, two])]), r2], "d2")
    return g.op("Relu", [d2], "d2_pos")  # rounding can make a distance slightly negative


def _kde_graph(g: GraphBuilder, d2: str, s: dict[str, np.ndarray]) -> str:
    """-log Σ exp(-d² / 2h²), with the largest term taken out first (no underflow far away)."""
    scale = g.const(np.float32(-1 / (2 * float(s["bandwidth"]) ** 2)), "neg_inv_2h2")
    a = g.op("Mul", [d2, scale], "log_kernel")
    top = g.op("ReduceMax", [a], "log_kernel_max", axes=[1], keepdims=1)
    summed = g.op("ReduceSum", [g.op("Exp", [g.op("Sub", [a, top])]), g.const(np.array([1], np.int64), "axis")])
    return g.op("Neg", [g.op("Add", [top, g.op("Log", [summed])])], "kde")


def _knn_graph(g: GraphBuilder, d2: str, s: dict[str, np.ndarray]) -> str:
    """Mean distance to the k nearest reference rows: the k smallest squared distances, sqrt, mean."""
    neg = g.op("Neg", [d2])
    k = g.const(np.array([int(s["k"])], np.int64), "k")
    nearest = g.node_outputs("TopK", [neg, k], ["nearest", "nearest_idx"], axis=1, largest=1, sorted=1)[0]
    dist = g.op("Sqrt", [g.op("Neg", [nearest])], "dist")
    return g.op("ReduceMean", [dist], "knn", axes=[1], keepdims=1)


def _gauss_graph(g: GraphBuilder, flat: str, s: dict[str, np.ndarray]) -> str:
    d = g.op("Sub", [flat, g.const(s["location"].astype(np.float32)[None], "location")], "centred")
    white = g.op("MatMul", [d, g.const(s["whitening"].astype(np.float32), "whitening")], "whitened")
    return g.op("ReduceL2", [white], "mahalanobis", axes=[1], keepdims=1)
