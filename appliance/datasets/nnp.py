"""nnabla's trained models (``.nnp``) in and out of our model bundle.

``appliance nnc import MODEL.nnp -o model.zip`` builds the runtime network of the file's first
executor (NNC's ``MainRuntime``) as our network spec, loads its parameters and writes a bundle with
its ONNX graph, so ``appliance forward`` and the line's onnxruntime serving run it.
``appliance nnc export model.zip OUT.nnp`` writes the other way: an ``.nnp`` with a ``MainRuntime``
executor and ``parameter.h5`` that ``nnabla_cli forward`` runs.

An ``.nnp`` is a zip of ``nnp_version.txt``, protobuf text (``*.nntxt``, ``*.prototxt``) or binary
(``*.protobuf``) ``NNablaProtoBuf`` messages, and parameters in ``parameter.h5`` (one dataset per
parameter) or ``parameter.protobuf``. Functions map to our layers as NNC's do; ``Add2`` and
``Concatenate`` closing the branches of a fork become ``Residual`` and ``Concat``. Every function
on the path to the output that we do not have is named in one error.
"""

from __future__ import annotations

import io
import math
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from appliance.datasets import nnabla_proto as P
from appliance.datasets.nnc_graph import GraphError, Node, add_chain, nested_layers

NNP_VERSION = "0.1"
SpecLayer = tuple[str, dict[str, Any], dict[str, np.ndarray] | None]  # (type, params, parameters)


class NnpError(ValueError):
    """A malformed or unsupported ``.nnp``; the message names the file and the function or variable."""


@dataclass
class Nnp:
    """The messages and parameters of one ``.nnp`` file."""

    proto: Any  # the merged NNablaProtoBuf
    params: dict[str, np.ndarray]
    where: str


@dataclass
class Imported:
    network: dict[str, Any]  # our network spec
    parameters: list[dict[str, np.ndarray] | None]  # one per leaf layer, in the order the spec builds them
    input_name: str
    output_name: str
    image_normalization: bool
    last_function: str
    notes: list[str] = field(default_factory=list)


# -- reading the zip -------------------------------------------------------------------------
def read_nnp(path: str | Path) -> Nnp:
    """Every network, executor and parameter of an ``.nnp`` (several ``.nntxt`` are merged, as nnabla does)."""
    where = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        msg = f"{where}: no such file"
        raise NnpError(msg) from None
    except (zipfile.BadZipFile, OSError) as exc:
        msg = f"{where}: not an .nnp (a zip file): {exc}"
        raise NnpError(msg) from exc
    proto, params = P.new(), {}
    with zf:
        names = zf.namelist()
        for name in names:
            suffix = Path(name).suffix.lower()
            if suffix in (".nntxt", ".prototxt"):
                proto.MergeFrom(P.parse_text(_member(zf, name, where).decode("utf-8", "replace"), f"{where}:{name}"))
            elif suffix == ".protobuf":
                message = P.parse_binary(_member(zf, name, where), f"{where}:{name}")
                params.update(_protobuf_parameters(message, f"{where}:{name}"))
                del message.parameter[:]
                proto.MergeFrom(message)
            elif suffix == ".h5":
                params.update(_h5_parameters(_member(zf, name, where), f"{where}:{name}"))
    if not proto.network:
        found = ", ".join(names) or "nothing"
        msg = f"{where}: no network in the file (a .nnp holds *.nntxt or *.protobuf networks; found {found})"
        raise NnpError(msg)
    return Nnp(proto, params, where)


def _member(zf: zipfile.ZipFile, name: str, where: str) -> bytes:
    try:
        return zf.read(name)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        msg = f"{where}: member {name} is corrupt or truncated ({exc})"
        raise NnpError(msg) from exc


def _protobuf_parameters(message: Any, where: str) -> dict[str, np.ndarray]:
    out = {}
    for p in message.parameter:
        shape = tuple(p.shape.dim)
        data = np.asarray(p.data, np.float32)
        if data.size != math.prod(shape):
            msg = f"{where}: parameter {p.variable_name!r} has {data.size} values for shape {shape}"
            raise NnpError(msg)
        out[p.variable_name] = data.reshape(shape)
    return out


def _h5_parameters(data: bytes, where: str) -> dict[str, np.ndarray]:
    import h5py

    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(io.BytesIO(data), "r") as h5:
            h5.visititems(
                lambda name, item: (
                    out.__setitem__(name, np.asarray(item, np.float32)) if isinstance(item, h5py.Dataset) else None
                )
            )
    except OSError as exc:
        msg = f"{where}: not an HDF5 parameter file ({exc})"
        raise NnpError(msg) from exc
    return out


# -- the runtime network as our spec ---------------------------------------------------------
def runtime_network(nnp: Nnp, executor: str | None = None) -> Imported:
    """The network an executor runs (the first, NNC's ``MainRuntime``, unless named) as our spec."""
    proto, where = nnp.proto, nnp.where
    executors = list(proto.executor)
    if not executors:
        msg = f"{where}: no executor (NNC writes MainRuntime): nothing says which network runs"
        raise NnpError(msg)
    chosen = next((e for e in executors if e.name == executor), None) if executor else executors[0]
    if chosen is None:
        msg = f"{where}: no executor {executor!r}; it has {', '.join(e.name for e in executors)}"
        raise NnpError(msg)
    net = next((n for n in proto.network if n.name == chosen.network_name), None)
    if net is None:
        msg = f"{where}: executor {chosen.name!r} runs network {chosen.network_name!r}, which the file lacks"
        raise NnpError(msg)
    if len(chosen.data_variable) != 1 or not chosen.output_variable:
        counts = f"{len(chosen.data_variable)} and {len(chosen.output_variable)}"
        msg = f"{where}: executor {chosen.name!r} needs one data variable and an output (has {counts})"
        raise NnpError(msg)
    notes = []
    if len(chosen.output_variable) > 1:
        others = ", ".join(o.variable_name for o in chosen.output_variable[1:])
        notes.append(f"executor {chosen.name!r}: only its first output is imported (not {others})")
    graph = _Graph(net, nnp.params, where)
    data, output = chosen.data_variable[0], chosen.output_variable[0]
    nodes, start, end = graph.nodes(data.variable_name, output.variable_name)
    try:
        nested = nested_layers(nodes, start, end)
    except GraphError as exc:
        msg = f"{where}: network {net.name!r}: {exc}"
        raise NnpError(msg) from exc
    if not nested.layers:
        msg = f"{where}: network {net.name!r}: no function between {data.variable_name!r} and {output.variable_name!r}"
        raise NnpError(msg)
    spec = {
        "name": re.sub(r"[^\w.-]+", "_", net.name) or "network",
        "description": f"imported from {Path(where).name} (executor {chosen.name}, network {net.name})",
        "input": graph.shape(data.variable_name),
        "layers": nested.layers,
    }
    return Imported(
        spec,
        nested.payloads,
        data.data_name or data.variable_name,
        output.data_name or output.variable_name,
        not chosen.no_image_normalization,
        graph.functions[graph.producer[output.variable_name]].type if output.variable_name in graph.producer else "",
        notes + graph.notes,
    )


class _Graph:
    """A network's functions as graph nodes (parameters attached as each layer's payload)."""

    def __init__(self, net: Any, params: dict[str, np.ndarray], where: str) -> None:
        self.net, self.params, self.where, self.notes = net, params, where, []
        self.variables = {v.name: v for v in net.variable}
        self.functions = {f"{i}:{f.name}": f for i, f in enumerate(net.function)}
        self.producer = {out: key for key, f in self.functions.items() for out in f.output}

    def shape(self, variable: str) -> list[int]:
        v = self.variables.get(variable)
        if v is None:
            msg = f"{self.where}: network {self.net.name!r} has no variable {variable!r}"
            raise NnpError(msg)
        return [int(d) for d in v.shape.dim[1:]]

    def is_parameter(self, name: str) -> bool:
        v = self.variables.get(name)
        return (v is not None and v.type == "Parameter") or (name not in self.producer and name in self.params)

    def array(self, name: str, function: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
        if name not in self.params:
            what = f"function {function.name!r} ({function.type})"
            msg = f"{self.where}: parameter {name!r} of {what} is not in the parameter file"
            raise NnpError(msg)
        value = self.params[name]
        if shape is not None and value.size != math.prod(shape):
            msg = f"{self.where}: parameter {name!r} of {function.name!r} has shape {value.shape}, expected {shape}"
            raise NnpError(msg)
        return value if shape is None else value.reshape(shape)

    def nodes(self, data: str, output: str) -> tuple[dict[str, Node], str, str]:
        if output not in self.producer:
            msg = f"{self.where}: no function of network {self.net.name!r} computes the output {output!r}"
            raise NnpError(msg)
        needed, stack = set(), [self.producer[output]]
        while stack:  # only what the output depends on must be supported
            key = stack.pop()
            if key not in needed:
                needed.add(key)
                stack.extend(self.producer[v] for v in self.functions[key].input if v in self.producer)
        nodes = {data: Node(data, "Input", f"data variable {data!r}")}
        spans: dict[str, tuple[str, str] | None] = {}
        unsupported = []
        for key, f in self.functions.items():
            if key not in needed:
                continue
            try:
                specs = self.layers(f)
            except _Unsupported as exc:
                unsupported.append(f"{f.name!r} ({f.type}{': ' + str(exc) if str(exc) else ''})")
                continue
            spans[key] = add_chain(nodes, key, f"function {f.name!r} ({f.type})", specs)
        if unsupported:
            msg = f"{self.where}: functions we do not have: {'; '.join(unsupported)}"
            raise NnpError(msg)
        for key, span in spans.items():
            if span is not None:
                inputs = [v for v in self.functions[key].input if not self.is_parameter(v)]
                nodes[span[0]].inputs = [self._source(v, data, spans) for v in inputs]
        return nodes, data, self._source(output, data, spans)

    def _source(self, variable: str, data: str, spans: dict[str, tuple[str, str] | None]) -> str:
        """The node whose output is ``variable`` (pass-through functions hand their input on)."""
        while variable != data:
            key = self.producer.get(variable)
            if key is None:
                msg = f"{self.where}: variable {variable!r} is neither the data variable nor computed by a function"
                raise NnpError(msg)
            if spans.get(key) is not None:
                return spans[key][1]
            variable = next(v for v in self.functions[key].input if not self.is_parameter(v))
        return data

    def layers(self, f: Any) -> list[SpecLayer]:
        handler = _FUNCTIONS.get(f.type)
        if handler is None:
            msg = ""
            raise _Unsupported(msg)
        return handler(self, f)


class _Unsupported(Exception):
    pass


def _param(f: Any) -> Any:
    field_name = P.FUNCTION_PARAMS[f.type][0]
    return getattr(f, field_name)


def _dims(shape: Any, default: list[int]) -> list[int]:
    dims = [int(d) for d in shape.dim]
    return dims or default


def _base_axis(p: Any) -> None:
    if p.base_axis not in (0, 1):  # 0: not written (proto3), nnabla's default is 1
        msg = f"base_axis {p.base_axis}; only 1 (one batch axis) is supported"
        raise _Unsupported(msg)


def _geometry(p: Any, nd: int, what: str) -> dict[str, Any]:
    if getattr(p, "channel_last", False):
        msg = "channel_last"
        raise _Unsupported(msg)
    _base_axis(p)
    out: dict[str, Any] = {}
    for key in ("pad", "stride", "dilation"):
        values = _dims(getattr(p, key), [0 if key == "pad" else 1] * nd)
        if len(values) != nd:
            msg = f"{key} {values} for a {nd}-D {what}"
            raise _Unsupported(msg)
        if values != [0 if key == "pad" else 1] * nd:
            out[key] = values
    return out


def _affine(g: _Graph, f: Any) -> list[SpecLayer]:
    _base_axis(f.affine_param)
    w = g.array(f.input[1], f)
    out_shape = list(w.shape[1:])
    n_out = math.prod(out_shape)
    weights = {"W": w.reshape(w.shape[0], n_out)}
    if len(f.input) > 2:
        weights["b"] = g.array(f.input[2], f, (n_out,))
    layers: list[SpecLayer] = [
        ("Affine", {"name": f.name, "n_outmaps": n_out, **({} if len(f.input) > 2 else {"with_bias": False})}, weights)
    ]
    if len(out_shape) > 1:
        layers.append(("Reshape", {"name": f"{f.name}.shape", "shape": out_shape}, None))
    return layers


def _convolution(g: _Graph, f: Any) -> list[SpecLayer]:
    p = f.convolution_param
    w = g.array(f.input[1], f)
    params = {
        "name": f.name,
        "outmaps": int(w.shape[0]),
        "kernel": list(w.shape[2:]),
        **_geometry(p, w.ndim - 2, "convolution"),
    }
    if p.group > 1:
        params["group"] = int(p.group)
    weights = {"W": w}
    if len(f.input) > 2:
        weights["b"] = g.array(f.input[2], f, (w.shape[0],))
    else:
        params["with_bias"] = False
    return [("Convolution", params, weights)]


def _depthwise(g: _Graph, f: Any) -> list[SpecLayer]:
    p = f.depthwise_convolution_param
    w = g.array(f.input[1], f)  # (channels × multiplier, *kernel)
    params = {"name": f.name, "kernel": list(w.shape[1:]), **_geometry(p, w.ndim - 1, "depthwise convolution")}
    multiplier = max(1, int(p.multiplier))
    if multiplier > 1:
        params["multiplier"] = multiplier
    weights = {"W": w.reshape(w.shape[0], 1, *w.shape[1:])}
    if len(f.input) > 2:
        weights["b"] = g.array(f.input[2], f, (w.shape[0],))
    else:
        params["with_bias"] = False
    return [("DepthwiseConvolution", params, weights)]


def _deconvolution(g: _Graph, f: Any) -> list[SpecLayer]:
    p = f.deconvolution_param
    w = g.array(f.input[1], f)  # (in, out / group, *kernel)
    group = max(1, int(p.group))
    nd = w.ndim - 2
    params = {
        "name": f.name,
        "outmaps": int(w.shape[1]) * group,
        "kernel": list(w.shape[2:]),
        **_geometry(p, nd, "deconvolution"),
    }
    if group > 1:
        params["group"] = group
    output_padding = _dims(p.output_padding, [0] * nd)
    if any(output_padding):
        params["output_padding"] = output_padding
    weights = {"W": w}
    if len(f.input) > 2:
        weights["b"] = g.array(f.input[2], f, (params["outmaps"],))
    else:
        params["with_bias"] = False
    return [("Deconvolution", params, weights)]


def _pooling(g: _Graph, f: Any) -> list[SpecLayer]:
    p = _param(f)
    if p.channel_last:
        msg = "channel_last"
        raise _Unsupported(msg)
    kernel = _dims(p.kernel, [])
    params: dict[str, Any] = {"name": f.name, "kernel": kernel}
    stride = _dims(p.stride, kernel)
    if stride != kernel:
        params["stride"] = stride
    pad = _dims(p.pad, [0] * len(kernel))
    if any(pad):
        params["pad"] = pad
        if f.type == "AveragePooling" and not p.including_pad:
            msg = "including_pad false with padding (our average counts the padding)"
            raise _Unsupported(msg)
    if not p.ignore_border:
        params["ignore_border"] = False
    return [(f.type, params, None)]


def _batch_normalization(g: _Graph, f: Any) -> list[SpecLayer]:
    p = _param(f)
    if list(p.axes) not in ([], [1]):
        msg = f"axes {list(p.axes)}; only the channel axis 1"
        raise _Unsupported(msg)
    if p.batch_stat:
        g.notes.append(f"{f.name!r}: batch_stat is on in the runtime network; imported with its running statistics")
    channels = g.shape(f.input[0])[0]
    names = list(f.input[1:5])
    order = ["beta", "gamma", "running_mean", "running_var"]
    if f.type == "BatchNormalization" and (p.no_bias or p.no_scale):
        order = [k for k in order if not (k == "beta" and p.no_bias) and not (k == "gamma" and p.no_scale)]
    weights = {key: g.array(name, f, (channels,)) for key, name in zip(order, names, strict=False)}
    weights.setdefault("beta", np.zeros(channels, np.float32))
    weights.setdefault("gamma", np.ones(channels, np.float32))
    params: dict[str, Any] = {"name": f.name}
    decay, eps = float(p.decay_rate), float(p.eps)
    if decay and abs(decay - 0.9) > 1e-7:
        params["decay_rate"] = round(decay, 6)
    if eps:
        params["eps"] = float(f"{eps:.7g}")  # float32 as written: 1e-05, not 9.99999974e-06
    layers: list[SpecLayer] = [("BatchNormalization", params, weights)]
    if f.type == "FusedBatchNormalization":
        if len(f.input) > 5:
            msg = "the added input z"
            raise _Unsupported(msg)
        if p.nonlinearity not in ("", "relu"):
            msg = f"nonlinearity {p.nonlinearity!r}"
            raise _Unsupported(msg)
        layers.append(("ReLU", {"name": f"{f.name}.relu"}, None))
    return layers


def _axis_one(g: _Graph, f: Any) -> list[SpecLayer]:
    axis = int(_param(f).axis)
    rank = len(g.shape(f.input[0])) + 1
    if axis % rank != 1:
        msg = f"axis {axis}; only the channel axis 1"
        raise _Unsupported(msg)
    return [(f.type, {"name": f.name}, None)]


def _prelu(g: _Graph, f: Any) -> list[SpecLayer]:
    _base_axis(f.prelu_param)
    slope = g.array(f.input[1], f).reshape(-1)
    return [("PReLU", {"name": f.name, "shared": slope.size == 1}, {"slope": slope})]


def _reshape(g: _Graph, f: Any) -> list[SpecLayer]:
    dims = [int(d) for d in f.reshape_param.shape.dim][1:]  # the first is the batch axis
    if any(d <= 0 for d in dims):
        inferred = g.shape(f.output[0])
        dims = inferred if all(d > 0 for d in inferred) else dims
    return [("Reshape", {"name": f.name, "shape": dims}, None)]


def _transpose(g: _Graph, f: Any) -> list[SpecLayer]:
    axes = [int(a) for a in f.transpose_param.axes]
    if not axes or axes[0] != 0:
        msg = f"axes {axes} move the batch axis"
        raise _Unsupported(msg)
    return [("Transpose", {"name": f.name, "axes": [a - 1 for a in axes[1:]]}, None)]


def _interpolate(g: _Graph, f: Any) -> list[SpecLayer]:
    p = f.interpolate_param
    if p.channel_last:
        msg = "channel_last"
        raise _Unsupported(msg)
    size, out = g.shape(f.input[0]), [int(v) for v in p.output_size]
    scale = [o // i for o, i in zip(out, size[1:], strict=False)]
    if (
        len(out) != len(size) - 1
        or any(o != s * i for o, s, i in zip(out, scale, size[1:], strict=True))
        or min(scale) < 1
    ):
        msg = f"output_size {out} is not a whole multiple of {size[1:]}"
        raise _Unsupported(msg)
    if p.mode == "linear" and not p.align_corners and p.half_pixel:
        return [("Upsample", {"name": f.name, "scale": scale, "mode": "bilinear"}, None)]
    if p.mode == "nearest" and not p.half_pixel_for_nn and not p.align_corners:
        return [("Upsample", {"name": f.name, "scale": scale, "mode": "nearest"}, None)]
    msg = f"mode {p.mode!r} with align_corners {p.align_corners}, half_pixel {p.half_pixel}"
    raise _Unsupported(msg)


def _concatenate(g: _Graph, f: Any) -> list[SpecLayer]:
    axis = int(f.concatenate_param.axis)
    rank = len(g.shape(f.output[0])) + 1
    if axis % rank != 1:
        msg = f"axis {axis}; only the channel axis 1"
        raise _Unsupported(msg)
    return [("Concat", {"axis": 1}, None)]


def _activation(kind: str, **read: Callable[[Any], Any]) -> Callable[[_Graph, Any], list[SpecLayer]]:
    def handler(g: _Graph, f: Any) -> list[SpecLayer]:
        params = {"name": f.name}
        for key, get in read.items():
            params[key] = get(f)
        return [(kind, params, None)]

    return handler


def _selu(g: _Graph, f: Any) -> list[SpecLayer]:
    p = f.selu_param
    if (p.scale and abs(p.scale - 1.05070098735548) > 1e-6) or (p.alpha and abs(p.alpha - 1.673263242354377) > 1e-6):
        msg = f"scale {p.scale} alpha {p.alpha}; ours are the standard constants"
        raise _Unsupported(msg)
    return [("SELU", {"name": f.name}, None)]


def _leaky_relu(f: Any) -> float:
    return round(float(f.leaky_relu_param.alpha), 7) if f.HasField("leaky_relu_param") else 0.1


_FUNCTIONS: dict[str, Callable[[_Graph, Any], list[SpecLayer]]] = {
    "Affine": _affine,
    "Convolution": _convolution,
    "DepthwiseConvolution": _depthwise,
    "Deconvolution": _deconvolution,
    "MaxPooling": _pooling,
    "AveragePooling": _pooling,
    "SumPooling": _pooling,
    "GlobalAveragePooling": _activation("GlobalAveragePooling"),
    "Unpooling": lambda g, f: [("Unpooling", {"name": f.name, "kernel": _dims(f.unpooling_param.kernel, [])}, None)],
    "BatchNormalization": _batch_normalization,
    "FusedBatchNormalization": _batch_normalization,
    "ReLU": _activation("ReLU"),
    "LeakyReLU": _activation("LeakyReLU", alpha=_leaky_relu),
    "ELU": _activation("ELU", alpha=lambda f: float(f.elu_param.alpha) if f.HasField("elu_param") else 1.0),
    "SELU": _selu,
    "Swish": _activation("Swish"),
    "GELU": _activation("GELU", approximate=lambda f: "tanh"),  # nnabla's GELU is the tanh form
    "Tanh": _activation("Tanh"),
    "Sigmoid": _activation("Sigmoid"),
    "Softmax": _axis_one,
    "LogSoftmax": _axis_one,
    "PReLU": _prelu,
    "Identity": lambda g, f: [],
    "Dropout": lambda g, f: [],  # the runtime network does not drop
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Interpolate": _interpolate,
    "MulScalar": _activation("MulScalar", value=lambda f: float(f.mul_scalar_param.val)),
    "AddScalar": _activation("AddScalar", value=lambda f: float(f.add_scalar_param.val)),
    "Add2": lambda g, f: [("Add", {}, None)],
    "Concatenate": _concatenate,
}
SUPPORTED_FUNCTIONS = tuple(sorted(_FUNCTIONS))


# -- our bundle ------------------------------------------------------------------------------
def model_kind(imported: Imported, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> str:
    """What the network does, read off its ends: a network that gives back its input's shape is an
    autoencoder, a probability head a classifier, anything else a regressor."""
    if tuple(input_shape) == tuple(output_shape):
        return "autoencoder"
    return "classifier" if imported.last_function in ("Sigmoid", "Softmax") else "regressor"


def import_nnp(
    path: str | Path,
    out: str | Path,
    kind: str | None = None,
    executor: str | None = None,
    calibrate_on: str | Path | None = None,
    false_alarm_rate: float = 0.01,
) -> dict[str, Any]:
    """``.nnp`` → our model bundle at ``out`` (with its ONNX graph); returns a summary. With
    ``calibrate_on`` (a dataset CSV of normal samples), an autoencoder gets T1/T2 from their
    reconstruction errors, so the line can run it."""
    from appliance.datasets.nnc import nnc_image_spec
    from models import bundle as bundle_io
    from models.preprocess import InputSpec
    from models.spec import SpecError, build

    nnp = read_nnp(path)
    imported = runtime_network(nnp, executor)
    try:
        net = build(imported.network)
    except SpecError as exc:
        msg = f"{nnp.where}: the runtime network does not fit together: {exc}"
        raise NnpError(msg) from exc
    load_parameters(net, imported.parameters, nnp.where)
    kind = kind or model_kind(imported, net.input_shape, net.output_shape)
    shape = net.input_shape
    if len(shape) == 3 and shape[0] in (1, 3):
        spec = nnc_image_spec(shape[0], shape[1:], imported.image_normalization)
    else:
        spec = InputSpec("vector", shape=tuple(shape), size=None)
    outputs = math.prod(net.output_shape)
    labels = [str(i) for i in range(max(outputs, 2))] if kind == "classifier" else []
    task = {"classifier": "classification", "regressor": "regression"}.get(kind, "autoencoder")
    provenance = {
        "imported_from": Path(path).name,
        "file_digest": bundle_io.file_digest(path),
        "task": task,
        "input_variable": imported.input_name,
        "output_variable": imported.output_name,
        "notes": imported.notes,
    }
    post: dict[str, Any] = {"score": "mean"} if kind == "autoencoder" else {}
    if calibrate_on is not None:
        if kind != "autoencoder":
            msg = f"{nnp.where}: --calibrate applies to autoencoders; this is a {kind}"
            raise NnpError(msg)
        post["calibration"] = _calibration(net, calibrate_on, imported, false_alarm_rate)
        provenance["calibrated_on"] = {"dataset": Path(calibrate_on).name, "n": post["calibration"]["n"]}
    bundle = bundle_io.bundle_from_network(net, kind, spec.to_dict(), labels, post, provenance, name=net.name)
    bundle.save(out)
    return {
        "kind": kind,
        "input": list(net.input_shape),
        "output": list(net.output_shape),
        "notes": imported.notes,
        "calibrated_on": post["calibration"]["n"] if "calibration" in post else 0,
    }


def _calibration(net: Any, dataset: str | Path, imported: Imported, rate: float) -> dict[str, Any]:
    """T1/T2 from the mean squared reconstruction errors of normal samples (the line's score)."""
    from appliance.datasets.nnc import NNCDataset
    from engine import Tensor, no_grad
    from models.calibration import calibrate

    ds = NNCDataset(dataset, normalize=imported.image_normalization)
    if imported.input_name not in ds.variables:
        msg = f"{dataset} has no variable {imported.input_name!r}, the model's input; it has {sorted(ds.variables)}"
        raise NnpError(msg)
    x = ds.load(imported.input_name)
    if tuple(x.shape[1:]) != tuple(net.input_shape):
        msg = f"{dataset}: samples of shape {x.shape[1:]}, the model takes {tuple(net.input_shape)}"
        raise NnpError(msg)
    net.module.eval()
    with no_grad():
        recon = np.concatenate([net.module(Tensor(x[i : i + 256])).data for i in range(0, len(x), 256)])
    scores = ((recon.reshape(x.shape) - x) ** 2).reshape(len(x), -1).mean(axis=1)
    return calibrate(scores, rate).to_dict()


def load_parameters(net: Any, parameters: list[dict[str, np.ndarray] | None], where: str) -> None:
    """Put the file's parameters into the built network's layers (one payload per leaf layer)."""
    leaves = [layer for layer in net.layers if layer.type not in ("Add", "Concat")]
    if len(leaves) != len(parameters):  # the spec and its payloads come from one walk of the graph
        msg = f"{where}: {len(parameters)} parameter sets for {len(leaves)} layers"
        raise NnpError(msg)
    for layer, weights in zip(leaves, parameters, strict=True):
        for key, value in (weights or {}).items():
            target = getattr(layer.module, key)
            current = target if isinstance(target, np.ndarray) else target.data  # a buffer, or a Parameter
            if current.shape != value.shape:
                what = f"{layer.name or layer.path} ({layer.type}) {key}"
                msg = f"{where}: {what} has shape {value.shape}, expected {current.shape}"
                raise NnpError(msg)
            current[...] = value
