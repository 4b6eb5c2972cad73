"""Structure search: mutate network specs, learn which candidates pay, mark the Pareto front.

This module holds the search itself and nothing about datasets or processes: the proposal of
candidate specs (NNC's mutation policy), shape checks without data, the model-based selection and
NNC's Pareto marking. ``appliance.workflows.search`` runs the trials.

Mutations work on the *body* of a network: every top-level layer before the output layer (the last
Affine / Convolution / Deconvolution whose output is the network's) and inside residual bodies. The
output layer and what follows it are never touched, and a candidate must keep the base's input and
output shapes. A candidate whose shapes do not fit is refused by :func:`models.spec.build` before
any training.

Two ways to pick the next candidate from the finished trials:

- ``random``: NNC's default. Mutate a parent drawn from the Pareto front (or the best networks when
  the objective is error alone) once or twice.
- ``bayes``: draw many such candidates, predict each one's validation error with a Gaussian process
  over network features (counts of each layer family, log multiply-adds, parameters, widths, depth
  and resolution), and train the one with the largest expected improvement. Multiply-adds are
  known exactly before training, so only the error is predicted; the improvement is measured
  against the best error of the finished trials that are at most as heavy as the candidate, so a
  lighter network at the same error counts as progress when the objective includes multiply-adds.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.spec import Network, SpecError, build
from models.stats import network_stats, totals

Spec = dict[str, Any]
Layers = list[dict[str, Any]]

ACTIVATIONS = ("ReLU", "LeakyReLU", "ELU", "SELU", "Swish", "GELU", "Tanh", "Sigmoid", "PReLU")
POOLINGS = ("MaxPooling", "AveragePooling")
OUTPUT_TYPES = ("Affine", "Convolution", "Deconvolution")
OBJECTIVES = ("error", "error_and_madds")
METHODS = ("random", "bayes")


class SearchError(ValueError):
    """A search cannot start or continue (bad base network, settings or state)."""


# -- facts about a spec -------------------------------------------------------------------------
def spec_key(spec: Spec) -> str:
    """A short digest of the layers: two trials with the same key are the same network."""
    text = json.dumps({"input": spec["input"], "layers": spec["layers"]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Costs:
    multiply_adds: int
    parameters: int


def costs(net: Network) -> Costs:
    t = totals(network_stats(net))
    return Costs(int(t["multiply_adds"]), int(t["parameters"]))


def head_start(layers: Layers) -> int:
    """Index of the output layer: mutations stay before it."""
    for i in range(len(layers) - 1, -1, -1):
        if layers[i].get("type") in OUTPUT_TYPES:
            return i
    msg = "the base network has no output layer (Affine, Convolution or Deconvolution) to keep"
    raise SearchError(msg)


def _input_shapes(net: Network) -> list[tuple[int, ...]]:
    """The input shape of every top-level layer, plus the network's output shape."""
    shapes: dict[int, tuple[int, ...]] = {}
    for layer in net.layers:
        index = int(layer.path.split("[", 1)[1].split("]", 1)[0])
        shapes.setdefault(index, layer.in_shape)
    return [shapes[i] for i in range(len(net.spec["layers"]))] + [net.output_shape]


FEATURE_NAMES = (
    "log_madds",
    "log_params",
    "depth",
    "conv",
    "depthwise",
    "affine",
    "batchnorm",
    "max_pool",
    "avg_pool",
    "dropout",
    "dropout_rate",
    "residual",
    "relu_family",
    "saturating",
    "log_width",
    "log_max_width",
    "mean_kernel",
    "log_flat_features",
)


def features(net: Network) -> np.ndarray:
    """A fixed-length description of a network for the error model."""
    c = costs(net)
    count: dict[str, int] = {}
    widths, kernels, rates = [], [], []
    for layer in net.layers:
        count[layer.type] = count.get(layer.type, 0) + 1
        if layer.type in ("Convolution", "DepthwiseConvolution", "Affine"):
            widths.append(layer.out_shape[0])
        kernel = getattr(layer.module, "kernel", None)
        if layer.type in ("Convolution", "DepthwiseConvolution") and kernel is not None:
            kernels.append(float(np.mean(kernel)))
        if layer.type == "Dropout":
            rates.append(float(layer.module.p))
    flat = next((int(np.prod(x.in_shape)) for x in net.layers if x.type == "Affine"), 1)
    values = {
        "log_madds": math.log10(max(c.multiply_adds, 1)),
        "log_params": math.log10(max(c.parameters, 1)),
        "depth": sum(1 for x in net.layers if x.type in ("Convolution", "DepthwiseConvolution", "Affine")),
        "conv": count.get("Convolution", 0),
        "depthwise": count.get("DepthwiseConvolution", 0),
        "affine": count.get("Affine", 0),
        "batchnorm": count.get("BatchNormalization", 0),
        "max_pool": count.get("MaxPooling", 0),
        "avg_pool": count.get("AveragePooling", 0),
        "dropout": count.get("Dropout", 0),
        "dropout_rate": float(np.mean(rates)) if rates else 0.0,
        "residual": count.get("Add", 0),
        "relu_family": sum(count.get(k, 0) for k in ("ReLU", "LeakyReLU", "ELU", "SELU", "Swish", "GELU", "PReLU")),
        "saturating": count.get("Tanh", 0) + count.get("Sigmoid", 0),
        "log_width": math.log2(float(np.mean(widths))) if widths else 0.0,
        "log_max_width": math.log2(float(max(widths))) if widths else 0.0,
        "mean_kernel": float(np.mean(kernels)) if kernels else 0.0,
        "log_flat_features": math.log2(flat),
    }
    return np.array([values[k] for k in FEATURE_NAMES], dtype=np.float64)


# -- mutations ----------------------------------------------------------------------------------
@dataclass
class Site:
    """Where a mutation acts: a layer list (the body of the network or of a residual branch)."""

    layers: Layers
    shapes: list[tuple[int, ...]]  # input shape of each layer in ``layers`` plus the list's output
    end: int  # mutations act on layers[:end] and insert at positions 0..end
    top: bool


def _sites(spec: Spec, net: Network) -> list[Site]:
    layers = spec["layers"]
    top_shapes = _input_shapes(net)
    sites = [Site(layers, top_shapes, head_start(layers), True)]
    for i, layer in enumerate(layers[: sites[0].end]):
        if layer.get("type") == "Residual" and isinstance(layer.get("body"), list):
            inner = build({"input": list(top_shapes[i]), "layers": layer["body"]})
            sites.append(Site(layer["body"], _input_shapes(inner), len(layer["body"]), False))
    return sites


def _where(site: Site, types: Sequence[str]) -> list[int]:
    return [i for i in range(site.end) if site.layers[i].get("type") in types]


def _spatial(shape: tuple[int, ...]) -> bool:
    return len(shape) >= 2


def _pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _activation(rng: np.random.Generator) -> dict[str, Any]:
    return {"type": _pick(rng, ACTIVATIONS)}


def _insert_positions(site: Site, spatial: bool | None = None) -> list[int]:
    """Positions 0..end where a layer may go (only where the data is spatial, when asked)."""
    return [i for i in range(site.end + 1) if spatial is None or _spatial(site.shapes[i]) == spatial]


def _m_insert_activation(site: Site, rng: np.random.Generator) -> str | None:
    spots = [i + 1 for i in _where(site, ("Convolution", "DepthwiseConvolution", "Affine", "BatchNormalization"))]
    if not spots:
        return None
    site.layers.insert(_pick(rng, spots), _activation(rng))
    return "insert_activation"


def _remove(site: Site, rng: np.random.Generator, types: Sequence[str], name: str) -> str | None:
    spots = _where(site, types)
    if not spots:
        return None
    del site.layers[_pick(rng, spots)]
    return name


def _m_insert_pooling(site: Site, rng: np.random.Generator) -> str | None:
    spots = [i for i in _insert_positions(site, spatial=True) if min(site.shapes[i][1:]) >= 4]
    if not spots or not site.top:
        return None
    site.layers.insert(_pick(rng, spots), {"type": _pick(rng, POOLINGS), "kernel": [2] * (len(site.shapes[0]) - 1)})
    return "insert_pooling"


def _m_insert_dropout(site: Site, rng: np.random.Generator) -> str | None:
    spots = _insert_positions(site)
    site.layers.insert(_pick(rng, spots), {"type": "Dropout", "p": float(_pick(rng, (0.1, 0.2, 0.3, 0.5)))})
    return "insert_dropout"


def _m_insert_batchnorm(site: Site, rng: np.random.Generator) -> str | None:
    spots = [i + 1 for i in _where(site, ("Convolution", "DepthwiseConvolution", "Affine"))]
    if not spots:
        return None
    site.layers.insert(_pick(rng, spots), {"type": "BatchNormalization"})
    return "insert_batchnorm"


def _m_insert_affine(site: Site, rng: np.random.Generator) -> str | None:
    if not site.top:
        return None
    units = int(_pick(rng, (16, 32, 64, 128)))
    i = site.end  # just before the output layer
    site.layers[i:i] = [{"type": "Affine", "n_outmaps": units}, _activation(rng)]
    return "insert_affine"


def _m_insert_conv(site: Site, rng: np.random.Generator) -> str | None:
    spots = _insert_positions(site, spatial=True)
    if not spots:
        return None
    i = _pick(rng, spots)
    shape = site.shapes[i]
    nd = len(shape) - 1
    k = int(_pick(rng, (1, 3, 5) if min(shape[1:]) >= 5 else (1, 3)))
    outmaps = shape[0] if not site.top else int(_pick(rng, (4, 8, 16, 32)))
    site.layers[i:i] = [
        {"type": "Convolution", "outmaps": outmaps, "kernel": [k] * nd, "pad": [k // 2] * nd},
        _activation(rng),
    ]
    return "insert_conv"


def _m_swap(site: Site, rng: np.random.Generator) -> str | None:
    spots = _where(site, ACTIVATIONS + POOLINGS + ("Convolution", "DepthwiseConvolution"))
    if not spots:
        return None
    i = _pick(rng, spots)
    layer = site.layers[i]
    kind = layer["type"]
    if kind in ACTIVATIONS:
        site.layers[i] = {"type": _pick(rng, [a for a in ACTIVATIONS if a != kind])}
        return "swap_activation"
    if kind in POOLINGS:
        layer["type"] = POOLINGS[1 - POOLINGS.index(kind)]
        return "swap_pooling"
    if kind == "Convolution" and layer.get("group", 1) == 1:
        # Conv → depthwise-separable: depthwise (same kernel, stride, pad) then a 1×1 convolution
        nd = len(site.shapes[i]) - 1
        depthwise = {"type": "DepthwiseConvolution", "kernel": layer["kernel"]}
        depthwise.update({k: layer[k] for k in ("pad", "stride", "dilation") if k in layer})
        site.layers[i : i + 1] = [depthwise, {"type": "Convolution", "outmaps": layer["outmaps"], "kernel": [1] * nd}]
        return "swap_conv_to_depthwise"
    if kind == "DepthwiseConvolution":
        nxt = site.layers[i + 1] if i + 1 < site.end else None
        outmaps = site.shapes[i][0] * int(layer.get("multiplier", 1))
        conv = {"type": "Convolution", "kernel": layer["kernel"], "outmaps": outmaps}
        conv.update({k: layer[k] for k in ("pad", "stride", "dilation") if k in layer})
        pointwise = nxt is not None and nxt.get("type") == "Convolution" and set(np.ravel(nxt["kernel"])) == {1}
        if pointwise:
            conv["outmaps"] = nxt["outmaps"]
            site.layers[i : i + 2] = [conv]
        else:
            site.layers[i] = conv
        return "swap_depthwise_to_conv"
    return None


def _m_change_width(site: Site, rng: np.random.Generator) -> str | None:
    if not site.top:
        return None  # a residual body must give back its input's channels
    spots = _where(site, ("Convolution", "Affine"))
    if not spots:
        return None
    layer = site.layers[_pick(rng, spots)]
    key = "outmaps" if layer["type"] == "Convolution" else "n_outmaps"
    new = max(1, round(layer[key] * float(_pick(rng, (0.5, 0.75, 1.5, 2.0)))))
    if new == layer[key]:
        return None
    layer[key] = new
    return "change_width"


def _m_change_kernel(site: Site, rng: np.random.Generator) -> str | None:
    spots = _where(site, ("Convolution", "DepthwiseConvolution"))
    if not spots:
        return None
    i = _pick(rng, spots)
    layer = site.layers[i]
    nd = len(site.shapes[i]) - 1
    old = int(np.ravel(layer["kernel"])[0])
    choices = [k for k in (1, 3, 5, 7) if k != old]
    k = int(_pick(rng, choices))
    pad = int(np.ravel(layer.get("pad", 0))[0])
    layer["kernel"] = [k] * nd
    if pad == old // 2 and pad > 0 or not site.top:  # "same" padding stays "same"
        layer["pad"] = [k // 2] * nd
    return "change_kernel"


def _m_change_dropout(site: Site, rng: np.random.Generator) -> str | None:
    spots = _where(site, ("Dropout",))
    if not spots:
        return None
    layer = site.layers[_pick(rng, spots)]
    old = float(layer.get("p", 0.5))
    layer["p"] = float(_pick(rng, [p for p in (0.1, 0.2, 0.3, 0.5) if abs(p - old) > 1e-9]))
    return "change_dropout"


def _blocks(site: Site) -> list[tuple[int, int]]:
    """(start, end) of each compute block: a Conv/Affine with the non-compute layers after it."""
    compute = ("Convolution", "DepthwiseConvolution", "Affine", "Residual")
    starts = [i for i in range(site.end) if site.layers[i].get("type") in compute]
    out = []
    for j, s in enumerate(starts):
        e = starts[j + 1] if j + 1 < len(starts) else site.end
        out.append((s, e))
    return out


def _m_repeat(site: Site, rng: np.random.Generator) -> str | None:
    """Repeat count: duplicate a block whose output keeps its input shape, or drop a repeated one."""
    blocks = [(s, e) for s, e in _blocks(site) if site.shapes[s] == site.shapes[e]]
    if not blocks:
        return None
    s, e = _pick(rng, blocks)
    if rng.random() < 0.5 and e - s > 0:
        site.layers[e:e] = copy.deepcopy(site.layers[s:e])
        return "repeat_block"
    del site.layers[s:e]
    return "remove_block"


def _m_add_residual(site: Site, rng: np.random.Generator) -> str | None:
    if not site.top:
        return None
    spots = _insert_positions(site, spatial=True)
    if not spots:
        return None
    i = _pick(rng, spots)
    nd = len(site.shapes[i]) - 1
    c = site.shapes[i][0]
    conv = {"type": "Convolution", "outmaps": c, "kernel": [3] * nd, "pad": [1] * nd}
    body = [conv, {"type": "BatchNormalization"}, _activation(rng), copy.deepcopy(conv)]
    site.layers[i:i] = [{"type": "Residual", "body": body}, _activation(rng)]
    return "add_residual"


MUTATIONS: dict[str, Callable[[Site, np.random.Generator], str | None]] = {
    "insert_activation": _m_insert_activation,
    "remove_activation": lambda s, r: _remove(s, r, ACTIVATIONS, "remove_activation"),
    "insert_pooling": _m_insert_pooling,
    "remove_pooling": lambda s, r: _remove(s, r, POOLINGS, "remove_pooling"),
    "insert_dropout": _m_insert_dropout,
    "remove_dropout": lambda s, r: _remove(s, r, ("Dropout",), "remove_dropout"),
    "insert_batchnorm": _m_insert_batchnorm,
    "remove_batchnorm": lambda s, r: _remove(s, r, ("BatchNormalization",), "remove_batchnorm"),
    "insert_affine": _m_insert_affine,
    "insert_conv": _m_insert_conv,
    "swap": _m_swap,
    "change_width": _m_change_width,
    "change_kernel": _m_change_kernel,
    "change_dropout": _m_change_dropout,
    "repeat": _m_repeat,
    "add_residual": _m_add_residual,
    "remove_residual": lambda s, r: _remove(s, r, ("Residual",), "remove_residual"),
}


@dataclass
class Candidate:
    spec: Spec
    net: Network
    costs: Costs
    parent: int | None
    mutations: list[str]
    key: str = ""

    def __post_init__(self) -> None:
        self.key = self.key or spec_key(self.spec)


@dataclass
class Limits:
    """NNC's search range: candidates outside the multiply-adds range are never trained; trials
    whose validation error falls outside the error range are kept in the table but are neither
    parents nor on the Pareto front."""

    error_min: float | None = None
    error_max: float | None = None
    madds_min: int | None = None
    madds_max: int | None = None

    def madds_ok(self, madds: int) -> bool:
        return (self.madds_min is None or madds >= self.madds_min) and (
            self.madds_max is None or madds <= self.madds_max
        )

    def error_ok(self, error: float) -> bool:
        return (self.error_min is None or error >= self.error_min) and (
            self.error_max is None or error <= self.error_max
        )


def check_base(spec: Spec) -> Candidate:
    try:
        net = build(spec)
    except SpecError as exc:
        msg = f"the base network does not build: {exc}"
        raise SearchError(msg) from exc
    head_start(spec["layers"])
    return Candidate(spec, net, costs(net), None, [])


def mutate(
    parent: Candidate,
    rng: np.random.Generator,
    steps: int = 1,
    parent_id: int | None = None,
    tries: int = 30,
) -> Candidate | None:
    """Apply ``steps`` random mutations to a parent; None when no valid candidate came out."""
    for _ in range(tries):
        spec = copy.deepcopy(parent.spec)
        done: list[str] = []
        net = parent.net
        for _ in range(steps):
            sites = _sites(spec, net)
            site = _pick(rng, sites)
            name = _pick(rng, list(MUTATIONS))
            applied = MUTATIONS[name](site, rng)
            if applied is None:
                break
            done.append(applied)
            try:
                net = build(spec)
            except SpecError:
                break
            if net.output_shape != parent.net.output_shape:
                break
        else:
            spec["name"] = f"{str(parent.spec.get('name', 'network')).split('+')[0]}+{len(done)}"
            cand = Candidate(spec, net, costs(net), parent_id, done)
            if cand.key != parent.key:  # mutations that undo each other give the parent back
                return cand
    return None


# -- trials, the Pareto front and the two selection methods -------------------------------------
@dataclass
class Trial:
    """A finished (or failed) trial as the search sees it."""

    id: int
    key: str
    spec: Spec
    error: float | None
    multiply_adds: int
    status: str  # done | stopped_early | failed | time_limit
    parent: int | None = None
    mutations: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return self.status == "done" and self.error is not None and math.isfinite(self.error)


def pareto_flags(errors: Sequence[float | None], madds: Sequence[int], usable: Sequence[bool]) -> list[bool]:
    """NNC's marking rule: a trial is on the front when no other trial is at least as good in both
    validation error and multiply-adds and better in one of them."""
    flags = []
    for i, (e, m, ok) in enumerate(zip(errors, madds, usable, strict=True)):
        if not ok or e is None:
            flags.append(False)
            continue
        dominated = any(
            j != i
            and usable[j]
            and errors[j] is not None
            and errors[j] <= e
            and madds[j] <= m
            and (errors[j] < e or madds[j] < m)
            for j in range(len(errors))
        )
        flags.append(not dominated)
    return flags


def hypervolume(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` (both coordinates minimised) up to ``reference``: one number
    for a whole Pareto front, larger is better."""
    inside = sorted((x, y) for x, y in points if x < reference[0] and y < reference[1])
    area, best_y = 0.0, reference[1]
    for i, (x, y) in enumerate(inside):
        best_y = min(best_y, y)
        next_x = inside[i + 1][0] if i + 1 < len(inside) else reference[0]
        area += (next_x - x) * (reference[1] - best_y)
    return area


def reference_error(trials: Sequence[Trial], madds: int, objective: str, fallback: float) -> float:
    """The error a candidate must beat to improve the result: the best error overall (objective
    ``error``), or the best among trials at most as heavy as it (``error_and_madds``)."""
    pool = [t.error for t in trials if t.usable and (objective == "error" or t.multiply_adds <= madds)]
    return float(min(pool)) if pool else fallback


def parents(trials: Sequence[Trial], objective: str, limits: Limits) -> list[Trial]:
    """The trials new candidates are mutated from; empty until one has finished."""
    good = [t for t in trials if t.usable and limits.error_ok(t.error)] or [t for t in trials if t.usable]
    if objective == "error":
        return sorted(good, key=lambda t: t.error)[:3]
    flags = pareto_flags([t.error for t in good], [t.multiply_adds for t in good], [True] * len(good))
    return [t for t, f in zip(good, flags, strict=True) if f]


class Proposer:
    """Proposes the next candidate from the finished trials (``random`` or ``bayes``)."""

    def __init__(
        self,
        base: Candidate,
        method: str = "random",
        objective: str = "error_and_madds",
        limits: Limits | None = None,
        n_initial: int = 4,
        n_candidates: int = 48,
    ) -> None:
        if method not in METHODS:
            msg = f"unknown search method {method!r}; known: {', '.join(METHODS)}"
            raise SearchError(msg)
        if objective not in OBJECTIVES:
            msg = f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}"
            raise SearchError(msg)
        self.base, self.method, self.objective = base, method, objective
        self.limits = limits or Limits()
        self.n_initial, self.n_candidates = n_initial, n_candidates
        self._candidates: dict[int, Candidate] = {}

    def _candidate_of(self, trial: Trial) -> Candidate:
        if trial.id not in self._candidates:
            net = build(trial.spec)
            self._candidates[trial.id] = Candidate(trial.spec, net, costs(net), trial.parent, trial.mutations)
        return self._candidates[trial.id]

    def _draw(self, trials: Sequence[Trial], rng: np.random.Generator, taken: set[str]) -> Candidate | None:
        pool = parents(trials, self.objective, self.limits)
        for _ in range(20):
            if pool:
                chosen = _pick(rng, pool)
                parent, parent_id = self._candidate_of(chosen), chosen.id
            else:  # until a trial has finished, candidates come from the base network (trial 0)
                parent, parent_id = self.base, 0
            steps = 1 if rng.random() < 0.7 else 2
            cand = mutate(parent, rng, steps, parent_id)
            if cand is not None and cand.key not in taken and self.limits.madds_ok(cand.costs.multiply_adds):
                return cand
        return None

    def propose(self, trials: Sequence[Trial], rng: np.random.Generator, taken: set[str]) -> Candidate | None:
        """The next candidate, never one whose key is in ``taken`` (finished or running)."""
        finished = [t for t in trials if t.status != "time_limit"]
        usable = [t for t in finished if t.usable]
        if self.method == "random" or len(usable) < self.n_initial:
            return self._draw(finished, rng, taken)
        pool: list[Candidate] = []
        keys = set(taken)
        for _ in range(self.n_candidates):
            cand = self._draw(finished, rng, keys)
            if cand is not None:
                pool.append(cand)
                keys.add(cand.key)
        if not pool:
            return None
        scores = self.expected_improvement(usable, pool)
        return pool[int(np.argmax(scores))]

    def expected_improvement(self, usable: Sequence[Trial], pool: Sequence[Candidate]) -> np.ndarray:
        from scipy.stats import norm
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        x = np.stack([features(self._candidate_of(t).net) for t in usable])
        y = np.log(np.array([max(t.error, 1e-4) for t in usable]))
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
        # one length scale: with a few dozen trials, per-feature scales overfit (tests/models/test_search.py)
        kernel = ConstantKernel(1.0) * Matern(length_scale=3.0, nu=2.5) + WhiteKernel(0.05)
        gp = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=2, random_state=0)
        with warnings.catch_warnings():  # hyper-parameters at their bounds are normal with few trials
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit((x - mean) / scale, y)
        xc = np.stack([features(c.net) for c in pool])
        mu, sigma = gp.predict((xc - mean) / scale, return_std=True)
        base_error = next((t.error for t in usable if t.parent is None), max(t.error for t in usable))
        ref = np.log(
            np.array(
                [max(reference_error(usable, c.costs.multiply_adds, self.objective, base_error), 1e-4) for c in pool]
            )
        )
        sigma = np.maximum(sigma, 1e-9)
        z = (ref - mu) / sigma
        return (ref - mu) * norm.cdf(z) + sigma * norm.pdf(z)
