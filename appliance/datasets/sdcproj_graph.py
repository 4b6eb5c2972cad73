"""An NNC project's network (``[Layer_i]`` / ``[Link_i]``) as graph nodes of our spec layers.

Layers are visited in the order their inputs are ready, so that every property can be evaluated
where NNC evaluates it: values are numbers, lists, references to another property (``*KernelShape``)
or expressions over the layer's input shape and the network's arguments (``Input[0]*2``, ``n-1``,
``ConvMaps/4``). A ``Unit`` layer is replaced by the network it names, its properties binding that
network's ``Argument`` layers. Only layers the trained output depends on must be supported; every
one that is not is named in one error.
"""

from __future__ import annotations

import ast
import math
import operator
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from appliance.datasets.nnc_graph import Node, add_chain

LOSSES = {
    "BinaryCrossEntropy",
    "SigmoidCrossEntropy",
    "SoftmaxCrossEntropy",
    "CategoricalCrossEntropy",
    "SquaredError",
    "AbsoluteError",
    "HuberLoss",
    "EpsilonInsensitiveLoss",
    "KLMultinomial",
}
AUGMENTATION = {"ImageAugmentation", "RandomFlip", "RandomShift", "RandomCrop"}  # training-time only
NOT_LAYERS = {"Comment", "Argument"}
REDUCTIONS = {"Max": "max", "Mean": "mean"}  # a side output's reduction of the squared error


class SdcprojError(ValueError):
    """A malformed or unsupported NNC project; the message names the file and section."""


@dataclass
class Layer:
    section: str
    id: str
    type: str
    props: dict[str, str]

    @property
    def name(self) -> str:
        return self.props.get("Name", self.section)

    @property
    def label(self) -> str:
        return f"[{self.section}] {self.type} {self.name!r}"

    def raw(self, key: str, default: str | None = None) -> str | None:
        """A property's text, following NNC's ``*Other`` references to another property."""
        value, seen = self.props.get(key, default), set()
        while isinstance(value, str) and value.startswith("*") and value[1:] in self.props and value not in seen:
            seen.add(value)
            value = self.props[value[1:]]
        return value


@dataclass
class Network:
    name: str
    layers: list[Layer]
    links: list[tuple[str, int, str, int]]  # (source id, pin, destination id, pin)


_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


class Values:
    """Property values of one layer, evaluated against its input shape and the arguments in scope."""

    def __init__(self, layer: Layer, env: dict[str, list[float]], input_shape: list[int] | None) -> None:
        self.layer, self.env, self.input = layer, env, input_shape or []

    def numbers(self, key: str, default: str | None = None) -> list[float]:
        text = self.layer.raw(key, default)
        if text is None or str(text).strip() == "":
            if default is None:
                msg = f"{self.layer.label}: property {key} is missing"
                raise SdcprojError(msg)
            text = default
        text = str(text).strip()
        if text.startswith("*"):  # a derived value: the input's shape, or an argument of the network
            if text[1:] == "Input":
                return [float(d) for d in self.input]
            text = text[1:]
        try:
            tree = ast.parse(f"({text.rstrip(',')},)", mode="eval")
            out: list[float] = []
            for node in tree.body.elts:  # an argument holding a list (PIntArray) is spliced in
                value = self._eval(node)
                out.extend(value if isinstance(value, list) else [value])
            return out
        except (SyntaxError, ValueError, TypeError, ZeroDivisionError, IndexError, KeyError) as exc:
            detail = f" ({exc})" if str(exc) else ""
            msg = f"{self.layer.label}: property {key} is {text!r}, not a value we can evaluate{detail}"
            raise SdcprojError(msg) from None

    def _eval(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):  # True / False are 1 / 0
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](self._scalar(node.left), self._scalar(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            value = self._scalar(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "Input":
            return self.input[int(self._scalar(node.slice))]
        if isinstance(node, ast.Name) and node.id in self.env:
            value = self.env[node.id]
            return value[0] if len(value) == 1 else list(value)
        if isinstance(node, ast.Name):
            msg = f"unknown name {node.id!r}"
            raise KeyError(msg)
        msg = f"unsupported syntax {ast.dump(node)[:40]}"
        raise ValueError(msg)

    def _scalar(self, node: ast.AST) -> float:
        value = self._eval(node)
        if isinstance(value, list):
            msg = "a list where a number is needed"
            raise ValueError(msg)
        return value

    def ints(self, key: str, default: str | None = None) -> list[int]:
        values = self.numbers(key, default)
        if any(abs(v - round(v)) > 1e-9 for v in values):
            msg = f"{self.layer.label}: property {key} evaluates to {values}, not whole numbers"
            raise SdcprojError(msg)
        return [round(v) for v in values]

    def int(self, key: str, default: int) -> int:
        return self.ints(key, str(default))[0] if self.layer.raw(key) not in (None, "") else default

    def number(self, key: str, default: float) -> float:
        return self.numbers(key, str(default))[0] if self.layer.raw(key) not in (None, "") else default

    def flag(self, key: str, default: bool) -> bool:
        value = self.layer.raw(key)
        return default if value in (None, "") else str(value).strip().lower() in ("true", "1")


# -- one NNC layer → spec layers ---------------------------------------------------------------
def _geometry(v: Values, nd: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    stride, dilation = v.ints("Strides", ",".join(["1"] * nd)), v.ints("Dilation", ",".join(["1"] * nd))
    if any(s != 1 for s in stride):
        out["stride"] = stride
    if any(d != 1 for d in dilation):
        out["dilation"] = dilation
    return {**out, **_bias(v)}


def _bias(v: Values) -> dict[str, Any]:
    return {} if v.flag("WithBias", True) else {"with_bias": False}


def _padding(v: Values, nd: int) -> dict[str, Any]:
    raw = v.layer.props.get("Padding", "")
    if raw in ("*ConvolutionPaddingSize", "") and v.layer.raw("BorderMode"):
        return {"border_mode": v.layer.raw("BorderMode")}
    pad = v.ints("Padding", ",".join(["0"] * nd))
    return {"pad": pad} if any(pad) else {}


def _channel_axis(v: Values, key: str) -> bool:
    """NNC counts axes after the batch: 0 is the channel axis (also the default)."""
    return v.layer.raw(key) in (None, "") or v.ints(key)[0] == 0


def layer_specs(v: Values, notes: list[str]) -> list[tuple[str, dict[str, Any], None]] | None:
    """The spec layers one NNC layer becomes (``[]``: a pass-through), None when we have none."""
    t, name = v.layer.type, v.layer.name
    named: dict[str, Any] = {"name": name}
    if t == "Affine":
        shape = v.ints("OutShape")
        out = [("Affine", {**named, "n_outmaps": math.prod(shape), **_bias(v)}, None)]
        return out + ([("Reshape", {"name": f"{name}.shape", "shape": shape}, None)] if len(shape) > 1 else [])
    if t in ("Convolution", "DepthwiseConvolution"):
        kernel = v.ints("KernelShape")
        p = {**named, "kernel": kernel, **_padding(v, len(kernel)), **_geometry(v, len(kernel))}
        if t == "Convolution":
            p["outmaps"] = v.int("OutMaps", 0)
            if v.int("Group", 1) != 1:
                p["group"] = v.int("Group", 1)
        elif v.int("Multiplier", 1) != 1:
            p["multiplier"] = v.int("Multiplier", 1)
        return [(t, p, None)]
    if t == "Deconvolution":
        kernel = v.ints("KernelShape")
        p = {**named, "outmaps": v.int("OutMaps", 0), "kernel": kernel, **_geometry(v, len(kernel))}
        for key, ours in (("Padding", "pad"), ("OutputPadding", "output_padding")):
            values = v.ints(key, ",".join(["0"] * len(kernel)))
            if any(values):
                p[ours] = values
        if v.int("Group", 1) != 1:
            p["group"] = v.int("Group", 1)
        return [(t, p, None)]
    if t in ("MaxPooling", "AveragePooling", "SumPooling"):
        kernel = v.ints("KernelShape")
        stride, pad = v.ints("Strides", ",".join(map(str, kernel))), v.ints("Padding", ",".join(["0"] * len(kernel)))
        if t == "AveragePooling" and any(pad) and not v.flag("IncludingPad", True):
            return None
        p: dict[str, Any] = {**named, "kernel": kernel}
        if stride != kernel:
            p["stride"] = stride
        if any(pad):
            p["pad"] = pad
        if not v.flag("IgnoreBorder", True):
            p["ignore_border"] = False
        return [(t, p, None)]
    if t in ("GlobalAveragePooling", "ReLU", "Tanh", "Sigmoid", "Swish", "Identity"):
        return [(t, named, None)]
    if t == "GELU":
        return [(t, {**named, "approximate": "tanh"}, None)]  # NNC's GELU is nnabla's, the tanh form
    if t == "Unpooling":
        return [(t, {**named, "kernel": v.ints("KernelShape")}, None)]
    if t == "BatchNormalization":
        if not _channel_axis(v, "Axes"):
            return None
        p = dict(named)
        decay, eps = v.number("DecayRate", 0.9), v.number("Epsilon", 1e-4)
        if decay != 0.9:
            p["decay_rate"] = decay
        if eps != 1e-4:
            p["eps"] = eps
        return [(t, p, None)]
    if t in ("Softmax", "LogSoftmax"):
        return [(t, named, None)] if _channel_axis(v, "Axis") else None
    if t in ("LeakyReLU", "ELU"):
        return [(t, {**named, "alpha": v.number("Alpha", 0.1 if t == "LeakyReLU" else 1.0)}, None)]
    if t == "SELU":
        standard = abs(v.number("Scale", 1.0507) - 1.0507) < 1e-3 and abs(v.number("Alpha", 1.6733) - 1.6733) < 1e-3
        return [(t, named, None)] if standard else None
    if t == "PReLU":
        return [(t, {**named, "shared": v.int("BaseAxis", 0) != 0}, None)]
    if t == "Dropout":
        return [(t, {**named, "p": v.number("P", 0.5)}, None)]
    if t == "Reshape":
        return [(t, {**named, "shape": v.ints("OutShape")}, None)]
    if t == "Transpose":
        return [(t, {**named, "axes": v.ints("Axes")}, None)]
    if t == "Slice":
        start, stop = v.ints("Start"), v.ints("Stop")
        return [
            (t, {**named, "start": start, "stop": stop, "step": v.ints("Step", ",".join(["1"] * len(start)))}, None)
        ]
    if t in ("MulScalar", "AddScalar"):
        return [(t, {**named, "value": v.number("Value", 1.0 if t == "MulScalar" else 0.0)}, None)]
    if t == "RSubScalar":  # value - x
        return [
            ("MulScalar", {"name": f"{name}.negate", "value": -1.0}, None),
            ("AddScalar", {**named, "value": v.number("Value", 1.0)}, None),
        ]
    if t in AUGMENTATION:
        shape = v.ints("Shape", ",".join(map(str, v.input))) if t == "ImageAugmentation" else v.input
        if list(shape) != list(v.input):
            return None  # it crops or resizes: we have no layer for that
        notes.append(f"{v.layer.label} is training-time augmentation; left out (it does nothing at inference)")
        return []
    return None


# -- the graph -----------------------------------------------------------------------------------
@dataclass
class Loss:
    layer: Layer
    source: str  # the layer id feeding it (in its network)
    zeroed: bool  # multiplied by 0 afterwards: NNC's way to output a side value


@dataclass
class Built:
    nodes: dict[str, Node]
    input_node: str
    input_layer: Layer
    output_node: str
    output_shape: list[int]
    loss: Loss
    side_outputs: list[tuple[str, str]] = field(default_factory=list)  # (name, reduction)


class ProjectGraph:
    """Builds the nodes of a project's trained network, expanding units."""

    def __init__(self, networks: dict[str, Network], notes: list[str]) -> None:
        self.networks, self.notes = networks, notes
        self.nodes: dict[str, Node] = {}
        self.unsupported: list[str] = []

    def build(self, name: str) -> Built:
        net = self.networks[name]
        by_id = {layer.id: layer for layer in net.layers}
        inputs, consumers = _edges(net, by_id)
        losses = [
            Loss(layer, _source(inputs, layer), _zeroed(layer, consumers, by_id))
            for layer in net.layers
            if layer.type in LOSSES
        ]
        trained = [loss for loss in losses if not loss.zeroed]
        if len(trained) != 1:
            found = ", ".join(loss.layer.label for loss in trained) or "none"
            msg = f"network {name!r} needs exactly one loss layer that trains (not multiplied by 0); found {found}"
            raise SdcprojError(msg)
        loss = trained[0]
        sides = [s for s in (self._side_output(side, inputs, by_id) for side in losses if side.zeroed) if s]
        done = self._expand(net, {}, None, "", loss.source)
        if self.unsupported:
            msg = f"layers we do not have: {'; '.join(self.unsupported)}"
            raise SdcprojError(msg)
        entries = [layer for layer in net.layers if layer.type == "Input" and layer.id in done.visited]
        if len(entries) != 1:
            msg = f"network {name!r} needs exactly one Input layer feeding its output; found {len(entries)}"
            raise SdcprojError(msg)
        node, shape = done.out[loss.source]
        return Built(self.nodes, entries[0].id, entries[0], node, shape, loss, sides)

    def _side_output(self, side: Loss, inputs: dict, by_id: dict[str, Layer]) -> tuple[str, str] | None:
        """The sine tutorial's score: a loss multiplied by 0 over Max/Mean ← PowScalar 2 ← Sub2."""
        name = side.layer.raw("T.Dataset") or side.layer.name
        chain = [by_id.get(side.source)]
        while chain[-1] is not None and chain[-1].type in (*REDUCTIONS, "PowScalar") and len(chain) < 3:
            chain.append(by_id.get(_source(inputs, chain[-1])))
        kinds = [layer.type if layer else None for layer in chain]
        if kinds[:1] and kinds[0] in REDUCTIONS and kinds[1:] == ["PowScalar", "Sub2"]:
            reduction = REDUCTIONS[kinds[0]]
            self.notes.append(
                f"{side.layer.label}: side output {name!r} is the {reduction} squared error over the input; "
                "imported as the anomaly score"
            )
            return name, REDUCTIONS[kinds[0]]
        self.notes.append(
            f"{side.layer.label} is multiplied by 0: a side output ({name}) that trains nothing; not imported"
        )
        return None

    def _expand(
        self, net: Network, env: dict[str, list[float]], entry: tuple[str, list[int]] | None, prefix: str, output: str
    ) -> _Expanded:
        """Nodes for the layers ``output`` depends on, visited as their inputs become ready."""
        by_id = {layer.id: layer for layer in net.layers}
        inputs, _ = _edges(net, by_id)
        env = {**env, **self._arguments(net, env)}
        needed = _ancestors(inputs, output)
        done = _Expanded()
        for layer_id in _topological(needed, inputs):
            layer = by_id[layer_id]
            feeds = [done.out[src] for _, src in sorted(inputs.get(layer_id, [])) if src in done.out]
            done.visited.add(layer_id)
            if layer.type in NOT_LAYERS:
                continue
            if layer.type == "Input":
                if entry is not None:  # a unit's input is its caller's
                    done.out[layer_id] = entry
                else:
                    shape = Values(layer, env, None).ints("Size")
                    self.nodes[prefix + layer_id] = Node(prefix + layer_id, "Input", layer.label)
                    done.out[layer_id] = (prefix + layer_id, shape)
                continue
            if not feeds:
                continue  # fed only by layers we could not import: already named
            done.out[layer_id] = self._layer(layer, env, feeds, prefix)
        return done

    def _arguments(self, net: Network, env: dict[str, list[float]]) -> dict[str, list[float]]:
        out = {}
        for layer in net.layers:
            if layer.type == "Argument" and layer.name not in env and layer.raw("Type") != "Text":
                out[layer.name] = Values(layer, env, None).numbers("Value", "0")
        return out

    def _layer(
        self, layer: Layer, env: dict[str, list[float]], feeds: list[tuple[str, list[int]]], prefix: str
    ) -> tuple[str, list[int]]:
        node_id, (first, shape) = prefix + layer.id, feeds[0]
        values = Values(layer, env, shape)
        if layer.type == "Unit":
            return self._unit(layer, values, feeds[0], prefix)
        if layer.type in ("Add2", "Concatenate"):
            if layer.type == "Concatenate" and not _channel_axis(values, "Axis"):
                self.unsupported.append(f"{layer.label} (axis {values.ints('Axis')[0]}; only the channel axis)")
                return node_id, shape
            kind = "Add" if layer.type == "Add2" else "Concat"
            self.nodes[node_id] = Node(
                node_id, kind, layer.label, {"axis": 1} if kind == "Concat" else {}, [f for f, _ in feeds]
            )
            out = list(shape) if kind == "Add" else [sum(s[0] for _, s in feeds), *shape[1:]]
            return node_id, out
        if layer.type in ("RepeatStart", "RepeatEnd"):
            params = {"times": values.int("Times", 1)} if layer.type == "RepeatStart" else {}
            self.nodes[node_id] = Node(node_id, layer.type, layer.label, params, [first])
            return node_id, shape
        specs = layer_specs(values, self.notes)
        if specs is None:
            self.unsupported.append(layer.label)
            return first, shape
        span = add_chain(self.nodes, node_id, layer.label, specs)
        if span is None:
            return first, shape
        self.nodes[span[0]].inputs = [first]
        return span[1], _output_shape(specs, shape, layer)

    def _unit(self, layer: Layer, values: Values, feed: tuple[str, list[int]], prefix: str) -> tuple[str, list[int]]:
        name = layer.raw("Network") or ""
        net = self.networks.get(name)
        if net is None:
            self.unsupported.append(f"{layer.label} (its network {name!r} is not in the project)")
            return feed
        arguments = {a.name for a in net.layers if a.type == "Argument"}
        env = {key: values.numbers(key) for key in arguments if layer.raw(key) not in (None, "")}
        by_id = {x.id: x for x in net.layers}
        inputs, consumers = _edges(net, by_id)
        ends = [x.id for x in net.layers if x.type not in NOT_LAYERS and x.type != "Input" and not consumers.get(x.id)]
        if len(ends) != 1:
            msg = f"{layer.label}: its network {name!r} has {len(ends)} outputs; a unit needs one"
            raise SdcprojError(msg)
        done = self._expand(net, env, feed, f"{prefix}{layer.id}/", ends[0])
        return done.out.get(ends[0], feed)


@dataclass
class _Expanded:
    out: dict[str, tuple[str, list[int]]] = field(default_factory=dict)  # layer id → (node, shape)
    visited: set[str] = field(default_factory=set)


def _edges(net: Network, by_id: dict[str, Layer]) -> tuple[dict[str, list[tuple[int, str]]], dict[str, list[str]]]:
    inputs: dict[str, list[tuple[int, str]]] = defaultdict(list)
    consumers: dict[str, list[str]] = defaultdict(list)
    for src, _, dst, pin in net.links:
        for end in (src, dst):
            if end not in by_id:
                msg = f"network {net.name!r}: a link refers to layer ID {end}, which no [Layer_i] has"
                raise SdcprojError(msg)
        inputs[dst].append((pin, src))
        consumers[src].append(dst)
    return inputs, consumers


def _source(inputs: dict[str, list[tuple[int, str]]], layer: Layer) -> str:
    feeding = sorted(inputs.get(layer.id, []))
    if not feeding:
        msg = f"{layer.label} has no input"
        raise SdcprojError(msg)
    return feeding[0][1]


def _zeroed(layer: Layer, consumers: dict[str, list[str]], by_id: dict[str, Layer]) -> bool:
    for c in consumers.get(layer.id, []):
        if by_id[c].type == "MulScalar" and by_id[c].raw("Value", "1").strip() in ("0", "0.0"):
            return True
    return False


def _ancestors(inputs: dict[str, list[tuple[int, str]]], end: str) -> set[str]:
    seen, stack = set(), [end]
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(src for _, src in inputs.get(n, []))
    return seen


def _topological(needed: set[str], inputs: dict[str, list[tuple[int, str]]]) -> list[str]:
    waiting = {n: {src for _, src in inputs.get(n, []) if src in needed} for n in needed}
    order, ready = [], sorted((n for n, w in waiting.items() if not w), key=_numeric)
    while ready:
        n = ready.pop(0)
        order.append(n)
        for m, w in waiting.items():
            if n in w:
                w.discard(n)
                if not w and m not in order and m not in ready:
                    ready.append(m)
    if len(order) != len(needed):
        msg = "the layer graph has a cycle (recurrent networks cannot be imported)"
        raise SdcprojError(msg)
    return order


def _numeric(layer_id: str) -> tuple[int, str]:
    return (int(layer_id), "") if layer_id.isdigit() else (0, layer_id)


def _output_shape(specs: list[tuple[str, dict[str, Any], None]], shape: list[int], layer: Layer) -> list[int]:
    from models.spec import SpecError, output_shape

    try:
        return list(output_shape([dict(p, type=kind) for kind, p, _ in specs], shape))
    except SpecError as exc:
        msg = f"{layer.label}: {exc}"
        raise SdcprojError(msg) from exc
