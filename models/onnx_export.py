"""ONNX export of engine networks (opset 17), checked by ``onnx.checker``.

Exports the inference graph only (no loss; batch normalization with running statistics;
dropout removed). Each engine module maps to ONNX nodes; pooling with NNC's border rules is
written as an explicit ``Pad`` followed by the pooling, so the exported graph reproduces the
engine's numbers exactly rather than relying on ONNX's ``ceil_mode`` conventions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from engine import Concat, Module, Residual, Sequential
from engine import layers as L
from engine.functions.pooling import average_divisor, pool_geometry

OPSET = 17


class ExportError(ValueError):
    """A module has no ONNX mapping."""


class GraphBuilder:
    """Collects nodes and initializers; names are unique within the graph."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.counter = 0

    def name(self, hint: str) -> str:
        self.counter += 1
        return f"{hint}_{self.counter}"

    def const(self, value: np.ndarray, hint: str) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], hint: str | None = None, **attrs) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def node_outputs(self, op_type: str, inputs: Sequence[str], hints: Sequence[str], **attrs) -> list[str]:
        """A node with several outputs (e.g. TopK's values and indices); returns their names."""
        outs = [self.name(h) for h in hints]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=outs[0], **attrs))
        return outs


def _pads(pads: Sequence[tuple[int, int]]) -> list[int]:
    return [lo for lo, _ in pads] + [hi for _, hi in pads]


def _affine(g: GraphBuilder, m: L.Affine, x: str) -> str:
    flat = g.op("Flatten", [x], axis=1)
    inputs = [flat, g.const(m.W.data, "W")] + ([g.const(m.b.data, "b")] if m.b is not None else [])
    return g.op("Gemm", inputs, "affine")


def _conv_inputs(g: GraphBuilder, m: L.Convolution | L.Deconvolution, x: str) -> tuple[list[str], dict]:
    inputs = [x, g.const(m.W.data, "W")] + ([g.const(m.b.data, "b")] if m.b is not None else [])
    attrs = {
        "kernel_shape": list(m.kernel),
        "pads": _pads(m.pads),
        "strides": list(m.stride),
        "dilations": list(m.dilation),
        "group": m.group,
    }
    return inputs, attrs


def _conv(g: GraphBuilder, m: L.Convolution, x: str) -> str:
    inputs, attrs = _conv_inputs(g, m, x)
    return g.op("Conv", inputs, "conv", **attrs)


def _deconv(g: GraphBuilder, m: L.Deconvolution, x: str) -> str:
    inputs, attrs = _conv_inputs(g, m, x)
    return g.op("ConvTranspose", inputs, "deconv", output_padding=list(m.output_padding), **attrs)


def _batchnorm(g: GraphBuilder, m: L.BatchNormalization, x: str) -> str:
    inputs = [x] + [
        g.const(a, n)
        for a, n in ((m.gamma.data, "gamma"), (m.beta.data, "beta"), (m.running_mean, "mean"), (m.running_var, "var"))
    ]
    return g.op("BatchNormalization", inputs, "bn", epsilon=float(m.eps))


def _prelu(g: GraphBuilder, m: L.PReLU, x: str, rank: int) -> str:
    slope = m.slope.data.reshape(-1, *([1] * (rank - 2))) if m.n_channels > 1 else m.slope.data
    return g.op("PRelu", [x, g.const(slope.astype(np.float32), "slope")])


def _elementwise(g: GraphBuilder, m: Module, x: str) -> str:
    kind, cfg = type(m).__name__, getattr(m, "config", {})
    if kind in ("MulScalar", "AddScalar"):
        value = g.const(np.float32(cfg["value"]), "value")
        return g.op(kind[:3], [x, value], kind.lower())
    if kind == "Swish":
        return g.op("Mul", [x, g.op("Sigmoid", [x])], "swish")
    if kind == "GELU":
        half = g.const(np.float32(0.5), "half")
        one = g.const(np.float32(1.0), "one")
        if cfg.get("approximate") == "tanh":  # nnabla's form
            cube = g.op("Mul", [g.op("Mul", [x, x]), x])
            inner = g.op("Add", [x, g.op("Mul", [cube, g.const(np.float32(0.044715), "c")])])
            t = g.op("Tanh", [g.op("Mul", [inner, g.const(np.float32(math.sqrt(2 / math.pi)), "k")])])
            return g.op("Mul", [g.op("Mul", [x, half]), g.op("Add", [t, one])], "gelu")
        erf = g.op("Erf", [g.op("Mul", [x, g.const(np.float32(1 / math.sqrt(2)), "rsqrt2")])])
        return g.op("Mul", [g.op("Mul", [x, half]), g.op("Add", [erf, one])], "gelu")
    simple = {
        "ReLU": ("Relu", {}),
        "Tanh": ("Tanh", {}),
        "Sigmoid": ("Sigmoid", {}),
        "LeakyReLU": ("LeakyRelu", {"alpha": float(cfg.get("alpha", 0.1))}),
        "ELU": ("Elu", {"alpha": float(cfg.get("alpha", 1.0))}),
        "SELU": (
            "Selu",
            {
                "alpha": float(cfg.get("alpha", 1.6732632423543772)),
                "gamma": float(cfg.get("scale", 1.0507009873554805)),
            },
        ),
        "Softmax": ("Softmax", {"axis": int(cfg.get("axis", 1))}),
        "LogSoftmax": ("LogSoftmax", {"axis": int(cfg.get("axis", 1))}),
    }
    if kind not in simple:
        msg = f"no ONNX mapping for {kind}"
        raise ExportError(msg)
    op_type, attrs = simple[kind]
    return g.op(op_type, [x], kind.lower(), **attrs)


def _pool(g: GraphBuilder, m: L.MaxPooling, x: str, in_shape: tuple[int, ...]) -> str:
    """Pad explicitly to the engine's geometry, then pool without padding."""
    out, used = pool_geometry(in_shape[1:], m.kernel, m.stride, m.pads, m.ignore_border)
    is_max = isinstance(m, L.MaxPooling)
    if any(lo or hi for lo, hi in used):
        pads = [0, 0] + [lo for lo, _ in used] + [0, 0] + [hi for _, hi in used]
        fill = g.const(np.float32(-np.inf if is_max else 0.0), "fill")
        x = g.op("Pad", [x, g.const(np.array(pads, np.int64), "pads"), fill], "pad", mode="constant")
    attrs = {"kernel_shape": list(m.kernel), "strides": list(m.stride)}
    if is_max:
        return g.op("MaxPool", [x], "maxpool", **attrs)
    window = float(np.prod(m.kernel))
    summed = g.op("Mul", [g.op("AveragePool", [x], "avgpool", **attrs), g.const(np.float32(window), "k")], "sumpool")
    if isinstance(m, L.SumPooling):
        return summed
    # the engine's divisor: counted cells per window (explicit padding counted, extra border not)
    counts = average_divisor(in_shape[1:], m.kernel, m.stride, m.pads, m.ignore_border)
    return g.op("Div", [summed, g.const(counts.reshape(1, 1, *out).astype(np.float32), "counts")], "avg")


def _resize(g: GraphBuilder, scale: Sequence[int], x: str, mode: str) -> str:
    scales = g.const(np.array([1.0, 1.0, *scale], np.float32), "scales")
    if mode == "nearest":
        return g.op(
            "Resize",
            [x, "", scales],
            "upsample",
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )
    return g.op("Resize", [x, "", scales], "upsample", mode="linear", coordinate_transformation_mode="half_pixel")


def emit(g: GraphBuilder, m: Module, x: str, in_shape: tuple[int, ...]) -> str:
    """Append the nodes computing ``m(x)``; ``in_shape`` excludes the batch. Returns the output name."""
    rank = len(in_shape) + 1
    if isinstance(m, Sequential):
        for layer in m.layers:
            x, in_shape = emit(g, layer, x, in_shape), layer.output_shape(in_shape)
        return x
    if isinstance(m, Residual):
        main = emit(g, m.body, x, in_shape)
        side = x if m.shortcut is None else emit(g, m.shortcut, x, in_shape)
        return g.op("Add", [main, side], "residual")
    if isinstance(m, Concat):
        return g.op("Concat", [emit(g, b, x, in_shape) for b in m.branches], "concat", axis=m.axis)
    handlers: dict[type, Callable[[], str]] = {
        L.Affine: lambda: _affine(g, m, x),
        L.Convolution: lambda: _conv(g, m, x),
        L.DepthwiseConvolution: lambda: _conv(g, m, x),
        L.Deconvolution: lambda: _deconv(g, m, x),
        L.BatchNormalization: lambda: _batchnorm(g, m, x),
        L.PReLU: lambda: _prelu(g, m, x, rank),
        L.MaxPooling: lambda: _pool(g, m, x, in_shape),
        L.AveragePooling: lambda: _pool(g, m, x, in_shape),
        L.SumPooling: lambda: _pool(g, m, x, in_shape),
        L.GlobalAveragePooling: lambda: g.op("GlobalAveragePool", [x]),
        L.Unpooling: lambda: _resize(g, m.kernel, x, "nearest"),
        L.Upsample: lambda: _resize(g, m.scale, x, m.mode),
        L.Flatten: lambda: g.op("Flatten", [x], axis=1),
        L.Transpose: lambda: g.op("Transpose", [x], perm=[0, *(a + 1 for a in m.axes)]),
        L.Slice: lambda: g.op(
            "Slice",
            [x, *(g.const(np.array(v, np.int64), n) for v, n in ((m.start, "starts"), (m.stop, "ends")))]
            + [
                g.const(np.arange(1, len(m.start) + 1, dtype=np.int64), "axes"),
                g.const(np.array(m.step, np.int64), "steps"),
            ],
        ),
        L.Reshape: lambda: g.op("Reshape", [x, g.const(np.array([0, *m.shape], np.int64), "shape")]),
        L.Dropout: lambda: x,
        L.Identity: lambda: x,
    }
    handler = handlers.get(type(m))
    if handler is not None:
        return handler()
    if isinstance(m, L.Elementwise):
        return _elementwise(g, m, x)
    msg = f"no ONNX mapping for module {type(m).__name__}"
    raise ExportError(msg)


def finish(
    g: GraphBuilder,
    name: str,
    input_shape: Sequence[int],
    outputs: Sequence[tuple[str, str, Sequence[int]]],
    doc: str = "",
) -> onnx.ModelProto:
    """Name the graph's outputs ``(edge, output name, shape without batch)`` and check the model."""
    for edge, out_name, _ in outputs:
        g.nodes.append(helper.make_node("Identity", [edge], [out_name], name=f"{out_name}_out"))
    graph = helper.make_graph(
        g.nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *input_shape])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", *shape]) for _, n, shape in outputs],
        g.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="anomaly-appliance", doc_string=doc
    )
    model.ir_version = 8  # readable by every onnxruntime that supports opset 17
    onnx.checker.check_model(model, full_check=True)
    return model


def to_onnx(module: Module, input_shape: Sequence[int], name: str = "network", doc: str = "") -> onnx.ModelProto:
    """Export ``module`` (in eval mode) for inputs ``(batch, *input_shape)``; one output ``output``."""
    module.eval()
    g = GraphBuilder()
    out = emit(g, module, "input", tuple(input_shape))
    return finish(g, name, input_shape, [(out, "output", module.output_shape(tuple(input_shape)))], doc)
