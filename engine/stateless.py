"""Module forms of the stateless functions (NNC's ``F``): activations, dropout, pooling,
up-sampling and shape changes. Each computes its output shape without data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine import functions as F
from engine.functions import windows as win
from engine.functions.pooling import pool_geometry
from engine.module import Module, Shape, check_shape
from engine.random import generator
from engine.tensor import Tensor


class Elementwise(Module):
    fn: Any = None

    def __init__(self, **config: Any) -> None:
        self.config = config

    def forward(self, x: Tensor) -> Tensor:
        return type(self).fn(x, **self.config)

    def output_shape(self, in_shape: Shape) -> Shape:
        return tuple(in_shape)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())


def _elementwise(name: str, fn: Any) -> type[Elementwise]:
    return type(name, (Elementwise,), {"fn": staticmethod(fn), "__doc__": f"Module form of ``F.{fn.__name__}``."})


ReLU = _elementwise("ReLU", F.relu)
LeakyReLU = _elementwise("LeakyReLU", F.leaky_relu)
ELU = _elementwise("ELU", F.elu)
SELU = _elementwise("SELU", F.selu)
Swish = _elementwise("Swish", F.swish)
GELU = _elementwise("GELU", F.gelu)
Tanh = _elementwise("Tanh", F.tanh)
Sigmoid = _elementwise("Sigmoid", F.sigmoid)
Softmax = _elementwise("Softmax", F.softmax)
LogSoftmax = _elementwise("LogSoftmax", F.log_softmax)
MulScalar = _elementwise("MulScalar", F.mul_scalar)  # value: NNC's input scaling (e.g. 0.01735)
AddScalar = _elementwise("AddScalar", F.add_scalar)


class Dropout(Module):
    """Drop with probability ``p`` in training; identity in eval."""

    def __init__(self, p: float = 0.5, rng: np.random.Generator | None = None) -> None:
        if not 0.0 <= p < 1.0:
            msg = f"Invalid dropout probability: {p}"
            raise ValueError(msg)
        self.p, self.rng = p, rng

    def forward(self, x: Tensor) -> Tensor:
        seed = int(generator(self.rng).integers(2**63)) if self.training else None
        return F.dropout(x, self.p, train=self.training, seed=seed)

    def output_shape(self, in_shape: Shape) -> Shape:
        return tuple(in_shape)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _Pool(Module):
    fn: Any = None

    def __init__(
        self, kernel: Sequence[int], stride: Sequence[int] | None = None, pad: Any = 0, ignore_border: bool = True
    ) -> None:
        self.kernel = tuple(kernel)
        self.stride = self.kernel if stride is None else tuple(stride)
        self.pads = win.as_pads(pad, len(self.kernel))
        self.ignore_border = ignore_border

    def forward(self, x: Tensor) -> Tensor:
        return type(self).fn(x, self.kernel, self.stride, ignore_border=self.ignore_border, pad=self.pads)

    def output_shape(self, in_shape: Shape) -> Shape:
        check_shape(in_shape, len(self.kernel) + 1, type(self).__name__)
        out, _ = pool_geometry(in_shape[1:], self.kernel, self.stride, self.pads, self.ignore_border)
        return (in_shape[0], *out)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, pads={self.pads}"


class MaxPooling(_Pool):
    fn = staticmethod(F.max_pooling)


class AveragePooling(_Pool):
    fn = staticmethod(F.average_pooling)


class SumPooling(_Pool):
    fn = staticmethod(F.sum_pooling)


class GlobalAveragePooling(Module):
    """**Shape:** (N, C, *S) → (N, C, 1, …)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.global_average_pooling(x)

    def output_shape(self, in_shape: Shape) -> Shape:
        return (in_shape[0], *([1] * (len(in_shape) - 1)))


class Unpooling(Module):
    """Nearest-neighbour upsampling by an integer factor per axis."""

    def __init__(self, kernel: Sequence[int]) -> None:
        self.kernel = tuple(kernel)

    def forward(self, x: Tensor) -> Tensor:
        return F.unpooling(x, self.kernel)

    def output_shape(self, in_shape: Shape) -> Shape:
        check_shape(in_shape, len(self.kernel) + 1, "Unpooling")
        return (in_shape[0], *(s * k for s, k in zip(in_shape[1:], self.kernel, strict=True)))


class Upsample(Module):
    """Nearest or bilinear upsampling by an integer scale."""

    def __init__(self, scale: Sequence[int] = (2, 2), mode: str = "nearest") -> None:
        if mode not in ("nearest", "bilinear"):
            msg = f"Invalid upsample mode: {mode!r}"
            raise ValueError(msg)
        self.scale, self.mode = tuple(scale), mode

    def forward(self, x: Tensor) -> Tensor:
        return F.upsample(x, self.scale, mode=self.mode)

    def output_shape(self, in_shape: Shape) -> Shape:
        check_shape(in_shape, len(self.scale) + 1, "Upsample")
        return (in_shape[0], *(s * k for s, k in zip(in_shape[1:], self.scale, strict=True)))


class Flatten(Module):
    """**Shape:** (N, *F) → (N, prod(F))."""

    def forward(self, x: Tensor) -> Tensor:
        return F.flatten(x)

    def output_shape(self, in_shape: Shape) -> Shape:
        return (int(np.prod(in_shape)),)


class Reshape(Module):
    """Reshape everything after the batch axis."""

    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = tuple(shape)

    def forward(self, x: Tensor) -> Tensor:
        return F.reshape(x, (x.shape[0], *self.shape))

    def output_shape(self, in_shape: Shape) -> Shape:
        if int(np.prod(in_shape)) != int(np.prod(self.shape)):
            msg = f"cannot reshape {tuple(in_shape)} into {self.shape}"
            raise ValueError(msg)
        return self.shape

    def extra_repr(self) -> str:
        return f"{self.shape}"


class Transpose(Module):
    """Permute the axes after the batch axis (NNC's Transpose: ``axes`` count from 0 after it).

    **Shape:** (N, *S) → (N, *S[axes])."""

    def __init__(self, axes: Sequence[int]) -> None:
        self.axes = tuple(int(a) for a in axes)

    def forward(self, x: Tensor) -> Tensor:
        return F.transpose(x, (0, *(a + 1 for a in self.axes)))

    def output_shape(self, in_shape: Shape) -> Shape:
        if sorted(self.axes) != list(range(len(in_shape))):
            msg = f"axes {self.axes} are not a permutation of the {len(in_shape)} axes of {tuple(in_shape)}"
            raise ValueError(msg)
        return tuple(in_shape[a] for a in self.axes)

    def extra_repr(self) -> str:
        return f"axes={self.axes}"


class Slice(Module):
    """NNC's Slice of the axes after the batch: ``start`` (inclusive), ``stop`` (exclusive) and
    ``step`` per axis. **Shape:** (N, *S) → (N, *ceil((stop - start) / step))."""

    def __init__(self, start: Sequence[int], stop: Sequence[int], step: Sequence[int] | None = None) -> None:
        self.start, self.stop = tuple(int(v) for v in start), tuple(int(v) for v in stop)
        self.step = tuple(int(v) for v in step) if step else (1,) * len(self.start)
        if not len(self.start) == len(self.stop) == len(self.step) or min(self.step, default=1) < 1:
            msg = f"Slice needs start, stop and positive step of one length, got {self.start}, {self.stop}, {self.step}"
            raise ValueError(msg)

    def forward(self, x: Tensor) -> Tensor:
        index = (slice(None), *(slice(a, b, c) for a, b, c in zip(self.start, self.stop, self.step, strict=True)))
        return F.slice(x, index)

    def output_shape(self, in_shape: Shape) -> Shape:
        if len(self.start) > len(in_shape):
            msg = f"Slice over {len(self.start)} axes of an input of shape {tuple(in_shape)}"
            raise ValueError(msg)
        out = list(in_shape)
        for axis, (a, b, c) in enumerate(zip(self.start, self.stop, self.step, strict=True)):
            if not 0 <= a < b <= in_shape[axis]:
                msg = f"Slice {a}:{b} does not fit axis {axis} of size {in_shape[axis]}"
                raise ValueError(msg)
            out[axis] = -(-(b - a) // c)
        return tuple(out)

    def extra_repr(self) -> str:
        return f"start={self.start}, stop={self.stop}, step={self.step}"


class Identity(Module):
    """Pass the input through (the skip branch of a ``Concat``, e.g. U-Net connections)."""

    def forward(self, x: Tensor) -> Tensor:
        return x

    def output_shape(self, in_shape: Shape) -> Shape:
        return tuple(in_shape)
