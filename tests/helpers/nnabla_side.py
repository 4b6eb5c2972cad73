"""Runs under nnabla's own interpreter (the ``.venv-nnabla`` venv, CPython 3.10), never imported by the
suite: the tests call it with ``subprocess`` to make ``.nnp`` files with nnabla itself and to run
ours in nnabla.

    python nnabla_side.py make DIR           # DIR/<family>.nnp, <family>.in.npy, <family>.out.npy
    python nnabla_side.py forward NNP IN OUT  # nnabla's outputs of NNP's first executor on IN (.npy)
"""

from __future__ import annotations

import sys
from pathlib import Path

import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import numpy as np
from nnabla.utils.nnp_graph import NnpLoader
from nnabla.utils.save import save

RNG = np.random.default_rng(0)


def randomise_parameters() -> None:
    """Parameters away from their initial values (BN statistics included), so that loading them counts."""
    for name, p in nn.get_parameters(grad_only=False).items():
        values = RNG.standard_normal(p.shape).astype(np.float32) * 0.5
        if name.endswith(("/var", "/gamma")):
            values = np.abs(values) + 0.5
        p.d = values


def affine_mlp(x):
    h = F.relu(PF.affine(x, 16, name="fc1"))
    h = F.tanh(PF.affine(h, 8, name="fc2", with_bias=False))
    return F.sigmoid(PF.affine(h, 1, name="out"))


def conv_bn_pool(x):
    h = PF.convolution(x, 6, (3, 3), pad=(1, 1), stride=(1, 1), name="c1")
    h = F.relu(PF.batch_normalization(h, batch_stat=False, name="bn1"))
    h = F.max_pooling(h, (3, 3), stride=(2, 2), ignore_border=False, pad=(1, 1))
    h = PF.convolution(h, 4, (3, 2), stride=(2, 1), name="c2")
    h = F.average_pooling(h, (2, 2), ignore_border=True, including_pad=True)
    h = F.sum_pooling(h, (1, 2))
    return F.softmax(PF.affine(h, 5, name="fc"))


def residual_concat(x):
    h = F.relu(PF.convolution(x, 4, (3, 3), pad=(1, 1), name="stem"))
    r = PF.convolution(F.relu(PF.convolution(h, 4, (3, 3), pad=(1, 1), name="r1")), 4, (1, 1), name="r2")
    h = F.add2(h, r)
    a = PF.convolution(h, 3, (1, 1), name="b1")
    b = F.leaky_relu(PF.convolution(h, 2, (3, 3), pad=(1, 1), name="b2"), 0.2)
    h = F.concatenate(a, b, h, axis=1)
    h = F.global_average_pooling(h)
    return PF.affine(h, 3, name="fc")


def deconv_autoencoder(x):
    h = F.elu(PF.convolution(x, 4, (4, 4), stride=(2, 2), pad=(1, 1), name="enc"))
    h = F.max_pooling(h, (2, 2))
    h = F.unpooling(h, (2, 2))
    h = F.selu(PF.deconvolution(h, 4, (3, 3), stride=(2, 2), pad=(1, 1), output_padding=(1, 1), name="dec"))
    h = PF.deconvolution(h, 2, (3, 3), pad=(1, 1), group=2, name="dec2")
    return F.sigmoid(PF.convolution(h, 1, (1, 1), name="out"))


def depthwise_group_activations(x):
    h = PF.depthwise_convolution(x, (3, 3), pad=(1, 1), multiplier=2, name="dw")
    h = PF.prelu(h, base_axis=1, shared=False, name="prelu")
    h = PF.convolution(h, 4, (3, 3), pad=(2, 2), dilation=(2, 2), group=2, name="grouped")
    h = F.swish(h)
    h = F.gelu(PF.convolution(h, 4, (1, 1), name="pw", with_bias=False))
    h = PF.prelu(h, name="shared_prelu")
    return F.log_softmax(h, axis=1)


def shape_ops(x):
    h = F.add_scalar(F.mul_scalar(x, 0.01735), -1.99)  # NNC's ImageNet input scaling
    h = F.transpose(h, (0, 2, 1))  # (N, 16, 3): a sensor window turned to channels first
    h = F.relu(PF.convolution(h, 4, (5,), pad=(2,), name="conv1d"))
    h = F.reshape(h, (h.shape[0], 4 * 3))
    h = F.identity(h)
    return PF.affine(h, (2, 3), name="fc")  # several output axes: Affine then Reshape


def fused_bn(x):
    h = PF.convolution(x, 3, (3, 3), pad=(1, 1), name="c")
    p = {n: nn.parameter.get_parameter_or_create(f"fbn/{n}", (1, 3, 1, 1)) for n in ("beta", "gamma", "mean", "var")}
    return F.fused_batch_normalization(h, p["beta"], p["gamma"], p["mean"], p["var"], batch_stat=False)


def upsampling(x):
    h = F.interpolate(x, output_size=(12, 10), mode="linear", align_corners=False, half_pixel=True)
    h = PF.convolution(h, 2, (3, 3), pad=(1, 1), name="c")
    return F.interpolate(h, scale=(2, 2), mode="nearest")


FAMILIES = {
    "affine_mlp": (affine_mlp, (13,)),
    "conv_bn_pool": (conv_bn_pool, (3, 12, 11)),
    "residual_concat": (residual_concat, (2, 8, 8)),
    "deconv_autoencoder": (deconv_autoencoder, (1, 16, 16)),
    "depthwise_group_activations": (depthwise_group_activations, (2, 9, 9)),
    "shape_ops": (shape_ops, (3, 16)),
    "fused_bn": (fused_bn, (2, 6, 6)),
    "upsampling": (upsampling, (2, 6, 5)),
}


def make(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, (build, shape) in FAMILIES.items():
        nn.clear_parameters()
        x = nn.Variable((4, *shape))
        y = build(x)
        randomise_parameters()
        x.d = RNG.standard_normal(x.shape).astype(np.float32)
        y.forward(clear_buffer=True)
        np.save(out / f"{name}.in.npy", x.d)
        np.save(out / f"{name}.out.npy", y.d)
        contents = {
            "networks": [{"name": name, "batch_size": 4, "outputs": {"y": y}, "names": {"x": x}}],
            "executors": [{"name": "runtime", "network": name, "data": ["x"], "output": ["y"]}],
        }
        save(str(out / f"{name}.nnp"), contents)


def forward(nnp: str, inputs: str, out: str) -> None:
    x = np.load(inputs)
    loader = NnpLoader(nnp)
    net = loader.get_network(loader.get_network_names()[0], batch_size=len(x))
    (data,) = net.inputs.values()
    output = next(iter(net.outputs.values()))
    data.d = x
    output.forward(clear_buffer=True)
    np.save(out, output.d)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "make":
        make(Path(args[0]))
    elif command == "forward":
        forward(*args)
    else:
        msg = f"unknown command {command!r}"
        raise SystemExit(msg)
