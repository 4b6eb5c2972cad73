"""Parametric layers (NNC's ``PF``) and module wrappers of stateless functions.

Every layer computes its output shape from its input shape without data (batch axis
excluded), so network statistics and structure search need no forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine import functions as F
from engine.functions import windows as win
from engine.functions.convolution import conv_output_shape, deconv_output_shape
from engine.functions.pooling import pool_geometry
from engine.initializers import ConstantInitializer, Initializer, fan_initializer
from engine.module import Module, Parameter, Shape, check_shape
from engine.random import generator
from engine.tensor import Tensor


class Affine(Module):
    """Fully connected layer over everything after the batch axis.

    **Shape:** (N, *F) → (N, out_features); weights (prod(F), out_features) as in NNC.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        with_bias: bool = True,
        w_init: Initializer | None = None,
        b_init: Initializer | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.in_features, self.out_features, self.with_bias = in_features, out_features, with_bias
        self.w_init = w_init or fan_initializer("glorot_uniform", in_features, out_features)
        self.b_init = b_init or ConstantInitializer(0.0)
        self.rng = rng
        self.reset_parameters()

    def reset_parameters(self) -> None:
        rng = generator(self.rng)
        self.W = Parameter(self.w_init((self.in_features, self.out_features), rng))
        self.b = Parameter(self.b_init((self.out_features,), rng)) if self.with_bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.affine(x, self.W, self.b)

    def output_shape(self, in_shape: Shape) -> Shape:
        if int(np.prod(in_shape)) != self.in_features:
            msg = f"Affine expects {self.in_features} inputs, got shape {tuple(in_shape)}"
            raise ValueError(msg)
        return (self.out_features,)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, with_bias={self.with_bias}"


class _ConvBase(Module):
    def _channels(self, in_channels: int, out_channels: int, group: int, with_bias: bool) -> None:
        if in_channels % group or out_channels % group:
            msg = f"channels {in_channels} → {out_channels} are not divisible by group {group}"
            raise ValueError(msg)
        self.in_channels, self.out_channels, self.group, self.with_bias = in_channels, out_channels, group, with_bias

    def _geometry(self, kernel, pad, stride, dilation, border_mode):
        nd = len(kernel)
        self.kernel = tuple(kernel)
        self.stride = win.as_tuple(stride, nd, "stride")
        self.dilation = win.as_tuple(dilation, nd, "dilation")
        self.pads = (
            win.border_mode_pads(border_mode, self.kernel, self.dilation) if border_mode else win.as_pads(pad, nd)
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel={self.kernel}, stride={self.stride}, "
            f"pads={self.pads}, dilation={self.dilation}, group={self.group}"
        )


class Convolution(_ConvBase):
    """N-D convolution (1-D for sensor windows, 2-D for images).

    **Shape:** (N, C, *S) → (N, OC, *out); weights (OC, C/group, *kernel).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Sequence[int],
        pad: Any = 0,
        stride: Any = 1,
        dilation: Any = 1,
        group: int = 1,
        border_mode: str | None = None,
        with_bias: bool = True,
        w_init: Initializer | None = None,
        b_init: Initializer | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        self._channels(in_channels, out_channels, group, with_bias)
        self._geometry(kernel, pad, stride, dilation, border_mode)
        self.w_init = w_init or fan_initializer("glorot_uniform", in_channels // group, out_channels, self.kernel)
        self.b_init = b_init or ConstantInitializer(0.0)
        self.rng = rng
        self.reset_parameters()

    def reset_parameters(self) -> None:
        rng = generator(self.rng)
        shape = (self.out_channels, self.in_channels // self.group, *self.kernel)
        self.W = Parameter(self.w_init(shape, rng))
        self.b = Parameter(self.b_init((self.out_channels,), rng)) if self.with_bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.convolution(
            x, self.W, self.b, pad=self.pads, stride=self.stride, dilation=self.dilation, group=self.group
        )

    def output_shape(self, in_shape: Shape) -> Shape:
        check_shape(in_shape, len(self.kernel) + 1, type(self).__name__)
        if in_shape[0] != self.in_channels:
            msg = f"{type(self).__name__} expects {self.in_channels} channels, got {in_shape[0]}"
            raise ValueError(msg)
        out = conv_output_shape(in_shape, self.out_channels, self.kernel, self.pads, self.stride, self.dilation)
        if min(out[1:]) < 1:
            msg = f"kernel {self.kernel} does not fit input {tuple(in_shape[1:])}"
            raise ValueError(msg)
        return out


class DepthwiseConvolution(Convolution):
    """One filter bank per input channel (``multiplier`` outputs each)."""

    def __init__(self, in_channels: int, kernel: Sequence[int], multiplier: int = 1, **kwargs: Any) -> None:
        self.multiplier = multiplier
        super().__init__(in_channels, in_channels * multiplier, kernel, group=in_channels, **kwargs)


class Deconvolution(_ConvBase):
    """Transposed convolution. **Shape:** (N, C, *S) → (N, OC, *out); weights (C, OC/group, *k)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Sequence[int],
        pad: Any = 0,
        stride: Any = 1,
        dilation: Any = 1,
        group: int = 1,
        output_padding: Any = 0,
        with_bias: bool = True,
        w_init: Initializer | None = None,
        b_init: Initializer | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        self._channels(in_channels, out_channels, group, with_bias)
        self._geometry(kernel, pad, stride, dilation, None)
        self.output_padding = win.as_tuple(output_padding, len(self.kernel), "output_padding")
        self.w_init = w_init or fan_initializer("glorot_uniform", out_channels // group, in_channels, self.kernel)
        self.b_init = b_init or ConstantInitializer(0.0)
        self.rng = rng
        self.reset_parameters()

    def reset_parameters(self) -> None:
        rng = generator(self.rng)
        shape = (self.in_channels, self.out_channels // self.group, *self.kernel)
        self.W = Parameter(self.w_init(shape, rng))
        self.b = Parameter(self.b_init((self.out_channels,), rng)) if self.with_bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.deconvolution(
            x,
            self.W,
            self.b,
            pad=self.pads,
            stride=self.stride,
            dilation=self.dilation,
            group=self.group,
            output_padding=self.output_padding,
        )

    def output_shape(self, in_shape: Shape) -> Shape:
        check_shape(in_shape, len(self.kernel) + 1, "Deconvolution")
        if in_shape[0] != self.in_channels:
            msg = f"Deconvolution expects {self.in_channels} channels, got {in_shape[0]}"
            raise ValueError(msg)
        return deconv_output_shape(
            in_shape, self.out_channels, self.kernel, self.pads, self.stride, self.dilation, self.output_padding
        )


class BatchNormalization(Module):
    """Batch statistics in training, running statistics in eval (NNC: decay 0.9, eps 1e-4).

    **Shape:** (N, C, …) → same; beta, gamma, running mean and variance (C,).
    """

    buffers = ("running_mean", "running_var")

    def __init__(self, n_features: int, decay_rate: float = 0.9, eps: float = 1e-4) -> None:
        if not 0.0 <= decay_rate <= 1.0:
            msg = f"Invalid decay_rate: {decay_rate}"
            raise ValueError(msg)
        self.n_features, self.decay_rate, self.eps = n_features, decay_rate, eps
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.beta = Parameter(np.zeros(self.n_features, np.float32))
        self.gamma = Parameter(np.ones(self.n_features, np.float32))
        self.running_mean = np.zeros(self.n_features, np.float32)
        self.running_var = np.ones(self.n_features, np.float32)

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_normalization(
            x,
            self.beta,
            self.gamma,
            self.running_mean,
            self.running_var,
            decay_rate=self.decay_rate,
            eps=self.eps,
            batch_stat=self.training,
        )

    def output_shape(self, in_shape: Shape) -> Shape:
        if in_shape[0] != self.n_features:
            msg = f"BatchNormalization has {self.n_features} channels, got {in_shape[0]}"
            raise ValueError(msg)
        return tuple(in_shape)

    def extra_repr(self) -> str:
        return f"{self.n_features}, decay_rate={self.decay_rate}, eps={self.eps}"


class PReLU(Module):
    """Learned negative slope, shared (``n_channels=1``) or one per channel."""

    def __init__(self, n_channels: int = 1, init: float = 0.25) -> None:
        self.n_channels, self.init = n_channels, init
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.slope = Parameter(np.full(self.n_channels, self.init, np.float32))

    def forward(self, x: Tensor) -> Tensor:
        return F.prelu(x, self.slope)

    def output_shape(self, in_shape: Shape) -> Shape:
        if self.n_channels > 1 and in_shape[0] != self.n_channels:
            msg = f"PReLU has {self.n_channels} slopes, got {in_shape[0]} channels"
            raise ValueError(msg)
        return tuple(in_shape)


# -- stateless wrappers ---------------------------------------------------------------
class _Elementwise(Module):
    fn: Any = None

    def __init__(self, **config: Any) -> None:
        self.config = config

    def forward(self, x: Tensor) -> Tensor:
        return type(self).fn(x, **self.config)

    def output_shape(self, in_shape: Shape) -> Shape:
        return tuple(in_shape)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())


def _elementwise(name: str, fn: Any) -> type[_Elementwise]:
    return type(name, (_Elementwise,), {"fn": staticmethod(fn), "__doc__": f"Module form of ``F.{fn.__name__}``."})


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


class Identity(Module):
    """Pass the input through (the skip branch of a ``Concat``, e.g. U-Net connections)."""

    def forward(self, x: Tensor) -> Tensor:
        return x

    def output_shape(self, in_shape: Shape) -> Shape:
        return tuple(in_shape)
