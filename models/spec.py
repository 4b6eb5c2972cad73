"""Network specs: networks described as data, built into engine modules.

A spec is a mapping (YAML or JSON)::

    name: lenet
    input: [1, 28, 28]            # (channels, height, width), (channels, length) or (features,)
    layers:
      - {type: Convolution, outmaps: 6, kernel: [5, 5], pad: [2, 2]}
      - {type: ReLU}
      - {type: MaxPooling, kernel: [2, 2]}
      - {type: Residual, body: [...], shortcut: [...]}     # shortcut optional (identity)
      - {type: Concat, branches: [[...], [...]]}
      - {type: Affine, n_outmaps: 10}

Layer types and parameter names follow NNC. Input channels are never written: they come from the
shape inferred at that point, so a spec is built and shape-checked in one pass, without data. A
spec whose shapes do not fit is refused with the layer's path (``layers[3] (Affine 'fc')``).
"""

from __future__ import annotations

import contextvars
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine import Concat, Module, Residual, Sequential
from engine import layers as L

Shape = tuple[int, ...]


class SpecError(ValueError):
    """A network spec is malformed or its shapes do not fit."""


@dataclass
class BuiltLayer:
    """One leaf layer of a built network, for statistics and export."""

    path: str
    type: str
    module: Module
    in_shape: Shape
    out_shape: Shape
    name: str = ""  # the spec's ``name`` (NNC's layer name), when it has one


@dataclass
class Network:
    """An engine module built from a spec, with the shape of every leaf layer."""

    spec: dict[str, Any]
    module: Sequential
    input_shape: Shape
    output_shape: Shape
    layers: list[BuiltLayer] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.spec.get("name", "network"))


def _ints(value: Any, n: int, key: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * n
    if isinstance(value, Sequence) and not isinstance(value, str) and all(isinstance(v, int) for v in value):
        if len(value) != n:
            msg = f"'{key}' has {len(value)} entries, expected {n}"
            raise SpecError(msg)
        return tuple(value)
    msg = f"'{key}' has value {value!r}. Not an integer or a list of integers."
    raise SpecError(msg)


def _spatial(shape: Shape, layer: str) -> int:
    if len(shape) < 2:
        msg = f"{layer} needs (channels, *spatial) input, got shape {shape}"
        raise SpecError(msg)
    return len(shape) - 1


# -- one builder per layer type: (params, input shape) → module ------------------------
def _window(p: dict, nd: int) -> dict[str, Any]:
    """Kernel geometry shared by the convolution family: pad, stride, dilation, bias."""
    return {
        "pad": _ints(p.pop("pad", 0), nd, "pad"),
        "stride": _ints(p.pop("stride", 1), nd, "stride"),
        "dilation": _ints(p.pop("dilation", 1), nd, "dilation"),
        "with_bias": p.pop("with_bias", True),
    }


def _conv(p: dict, shape: Shape) -> Module:
    nd = _spatial(shape, "Convolution")
    outmaps, kernel = p.pop("outmaps"), _ints(p.pop("kernel"), nd, "kernel")
    return L.Convolution(
        shape[0], outmaps, kernel, group=p.pop("group", 1), border_mode=p.pop("border_mode", None), **_window(p, nd)
    )


def _depthwise(p: dict, shape: Shape) -> Module:
    nd = _spatial(shape, "DepthwiseConvolution")
    kernel = _ints(p.pop("kernel"), nd, "kernel")
    return L.DepthwiseConvolution(
        shape[0], kernel, multiplier=p.pop("multiplier", 1), border_mode=p.pop("border_mode", None), **_window(p, nd)
    )


def _deconv(p: dict, shape: Shape) -> Module:
    nd = _spatial(shape, "Deconvolution")
    outmaps, kernel = p.pop("outmaps"), _ints(p.pop("kernel"), nd, "kernel")
    return L.Deconvolution(
        shape[0],
        outmaps,
        kernel,
        group=p.pop("group", 1),
        output_padding=_ints(p.pop("output_padding", 0), nd, "output_padding"),
        **_window(p, nd),
    )


def _affine(p: dict, shape: Shape) -> Module:
    n = 1
    for s in shape:
        n *= s
    return L.Affine(n, p.pop("n_outmaps"), with_bias=p.pop("with_bias", True))


def _pool(cls: type) -> Callable[[dict, Shape], Module]:
    def build(p: dict, shape: Shape) -> Module:
        nd = _spatial(shape, cls.__name__)
        kernel = _ints(p.pop("kernel"), nd, "kernel")
        stride = p.pop("stride", None)
        return cls(
            kernel,
            None if stride is None else _ints(stride, nd, "stride"),
            pad=_ints(p.pop("pad", 0), nd, "pad"),
            ignore_border=p.pop("ignore_border", True),
        )

    return build


def _simple(factory: Callable[..., Module], **defaults: Any) -> Callable[[dict, Shape], Module]:
    def build(p: dict, shape: Shape) -> Module:
        kwargs = {k: p.pop(k, v) for k, v in defaults.items()}
        return factory(**kwargs)

    return build


BUILDERS: dict[str, Callable[[dict, Shape], Module]] = {
    "Affine": _affine,
    "Convolution": _conv,
    "DepthwiseConvolution": _depthwise,
    "Deconvolution": _deconv,
    "BatchNormalization": lambda p, s: L.BatchNormalization(
        s[0], decay_rate=p.pop("decay_rate", 0.9), eps=p.pop("eps", 1e-4)
    ),
    "PReLU": lambda p, s: L.PReLU(1 if p.pop("shared", True) else s[0], init=p.pop("init", 0.25)),
    "ReLU": _simple(L.ReLU),
    "LeakyReLU": _simple(L.LeakyReLU, alpha=0.1),
    "ELU": _simple(L.ELU, alpha=1.0),
    "SELU": _simple(L.SELU),
    "Swish": _simple(L.Swish),
    "GELU": _simple(L.GELU, approximate="none"),
    "Tanh": _simple(L.Tanh),
    "Sigmoid": _simple(L.Sigmoid),
    "Softmax": _simple(L.Softmax, axis=1),
    "LogSoftmax": _simple(L.LogSoftmax, axis=1),
    "MaxPooling": _pool(L.MaxPooling),
    "AveragePooling": _pool(L.AveragePooling),
    "SumPooling": _pool(L.SumPooling),
    "GlobalAveragePooling": _simple(L.GlobalAveragePooling),
    "Unpooling": lambda p, s: L.Unpooling(_ints(p.pop("kernel"), _spatial(s, "Unpooling"), "kernel")),
    "Upsample": lambda p, s: L.Upsample(
        _ints(p.pop("scale", 2), _spatial(s, "Upsample"), "scale"), mode=p.pop("mode", "nearest")
    ),
    "MulScalar": lambda p, s: L.MulScalar(value=float(p.pop("value"))),
    "AddScalar": lambda p, s: L.AddScalar(value=float(p.pop("value"))),
    "Transpose": lambda p, s: L.Transpose(p.pop("axes")),
    "Slice": lambda p, s: L.Slice(p.pop("start"), p.pop("stop"), p.pop("step", None)),
    "Flatten": _simple(L.Flatten),
    "Reshape": lambda p, s: L.Reshape(tuple(p.pop("shape"))),
    "Dropout": _simple(L.Dropout, p=0.5),
    "Identity": _simple(L.Identity),
}
CONTAINERS = ("Residual", "Concat")
LAYER_TYPES = tuple(sorted(BUILDERS)) + CONTAINERS


def load_spec(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """Read a spec from a mapping, a ``.yaml``/``.yml``/``.json`` file or a YAML/JSON string."""
    if isinstance(source, Mapping):
        return json.loads(json.dumps(source))  # deep copy, JSON-compatible
    path = Path(source) if not isinstance(source, str) or "\n" not in source else None
    if path is not None and path.exists():
        text, where = path.read_text(encoding="utf-8"), str(path)
    elif isinstance(source, str) and ("\n" in source or source.lstrip().startswith("{")):
        text, where = source, "<string>"
    else:
        msg = f"network spec file {source} does not exist"
        raise SpecError(msg)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        msg = f"{where}: not valid YAML/JSON: {exc}"
        raise SpecError(msg) from exc
    if not isinstance(data, dict):
        msg = f"{where}: a network spec must be a mapping with 'input' and 'layers'"
        raise SpecError(msg)
    return data


_budget: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("parameter_budget", default=None)


def _parameters_of(kind: str, p: dict, shape: Shape) -> int:
    """A layer's parameter count from its spec, before anything is allocated (0 where small)."""
    try:
        if kind == "Affine":
            outs = p["n_outmaps"]
            n_out = math.prod(outs) if isinstance(outs, Sequence) else int(outs)
            return math.prod(shape) * n_out + n_out
        if kind in ("Convolution", "Deconvolution"):
            kernel = p["kernel"]
            k = math.prod(kernel) if isinstance(kernel, Sequence) else int(kernel) ** (len(shape) - 1)
            return shape[0] // int(p.get("group", 1)) * int(p["outmaps"]) * k + int(p["outmaps"])
        if kind == "DepthwiseConvolution":
            kernel = p["kernel"]
            k = math.prod(kernel) if isinstance(kernel, Sequence) else int(kernel) ** (len(shape) - 1)
            return shape[0] * int(p.get("multiplier", 1)) * k
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return 0  # malformed: the layer's builder names what is wrong
    return 0


def _charge(kind: str, p: dict, shape: Shape, label: str) -> None:
    budget = _budget.get()
    if budget is None:
        return
    budget[0] -= _parameters_of(kind, p, shape)
    if budget[0] < 0:
        msg = f"{label}: the network would have more than {budget[1]:,} parameters, the limit here"
        raise SpecError(msg)


def build(source: str | Path | Mapping[str, Any], max_parameters: int | None = None) -> Network:
    """Build an engine network from a spec, inferring every shape without data. With
    ``max_parameters``, a network over that size is refused before its weights are allocated."""
    token = _budget.set(None if max_parameters is None else [max_parameters, max_parameters])
    try:
        return _build(source)
    finally:
        _budget.reset(token)


def _build(source: str | Path | Mapping[str, Any]) -> Network:
    spec = load_spec(source)
    unknown = set(spec) - {"name", "input", "layers", "description"}
    if unknown:
        msg = f"network spec has unknown key {sorted(unknown)[0]!r}; allowed: description, input, layers, name"
        raise SpecError(msg)
    if "input" not in spec or "layers" not in spec:
        msg = "network spec needs 'input' (shape without batch) and 'layers'"
        raise SpecError(msg)
    raw_input = spec["input"]
    if (
        not isinstance(raw_input, list)
        or not raw_input
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in raw_input)
    ):
        msg = f"'input' has value {raw_input!r}. Not a list of positive integers."
        raise SpecError(msg)
    built: list[BuiltLayer] = []
    module, out = _build_sequence(spec["layers"], tuple(raw_input), "layers", built)
    return Network(spec=spec, module=module, input_shape=tuple(raw_input), output_shape=out, layers=built)


def output_shape(layers: list[dict[str, Any]], in_shape: Sequence[int]) -> Shape:
    """The output shape of spec layers applied to ``in_shape`` (an importer's shape inference;
    Affine layers are not allocated, so a large classifier head costs nothing here)."""
    shape = tuple(in_shape)
    for i, item in enumerate(layers):
        if isinstance(item, dict) and item.get("type") == "Affine" and isinstance(item.get("n_outmaps"), int):
            shape = (item["n_outmaps"],)
            continue
        _, shape = _build_layer(item, shape, f"layers[{i}]", [])
    return shape


def _build_sequence(items: Any, shape: Shape, path: str, built: list[BuiltLayer]) -> tuple[Sequential, Shape]:
    if not isinstance(items, list) or not items:
        msg = f"{path} must be a non-empty list of layers"
        raise SpecError(msg)
    modules = []
    for i, item in enumerate(items):
        module, shape = _build_layer(item, shape, f"{path}[{i}]", built)
        modules.append(module)
    return Sequential(*modules), shape


def _build_layer(item: Any, shape: Shape, path: str, built: list[BuiltLayer]) -> tuple[Module, Shape]:
    if not isinstance(item, dict) or "type" not in item:
        msg = f"{path} must be a mapping with a 'type', got {item!r}"
        raise SpecError(msg)
    params = dict(item)
    kind = params.pop("type")
    name = str(params.pop("name", ""))
    label = f"{path} ({kind}{' ' + repr(name) if name else ''})"
    if kind == "Residual":
        body, main = _build_sequence(params.pop("body", None), shape, f"{path}.body", built)
        shortcut, side = (None, shape)
        if params.get("shortcut") is not None:
            shortcut, side = _build_sequence(params.pop("shortcut"), shape, f"{path}.shortcut", built)
        params.pop("shortcut", None)
        _no_leftovers(params, label)
        if main != side:
            msg = f"{label}: residual body gives {main} but the shortcut gives {side}"
            raise SpecError(msg)
        module = Residual(body, shortcut)
        built.append(BuiltLayer(f"{path}.add", "Add", module, shape, main, name))
        return module, main
    if kind == "Concat":
        branches = params.pop("branches", None)
        if not isinstance(branches, list) or len(branches) < 2:
            msg = f"{label}: 'branches' must list at least two layer lists"
            raise SpecError(msg)
        built_branches = [_build_sequence(b, shape, f"{path}.branches[{j}]", built) for j, b in enumerate(branches)]
        _no_leftovers(params, label)
        module = Concat(*(m for m, _ in built_branches), axis=1)
        try:
            out = module.output_shape(shape)
        except ValueError as exc:
            msg = f"{label}: {exc}"
            raise SpecError(msg) from exc
        built.append(BuiltLayer(path, "Concat", module, shape, out, name))
        return module, out
    if kind not in BUILDERS:
        msg = f"{path}: unknown layer type {kind!r}; known: {', '.join(LAYER_TYPES)}"
        raise SpecError(msg)
    _charge(kind, params, shape, label)
    try:
        module = BUILDERS[kind](params, shape)
        _no_leftovers(params)
        out = module.output_shape(shape)
    except KeyError as exc:
        msg = f"{label}: missing parameter {exc.args[0]!r}"
        raise SpecError(msg) from exc
    except (ValueError, TypeError) as exc:
        msg = f"{label}: {exc}"
        raise SpecError(msg) from exc
    built.append(BuiltLayer(path, kind, module, shape, out, name))
    return module, out


def _no_leftovers(params: dict, label: str = "") -> None:
    if params:
        msg = f"{label + ': ' if label else ''}unknown parameter {sorted(params)[0]!r}"
        raise SpecError(msg)
