"""Our model bundle as an ``.nnp`` that nnabla runs (``appliance nnc export model.zip OUT.nnp``).

The bundle's ``main`` network becomes nnabla functions in a network named ``MainRuntime`` with an
executor of the same name (NNC's runtime), data variable ``x`` (the bundle's input variable) and
output ``y'`` (NNC's name for the runtime output); parameters go to ``parameter.h5``. Residual
units become ``Add2``, Concat ``Concatenate``; asymmetric padding ("same" with an even kernel) an
explicit ``Pad`` before the convolution or pooling.
"""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from appliance.datasets import nnabla_proto as P
from appliance.datasets.nnp import NNP_VERSION, NnpError
from engine import Concat, Module, Residual, Sequential
from engine import layers as L

RUNTIME = "MainRuntime"


class _Writer:
    """Collects variables, functions and parameters of one network."""

    def __init__(self, proto_network: Any, names: dict[int, str]) -> None:
        self.net, self.names = proto_network, names  # id(module) → NNC-style layer name
        self.params: dict[str, np.ndarray] = {}
        self.used: set[str] = set()

    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name

    def variable(self, name: str, shape: tuple[int, ...], kind: str = "Buffer") -> str:
        dims = [-1, *shape] if kind == "Buffer" else list(shape)
        self.net.variable.add(name=name, type=kind, shape=P.new("Shape", dim=dims))
        return name

    def parameter(self, scope: str, key: str, value: np.ndarray) -> str:
        name = f"{scope}/{key}"
        self.params[name] = np.ascontiguousarray(value, np.float32)
        return self.variable(name, value.shape, "Parameter")

    def function(self, kind: str, name: str, inputs: list[str], out_shape: tuple[int, ...], **param: Any) -> str:
        """A function named ``name`` (made unique by the caller) writing ``{name}_out``."""
        out = self.variable(f"{name}_out", out_shape)
        f = self.net.function.add(name=name, type=kind, input=inputs, output=[out])
        if kind in P.FUNCTION_PARAMS:
            field = P.FUNCTION_PARAMS[kind][0]
            getattr(f, field).SetInParent()  # present even when every value is the default, as nnabla writes
            for key, value in param.items():
                _set(getattr(f, field), key, value)
        return out


def _set(message: Any, key: str, value: Any) -> None:
    target = getattr(message, key)
    if hasattr(target, "dim"):  # a Shape
        target.dim.extend(int(v) for v in value)
    elif isinstance(value, list | tuple):
        target.extend(value)
    else:
        setattr(message, key, value)


def _symmetric(pads: tuple[tuple[int, int], ...]) -> bool:
    return all(lo == hi for lo, hi in pads)


class _Emitter:
    def __init__(self, writer: _Writer) -> None:
        self.w = writer

    def emit(self, m: Module, x: str, shape: tuple[int, ...], path: str) -> str:
        if isinstance(m, Sequential):
            for i, layer in enumerate(m.layers):
                x, shape = self.emit(layer, x, shape, f"{path}[{i}]"), layer.output_shape(shape)
            return x
        out_shape = m.output_shape(shape)
        if isinstance(m, Residual):
            main = self.emit(m.body, x, shape, f"{path}.body")
            side = x if m.shortcut is None else self.emit(m.shortcut, x, shape, f"{path}.shortcut")
            return self.w.function("Add2", self._label(m, "Add2"), [main, side], out_shape)
        if isinstance(m, Concat):
            branches = [self.emit(b, x, shape, f"{path}.branches[{k}]") for k, b in enumerate(m.branches)]
            return self.w.function("Concatenate", self._label(m, "Concatenate"), branches, out_shape, axis=1)
        return self.leaf(m, x, shape, out_shape, self._label(m, type(m).__name__))

    def _label(self, m: Module, kind: str) -> str:
        """The layer's name in the spec, else its type, numbered as NNC numbers them (``Affine_2``)."""
        return self.w.unique(self.w.names.get(id(m)) or kind)

    def leaf(self, m: Module, x: str, shape: tuple[int, ...], out: tuple[int, ...], label: str) -> str:
        w, kind = self.w, type(m).__name__
        if isinstance(m, L.Affine):
            inputs = [x, w.parameter(label, "affine/W", m.W.data)]
            if m.b is not None:
                inputs.append(w.parameter(label, "affine/b", m.b.data))
            return w.function("Affine", label, inputs, out, base_axis=1)
        if isinstance(m, L.Convolution | L.Deconvolution):
            return self.convolution(m, x, shape, out, label)
        if isinstance(m, L.BatchNormalization):
            stat = (1, shape[0], *([1] * (len(shape) - 1)))
            inputs = [x] + [
                w.parameter(label, f"bn/{key}", value.reshape(stat))
                for key, value in (
                    ("beta", m.beta.data),
                    ("gamma", m.gamma.data),
                    ("mean", m.running_mean),
                    ("var", m.running_var),
                )
            ]
            return w.function(
                "BatchNormalization", label, inputs, out, axes=[1], decay_rate=m.decay_rate, eps=m.eps, batch_stat=False
            )
        if isinstance(m, L.MaxPooling | L.AveragePooling | L.SumPooling):
            return self.pooling(m, x, shape, out, label)
        if isinstance(m, L.PReLU):
            return w.function("PReLU", label, [x, w.parameter(label, "prelu/slope", m.slope.data)], out, base_axis=1)
        simple = {
            L.GlobalAveragePooling: ("GlobalAveragePooling", {}),
            L.ReLU: ("ReLU", {}),
            L.Tanh: ("Tanh", {}),
            L.Sigmoid: ("Sigmoid", {}),
            L.Swish: ("Swish", {}),
            L.SELU: ("SELU", {"scale": 1.05070098735548, "alpha": 1.673263242354377}),
            L.Identity: ("Identity", {}),
            L.Dropout: ("Identity", {}),  # the runtime network does not drop
        }
        if type(m) in simple:
            name, param = simple[type(m)]
            return w.function(name, label, [x], out, **param)
        cfg = getattr(m, "config", {})
        if kind in ("LeakyReLU", "ELU"):
            return w.function(kind, label, [x], out, alpha=float(cfg.get("alpha", 0.1 if kind == "LeakyReLU" else 1.0)))
        if kind in ("Softmax", "LogSoftmax"):
            return w.function(kind, label, [x], out, axis=int(cfg.get("axis", 1)))
        if kind in ("MulScalar", "AddScalar"):
            return w.function(kind, label, [x], out, val=float(cfg["value"]))
        if kind == "GELU":
            if cfg.get("approximate") != "tanh":
                msg = f"{label}: nnabla's GELU is the tanh approximation; give the layer approximate: tanh to export it"
                raise NnpError(msg)
            return w.function("GELU", label, [x], out)
        if isinstance(m, L.Flatten | L.Reshape):
            return w.function("Reshape", label, [x], out, shape=[-1, *out])  # -1: the batch, as nnabla writes
        if isinstance(m, L.Transpose):
            return w.function("Transpose", label, [x], out, axes=[0, *(a + 1 for a in m.axes)])
        if isinstance(m, L.Upsample) and m.mode == "bilinear":  # ours samples at pixel centres
            return w.function(
                "Interpolate",
                label,
                [x],
                out,
                output_size=list(out[1:]),
                mode="linear",
                align_corners=False,
                half_pixel=True,
            )
        if isinstance(m, L.Unpooling) or (isinstance(m, L.Upsample) and m.mode == "nearest"):
            kernel = m.kernel if isinstance(m, L.Unpooling) else m.scale
            return w.function("Unpooling", label, [x], out, kernel=list(kernel))
        msg = f"{label}: no nnabla function for {kind}" + (f" ({m.extra_repr()})" if m.extra_repr() else "")
        raise NnpError(msg)

    def convolution(self, m: Any, x: str, shape: tuple[int, ...], out: tuple[int, ...], label: str) -> str:
        w = self.w
        deconv = isinstance(m, L.Deconvolution)
        pads = m.pads
        if not _symmetric(pads):
            if deconv:
                msg = f"{label}: a deconvolution with asymmetric padding {pads} has no nnabla form"
                raise NnpError(msg)
            x = self._explicit_pad(x, shape, pads, label)
            pads = tuple((0, 0) for _ in pads)
        inputs = [x, w.parameter(label, ("deconv" if deconv else "conv") + "/W", m.W.data)]
        if m.b is not None:
            inputs.append(w.parameter(label, ("deconv" if deconv else "conv") + "/b", m.b.data))
        geometry = {
            "base_axis": 1,
            "pad": [lo for lo, _ in pads],
            "stride": list(m.stride),
            "dilation": list(m.dilation),
            "group": m.group,
        }
        if deconv:
            return w.function("Deconvolution", label, inputs, out, output_padding=list(m.output_padding), **geometry)
        return w.function("Convolution", label, inputs, out, **geometry)

    def pooling(self, m: Any, x: str, shape: tuple[int, ...], out: tuple[int, ...], label: str) -> str:
        pads = m.pads
        if not _symmetric(pads):
            msg = f"{label}: pooling with asymmetric padding {pads} has no nnabla form"
            raise NnpError(msg)
        kind = type(m).__name__
        param: dict[str, Any] = {
            "kernel": list(m.kernel),
            "stride": list(m.stride),
            "ignore_border": bool(m.ignore_border),
            "pad": [lo for lo, _ in pads],
        }
        if kind == "AveragePooling":
            param["including_pad"] = True  # our divisor counts explicit padding, as nnabla's default
        return self.w.function(kind, label, [x], out, **param)

    def _explicit_pad(self, x: str, shape: tuple[int, ...], pads: tuple[tuple[int, int], ...], label: str) -> str:
        """nnabla pads symmetrically inside a convolution; an uneven "same" padding goes before it."""
        padded = (shape[0], *(s + lo + hi for s, (lo, hi) in zip(shape[1:], pads, strict=True)))
        widths = [v for pair in pads for v in pair]  # (before, after) of each trailing axis
        name = self.w.unique(f"{label}.pad")
        return self.w.function("Pad", name, [x], padded, pad_width=widths, mode="constant", constant_value=0.0)


def export_nnp(bundle_path: str | Path, out: str | Path) -> dict[str, Any]:
    """Write the bundle's network as ``out`` (an ``.nnp``); returns what was written."""
    from models import bundle as bundle_io

    bundle = bundle_io.load(bundle_path)
    if "main" not in bundle.meta["networks"]:
        nets = ", ".join(sorted(bundle.meta["networks"]))
        msg = (
            f"{bundle_path}: a {bundle.kind} with networks {nets}; only single-network bundles "
            "(classifiers, regressors, autoencoders) export to .nnp"
        )
        raise NnpError(msg)
    net = bundle.network("main")
    prov, spec_input = bundle.meta.get("provenance", {}), bundle.meta.get("input", {})
    proto = P.new(version=NNP_VERSION)
    network = proto.network.add(name=RUNTIME, batch_size=1)
    writer = _Writer(network, {id(layer.module): layer.name for layer in net.layers if layer.name})
    data = str(prov.get("input_variable") or "x")
    writer.used.add(data)
    writer.variable(data, net.input_shape)
    last = _Emitter(writer).emit(net.module, data, tuple(net.input_shape), "layers")
    output = "y'"  # NNC's runtime output: the target's name with a prime
    writer.variable(output, net.output_shape)
    network.function.add(name=output, type="Identity", input=[last], output=[output])
    executor = proto.executor.add(name=RUNTIME, network_name=RUNTIME)
    executor.data_variable.add(variable_name=data, data_name=data)
    executor.output_variable.add(variable_name=output, data_name=output)
    for name in writer.params:
        executor.parameter_variable.add(variable_name=name)
    image = spec_input.get("kind") == "image" and math.isclose(float(spec_input.get("scale", 0)), 1 / 255)
    executor.no_image_normalization = not image
    _write_zip(Path(out), P.to_text(proto), writer.params)
    return {"functions": len(network.function), "parameters": len(writer.params), "data": data, "output": output}


def _write_zip(out: Path, nntxt: str, params: dict[str, np.ndarray]) -> None:
    import h5py

    h5 = io.BytesIO()
    with h5py.File(h5, "w") as f:
        for index, (name, value) in enumerate(params.items()):
            dataset = f.create_dataset(name, data=value)
            dataset.attrs["need_grad"] = True
            dataset.attrs["index"] = index
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("nnp_version.txt", NNP_VERSION + "\n")
        zf.writestr("network.nntxt", nntxt)
        zf.writestr("parameter.h5", h5.getvalue())
    tmp.replace(out)
