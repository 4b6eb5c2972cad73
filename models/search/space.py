"""The mutation space: NNC's mutation policy on a network's body (never its output layer), the
candidate it yields, and NNC's search range (limits)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.search.features import (
    ACTIVATIONS,
    POOLINGS,
    Costs,
    Layers,
    SearchError,
    Spec,
    costs,
    head_start,
    input_shapes,
    spec_key,
)
from models.spec import Network, SpecError, build


@dataclass
class Site:
    """Where a mutation acts: a layer list (the body of the network or of a residual branch)."""

    layers: Layers
    shapes: list[tuple[int, ...]]  # input shape of each layer in ``layers`` plus the list's output
    end: int  # mutations act on layers[:end] and insert at positions 0..end
    top: bool


def _sites(spec: Spec, net: Network) -> list[Site]:
    layers = spec["layers"]
    top_shapes = input_shapes(net)
    sites = [Site(layers, top_shapes, head_start(layers), True)]
    for i, layer in enumerate(layers[: sites[0].end]):
        if layer.get("type") == "Residual" and isinstance(layer.get("body"), list):
            inner = build({"input": list(top_shapes[i]), "layers": layer["body"]})
            sites.append(Site(layer["body"], input_shapes(inner), len(layer["body"]), False))
    return sites


def _where(site: Site, types: Sequence[str]) -> list[int]:
    return [i for i in range(site.end) if site.layers[i].get("type") in types]


def _spatial(shape: tuple[int, ...]) -> bool:
    return len(shape) >= 2


def pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _activation(rng: np.random.Generator) -> dict[str, Any]:
    return {"type": pick(rng, ACTIVATIONS)}


def _insert_positions(site: Site, spatial: bool | None = None) -> list[int]:
    """Positions 0..end where a layer may go (only where the data is spatial, when asked)."""
    return [i for i in range(site.end + 1) if spatial is None or _spatial(site.shapes[i]) == spatial]


def _m_insert_activation(site: Site, rng: np.random.Generator) -> str | None:
    spots = [i + 1 for i in _where(site, ("Convolution", "DepthwiseConvolution", "Affine", "BatchNormalization"))]
    if not spots:
        return None
    site.layers.insert(pick(rng, spots), _activation(rng))
    return "insert_activation"


def _remove(site: Site, rng: np.random.Generator, types: Sequence[str], name: str) -> str | None:
    spots = _where(site, types)
    if not spots:
        return None
    del site.layers[pick(rng, spots)]
    return name


def _m_insert_pooling(site: Site, rng: np.random.Generator) -> str | None:
    spots = [i for i in _insert_positions(site, spatial=True) if min(site.shapes[i][1:]) >= 4]
    if not spots or not site.top:
        return None
    site.layers.insert(pick(rng, spots), {"type": pick(rng, POOLINGS), "kernel": [2] * (len(site.shapes[0]) - 1)})
    return "insert_pooling"


def _m_insert_dropout(site: Site, rng: np.random.Generator) -> str | None:
    spots = _insert_positions(site)
    site.layers.insert(pick(rng, spots), {"type": "Dropout", "p": float(pick(rng, (0.1, 0.2, 0.3, 0.5)))})
    return "insert_dropout"


def _m_insert_batchnorm(site: Site, rng: np.random.Generator) -> str | None:
    spots = [i + 1 for i in _where(site, ("Convolution", "DepthwiseConvolution", "Affine"))]
    if not spots:
        return None
    site.layers.insert(pick(rng, spots), {"type": "BatchNormalization"})
    return "insert_batchnorm"


def _m_insert_affine(site: Site, rng: np.random.Generator) -> str | None:
    if not site.top:
        return None
    units = int(pick(rng, (16, 32, 64, 128)))
    i = site.end  # just before the output layer
    site.layers[i:i] = [{"type": "Affine", "n_outmaps": units}, _activation(rng)]
    return "insert_affine"


def _m_insert_conv(site: Site, rng: np.random.Generator) -> str | None:
    spots = _insert_positions(site, spatial=True)
    if not spots:
        return None
    i = pick(rng, spots)
    shape = site.shapes[i]
    nd = len(shape) - 1
    k = int(pick(rng, (1, 3, 5) if min(shape[1:]) >= 5 else (1, 3)))
    outmaps = shape[0] if not site.top else int(pick(rng, (4, 8, 16, 32)))
    site.layers[i:i] = [
        {"type": "Convolution", "outmaps": outmaps, "kernel": [k] * nd, "pad": [k // 2] * nd},
        _activation(rng),
    ]
    return "insert_conv"


def _m_swap(site: Site, rng: np.random.Generator) -> str | None:
    spots = _where(site, ACTIVATIONS + POOLINGS + ("Convolution", "DepthwiseConvolution"))
    if not spots:
        return None
    i = pick(rng, spots)
    layer = site.layers[i]
    kind = layer["type"]
    if kind in ACTIVATIONS:
        site.layers[i] = {"type": pick(rng, [a for a in ACTIVATIONS if a != kind])}
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
    layer = site.layers[pick(rng, spots)]
    key = "outmaps" if layer["type"] == "Convolution" else "n_outmaps"
    new = max(1, round(layer[key] * float(pick(rng, (0.5, 0.75, 1.5, 2.0)))))
    if new == layer[key]:
        return None
    layer[key] = new
    return "change_width"


def _m_change_kernel(site: Site, rng: np.random.Generator) -> str | None:
    spots = _where(site, ("Convolution", "DepthwiseConvolution"))
    if not spots:
        return None
    i = pick(rng, spots)
    layer = site.layers[i]
    nd = len(site.shapes[i]) - 1
    old = int(np.ravel(layer["kernel"])[0])
    choices = [k for k in (1, 3, 5, 7) if k != old]
    k = int(pick(rng, choices))
    pad = int(np.ravel(layer.get("pad", 0))[0])
    layer["kernel"] = [k] * nd
    if pad == old // 2 and pad > 0 or not site.top:  # "same" padding stays "same"
        layer["pad"] = [k // 2] * nd
    return "change_kernel"


def _m_change_dropout(site: Site, rng: np.random.Generator) -> str | None:
    spots = _where(site, ("Dropout",))
    if not spots:
        return None
    layer = site.layers[pick(rng, spots)]
    old = float(layer.get("p", 0.5))
    layer["p"] = float(pick(rng, [p for p in (0.1, 0.2, 0.3, 0.5) if abs(p - old) > 1e-9]))
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
    s, e = pick(rng, blocks)
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
    i = pick(rng, spots)
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
            site = pick(rng, sites)
            name = pick(rng, list(MUTATIONS))
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
