"""Activations: ReLU family, smooth units, squashing functions, softmax."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special

from engine.tensor import Function, Tensor, unbroadcast

SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805


class ReLU(Function):
    def forward(self, x):
        self.y = np.maximum(x, 0)
        return self.y

    def backward(self, g):
        return g * (self.y > 0)


class LeakyReLU(Function):
    def forward(self, x, *, alpha):
        self.x, self.alpha = x, alpha
        return np.where(x > 0, x, x * x.dtype.type(alpha))

    def backward(self, g):
        return np.where(self.x > 0, g, g * g.dtype.type(self.alpha))


class PReLU(Function):
    """``max(x, 0) + w·min(x, 0)``; ``w`` is one slope or one per channel on ``base_axis``."""

    def forward(self, x, w, *, base_axis):
        shape = [1] * x.ndim
        if w.size > 1:
            shape[base_axis] = w.size
        self.x, self.w_shape = x, w.shape
        self.w = w.reshape(shape)
        return np.where(x > 0, x, x * self.w)

    def backward(self, g):
        gx = np.where(self.x > 0, g, g * self.w) if self.needs_grad[0] else None
        gw = None
        if self.needs_grad[1]:
            gw = unbroadcast(np.where(self.x > 0, 0, g * self.x), self.w.shape).reshape(self.w_shape)
        return gx, gw


class ELU(Function):
    def forward(self, x, *, alpha):
        self.x, self.alpha = x, x.dtype.type(alpha)
        self.neg = self.alpha * np.expm1(np.minimum(x, 0))
        return np.where(x > 0, x, self.neg)

    def backward(self, g):
        return np.where(self.x > 0, g, g * (self.neg + self.alpha))


class SELU(Function):
    def forward(self, x, *, scale, alpha):
        self.x, self.scale, self.alpha = x, x.dtype.type(scale), x.dtype.type(alpha)
        self.neg = self.scale * self.alpha * np.expm1(np.minimum(x, 0))
        return np.where(x > 0, self.scale * x, self.neg)

    def backward(self, g):
        return np.where(self.x > 0, g * self.scale, g * (self.neg + self.scale * self.alpha))


class Sigmoid(Function):
    def forward(self, x):
        self.y = special.expit(x)
        return self.y

    def backward(self, g):
        return g * self.y * (1 - self.y)


class Swish(Function):
    """``x·sigmoid(x)`` (SiLU)."""

    def forward(self, x):
        self.x, self.s = x, special.expit(x)
        return x * self.s

    def backward(self, g):
        return g * self.s * (1 + self.x * (1 - self.s))


class GELU(Function):
    """GELU ``x·Φ(x)``: exact, with the normal CDF, or (``approximate="tanh"``, nnabla's and so
    NNC's form) ``0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))``."""

    def forward(self, x, *, approximate):
        self.x, self.approximate = x, approximate
        if approximate == "tanh":
            self.t = np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)).astype(x.dtype)
            return 0.5 * x * (1 + self.t)
        self.cdf = (0.5 * (1 + special.erf(x / np.sqrt(2)))).astype(x.dtype)
        return x * self.cdf

    def backward(self, g):
        x = self.x
        if self.approximate == "tanh":
            inner = np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * x * x)
            return g * (0.5 * (1 + self.t) + 0.5 * x * (1 - self.t * self.t) * inner).astype(g.dtype)
        pdf = np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)
        return g * (self.cdf + x * pdf.astype(g.dtype))


class Tanh(Function):
    def forward(self, x):
        self.y = np.tanh(x)
        return self.y

    def backward(self, g):
        return g * (1 - self.y * self.y)


class Softmax(Function):
    def forward(self, x, *, axis):
        self.axis = axis
        self.y = special.softmax(x, axis=axis).astype(x.dtype, copy=False)
        return self.y

    def backward(self, g):
        gy = g * self.y
        return gy - self.y * gy.sum(axis=self.axis, keepdims=True)


class LogSoftmax(Function):
    def forward(self, x, *, axis):
        self.axis = axis
        self.y = special.log_softmax(x, axis=axis).astype(x.dtype, copy=False)
        return self.y

    def backward(self, g):
        return g - np.exp(self.y) * g.sum(axis=self.axis, keepdims=True)


def relu(x: Any) -> Tensor:
    return ReLU.apply(x)


def leaky_relu(x: Any, alpha: float = 0.1) -> Tensor:
    """NNC's default slope is 0.1."""
    return LeakyReLU.apply(x, alpha=alpha)


def prelu(x: Any, w: Any, base_axis: int = 1) -> Tensor:
    return PReLU.apply(x, w, base_axis=base_axis)


def elu(x: Any, alpha: float = 1.0) -> Tensor:
    return ELU.apply(x, alpha=alpha)


def selu(x: Any, scale: float = SELU_SCALE, alpha: float = SELU_ALPHA) -> Tensor:
    return SELU.apply(x, scale=scale, alpha=alpha)


def sigmoid(x: Any) -> Tensor:
    return Sigmoid.apply(x)


def swish(x: Any) -> Tensor:
    return Swish.apply(x)


def gelu(x: Any, approximate: str = "none") -> Tensor:
    if approximate not in ("none", "tanh"):
        msg = f"GELU approximate must be 'none' or 'tanh', got {approximate!r}"
        raise ValueError(msg)
    return GELU.apply(x, approximate=approximate)


def tanh(x: Any) -> Tensor:
    return Tanh.apply(x)


def softmax(x: Any, axis: int = 1) -> Tensor:
    return Softmax.apply(x, axis=axis)


def log_softmax(x: Any, axis: int = 1) -> Tensor:
    return LogSoftmax.apply(x, axis=axis)
