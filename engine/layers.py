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
from engine.initializers import ConstantInitializer, Initializer, fan_initializer
from engine.module import Module, Parameter, Shape, check_shape
from engine.random import generator
from engine.stateless import (  # noqa: F401  (re-exported: every layer type is engine.layers.X)
    ELU,
    GELU,
    SELU,
    AddScalar,
    AveragePooling,
    Dropout,
    Elementwise,
    Flatten,
    GlobalAveragePooling,
    Identity,
    LeakyReLU,
    LogSoftmax,
    MaxPooling,
    MulScalar,
    ReLU,
    Reshape,
    Sigmoid,
    Slice,
    Softmax,
    SumPooling,
    Swish,
    Tanh,
    Transpose,
    Unpooling,
    Upsample,
)
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
