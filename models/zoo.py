"""The model zoo: named network specs with a registry (``get_spec``, ``list_models``).

Every entry is a function of its input shape and size options returning a spec (see
:mod:`models.spec`), so tests can run each through build → train → bundle → ONNX.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from models.spec import SpecError

Spec = dict[str, Any]


@dataclass(frozen=True)
class ZooEntry:
    name: str
    task: str  # classification | autoencoder | segmentation
    default_input: tuple[int, ...]
    build: Callable[..., Spec]
    description: str


ZOO: dict[str, ZooEntry] = {}


def register(name: str, task: str, default_input: Sequence[int], description: str):
    def wrap(fn: Callable[..., Spec]) -> Callable[..., Spec]:
        ZOO[name] = ZooEntry(name, task, tuple(default_input), fn, description)
        return fn

    return wrap


def list_models(task: str | None = None) -> list[str]:
    return sorted(n for n, e in ZOO.items() if task is None or e.task == task)


class UnknownNetwork(SpecError, KeyError):
    """No zoo network of that name (a KeyError for lookups, a SpecError for users)."""

    def __str__(self) -> str:  # KeyError's str() would quote the message
        return str(self.args[0]) if self.args else ""


def get_spec(name: str, input_shape: Sequence[int] | None = None, **options: Any) -> Spec:
    """The spec of zoo network ``name`` for ``input_shape`` (default: the entry's own)."""
    if name not in ZOO:
        msg = f"no zoo network {name!r}; known: {', '.join(list_models())}"
        raise UnknownNetwork(msg)
    entry = ZOO[name]
    shape = list(input_shape or entry.default_input)
    try:
        layers = entry.build(shape, **options)
    except TypeError as exc:
        msg = f"zoo network {name!r}: {exc}"
        raise SpecError(msg) from exc
    return {"name": name, "input": shape, "layers": layers}


def _layer(kind: str, **params: Any) -> dict[str, Any]:
    return {"type": kind, **params}


def _head(classes: int) -> list[dict[str, Any]]:
    """One sigmoid output for two classes (NNC's binary tutorials), logits otherwise."""
    return [_layer("Affine", n_outmaps=1), _layer("Sigmoid")] if classes <= 2 else [_layer("Affine", n_outmaps=classes)]


@register("logistic_regression", "classification", (1, 28, 28), "Affine → Sigmoid (NNC 01_logistic_regression)")
def logistic_regression(shape: list[int], classes: int = 2) -> list[dict]:
    return _head(classes)


@register("mlp", "classification", (1, 28, 28), "2-layer perceptron (NNC's MLP tutorial)")
def mlp(shape: list[int], classes: int = 2, hidden: Sequence[int] = (128,), activation: str = "ReLU") -> list[dict]:
    layers = []
    for units in hidden:
        layers += [_layer("Affine", n_outmaps=units), _layer(activation)]
    return layers + _head(classes)


@register("binary_cnn", "classification", (1, 28, 28), "NNC's 02_binary_cnn: two 5×5 convolutions, tanh")
def binary_cnn(shape: list[int], classes: int = 2) -> list[dict]:
    return [
        _layer("Convolution", outmaps=16, kernel=[5, 5]),
        _layer("MaxPooling", kernel=[2, 2]),
        _layer("Tanh"),
        _layer("Convolution", outmaps=8, kernel=[5, 5]),
        _layer("MaxPooling", kernel=[2, 2]),
        _layer("Tanh"),
        _layer("Affine", n_outmaps=10),
        _layer("Tanh"),
        *_head(classes),
    ]


@register("lenet", "classification", (1, 28, 28), "LeNet-style CNN: conv 6 → conv 16 → 120 → 84")
def lenet(shape: list[int], classes: int = 10) -> list[dict]:
    return [
        _layer("Convolution", outmaps=6, kernel=[5, 5], pad=[2, 2]),
        _layer("ReLU"),
        _layer("MaxPooling", kernel=[2, 2]),
        _layer("Convolution", outmaps=16, kernel=[5, 5]),
        _layer("ReLU"),
        _layer("MaxPooling", kernel=[2, 2]),
        _layer("Affine", n_outmaps=120),
        _layer("ReLU"),
        _layer("Affine", n_outmaps=84),
        _layer("ReLU"),
        *_head(classes),
    ]


def _conv_bn_relu(outmaps: int, kernel: int = 3, stride: int = 1, relu: bool = True) -> list[dict]:
    pad = kernel // 2
    out = [
        _layer(
            "Convolution",
            outmaps=outmaps,
            kernel=[kernel, kernel],
            pad=[pad, pad],
            stride=[stride, stride],
            with_bias=False,
        ),
        _layer("BatchNormalization"),
    ]
    return out + [_layer("ReLU")] if relu else out


def _bottleneck(width: int, stride: int, project: bool) -> list[dict]:
    mid = max(width // 4, 4)
    body = _conv_bn_relu(mid, 1) + _conv_bn_relu(mid, 3, stride) + _conv_bn_relu(width, 1, relu=False)
    shortcut = _conv_bn_relu(width, 1, stride, relu=False) if project else None
    return [_layer("Residual", body=body, shortcut=shortcut), _layer("ReLU")]


@register("resnet_small", "classification", (1, 28, 28), "small ResNet with bottleneck blocks")
def resnet_small(shape: list[int], classes: int = 10, widths: Sequence[int] = (16, 32), blocks: int = 1) -> list[dict]:
    layers = _conv_bn_relu(widths[0], 3)
    for i, width in enumerate(widths):
        for b in range(blocks):
            stride = 2 if i > 0 and b == 0 else 1
            layers += _bottleneck(width, stride, project=(b == 0 and (i > 0 or width != widths[0])))
    return [*layers, _layer("GlobalAveragePooling"), *_head(classes)]


@register("dense_autoencoder", "autoencoder", (1, 28, 28), "fully connected autoencoder (images or vectors)")
def dense_autoencoder(shape: list[int], hidden: int = 128, code: int = 32, output: str = "Sigmoid") -> list[dict]:
    n = 1
    for s in shape:
        n *= s
    layers = [
        _layer("Affine", n_outmaps=hidden),
        _layer("ReLU"),
        _layer("Affine", n_outmaps=code),
        _layer("ReLU"),
        _layer("Affine", n_outmaps=hidden),
        _layer("ReLU"),
        _layer("Affine", n_outmaps=n),
    ]
    layers += [_layer(output)] if output else []
    return layers + ([_layer("Reshape", shape=list(shape))] if len(shape) > 1 else [])


@register(
    "conv_autoencoder", "autoencoder", (1, 28, 28), "convolutional autoencoder, deconvolution or upsampling decoder"
)
def conv_autoencoder(
    shape: list[int], widths: Sequence[int] = (16, 32), decoder: str = "deconv", code: int | None = None
) -> list[dict]:
    """Encoder: 3×3 conv + ReLU + 2×2 max pooling per width; optional dense code; decoder mirrors
    it with 2×2 stride-2 deconvolutions or nearest upsampling + 3×3 convolution."""
    if decoder not in ("deconv", "upsample"):
        msg = f"decoder must be 'deconv' or 'upsample', got {decoder!r}"
        raise ValueError(msg)
    channels, *spatial = shape
    factor = 2 ** len(widths)
    if any(s % factor for s in spatial):
        msg = f"input {tuple(spatial)} must be divisible by {factor} for {len(widths)} poolings"
        raise ValueError(msg)
    layers: list[dict] = []
    for w in widths:
        layers += [_layer("Convolution", outmaps=w, kernel=3, pad=1), _layer("ReLU"), _layer("MaxPooling", kernel=2)]
    if code:
        inner = [widths[-1], *(s // factor for s in spatial)]
        size = 1
        for s in inner:
            size *= s
        layers += [_layer("Affine", n_outmaps=code), _layer("ReLU"), _layer("Affine", n_outmaps=size), _layer("ReLU")]
        layers += [_layer("Reshape", shape=inner)]
    for w in [*reversed(widths[:-1]), channels]:
        if decoder == "deconv":
            layers.append(_layer("Deconvolution", outmaps=w, kernel=2, stride=2))
        else:
            layers += [_layer("Upsample", scale=2), _layer("Convolution", outmaps=w, kernel=3, pad=1)]
        layers.append(_layer("ReLU") if w != channels else _layer("Sigmoid"))
    return layers


@register("conv1d_autoencoder", "autoencoder", (3, 64), "1-D convolutional autoencoder for sensor windows")
def conv1d_autoencoder(shape: list[int], widths: Sequence[int] = (16, 32)) -> list[dict]:
    """Windows are standardised (zero mean, unit variance), so the output is linear."""
    channels, length = shape
    if length % 2 ** len(widths):
        msg = f"window length {length} must be divisible by {2 ** len(widths)}"
        raise ValueError(msg)
    layers: list[dict] = []
    for w in widths:
        layers += [_layer("Convolution", outmaps=w, kernel=5, pad=2, stride=2), _layer("ReLU")]
    for w in reversed(widths[:-1]):
        layers += [_layer("Deconvolution", outmaps=w, kernel=4, stride=2, pad=1), _layer("ReLU")]
    return layers + [_layer("Deconvolution", outmaps=channels, kernel=4, stride=2, pad=1)]


@register(
    "detector_classifier",
    "segmentation",
    (2, 64, 64),
    "discriminative net of the detector: image + reconstruction → defect logits",
)
def detector_classifier(shape: list[int], width: int = 16, depth: int = 2, stem_stride: int = 2) -> list[dict]:
    """A small U-Net (each level concatenates its input, as skip, with the upsampled deeper level).

    With ``stem_stride`` 2 a strided first convolution puts the U-Net at half resolution and the
    logits are upsampled bilinearly: anomaly maps are smoothed before scoring anyway, and it costs
    about a quarter.
    """

    def level(w: int, remaining: int) -> list[dict]:
        conv = _conv_bn_relu(w, 3)
        if remaining == 0:
            return conv
        deeper = [_layer("MaxPooling", kernel=2), *level(w * 2, remaining - 1), _layer("Upsample", scale=2)]
        return [*conv, _layer("Concat", branches=[[_layer("Identity")], deeper]), *_conv_bn_relu(w, 3)]

    layers = level(width, depth)
    if stem_stride > 1:
        layers = [*_conv_bn_relu(width, 3, stem_stride), *layers]
    layers.append(_layer("Convolution", outmaps=1, kernel=1))
    if stem_stride > 1:
        layers.append(_layer("Upsample", scale=stem_stride, mode="bilinear"))
    return layers


@register("defect_type_head", "classification", (2, 64, 64), "names the defect type from image + anomaly map")
def defect_type_head(shape: list[int], classes: int = 4, width: int = 16) -> list[dict]:
    """Three strided conv blocks, then global max pooling: a defect is small, and averaging over
    the whole part would dilute it."""
    spatial = list(shape[1:])
    for _ in range(3):
        spatial = [(s + 2 - 3) // 2 + 1 for s in spatial]
    return [
        *_conv_bn_relu(width, 3, 2),
        *_conv_bn_relu(2 * width, 3, 2),
        *_conv_bn_relu(2 * width, 3, 2),
        _layer("MaxPooling", kernel=spatial),
        _layer("Affine", n_outmaps=classes),
    ]
