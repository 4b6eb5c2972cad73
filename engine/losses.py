"""Losses, element-wise as in NNC (the caller reduces, usually with ``mean``).

Numerically stable forms: log-sum-exp for softmax cross-entropy, ``log1p(exp(-|x|))`` for
sigmoid cross-entropy, probabilities clipped away from 0 and 1 before logs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special

from engine import functions as F
from engine.tensor import Function, Tensor, as_tensor, unbroadcast


def _prob_eps(dtype: np.dtype) -> float:
    return 1e-7 if dtype == np.float32 else 1e-12


class _Pairwise(Function):
    """Element-wise loss of prediction ``x`` against target ``t`` (broadcasting)."""

    def forward(self, x, t, **config):
        self.x_shape, self.t_shape = x.shape, t.shape
        self.d = x - t
        value, self.dydd = self.compute(self.d, **config)
        return value

    def backward(self, g):
        gd = g * self.dydd
        return unbroadcast(gd, self.x_shape), unbroadcast(-gd, self.t_shape) if self.needs_grad[1] else None


class SquaredError(_Pairwise):
    def compute(self, d):
        return d * d, 2 * d


class AbsoluteError(_Pairwise):
    def compute(self, d):
        return np.abs(d), np.sign(d)


class HuberLoss(_Pairwise):
    """NNC's Huber: ``d²`` inside ``delta``, ``delta·(2|d| - delta)`` outside (no ½)."""

    def compute(self, d, *, delta):
        inside = np.abs(d) < delta
        value = np.where(inside, d * d, delta * (2 * np.abs(d) - delta))
        return value, np.where(inside, 2 * d, 2 * delta * np.sign(d))


class EpsilonInsensitiveLoss(_Pairwise):
    def compute(self, d, *, epsilon):
        outside = np.abs(d) > epsilon
        return np.where(outside, np.abs(d) - epsilon, 0), np.sign(d) * outside


class BinaryCrossEntropy(Function):
    """``-(t·log p + (1-t)·log(1-p))`` for probabilities ``p``."""

    def forward(self, p, t):
        eps = _prob_eps(p.dtype)
        self.p, self.t = np.clip(p, eps, 1 - eps), t
        self.shapes = p.shape, t.shape
        return -(t * np.log(self.p) + (1 - t) * np.log1p(-self.p))

    def backward(self, g):
        gp = unbroadcast(g * (self.p - self.t) / (self.p * (1 - self.p)), self.shapes[0])
        gt = unbroadcast(g * (np.log1p(-self.p) - np.log(self.p)), self.shapes[1]) if self.needs_grad[1] else None
        return gp, gt


class SigmoidCrossEntropy(Function):
    """Binary cross-entropy on logits ``x``: ``max(x,0) - x·t + log(1+exp(-|x|))``."""

    def forward(self, x, t):
        self.x, self.t, self.shapes = x, t, (x.shape, t.shape)
        return np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))

    def backward(self, g):
        gx = unbroadcast(g * (special.expit(self.x) - self.t), self.shapes[0])
        gt = unbroadcast(-g * self.x, self.shapes[1]) if self.needs_grad[1] else None
        return gx, gt


def _labels(t: np.ndarray, x_shape: tuple[int, ...], axis: int) -> np.ndarray:
    """Class indices of shape ``x_shape`` with ``axis`` of size 1 (NNC's layout)."""
    t = np.asarray(t)
    axis %= len(x_shape)
    if t.ndim == len(x_shape) - 1:
        t = np.expand_dims(t, axis)
    target = x_shape[:axis] + (1,) + x_shape[axis + 1 :]
    if t.shape != target:
        msg = f"labels of shape {t.shape} do not fit scores of shape {x_shape} (expected {target})"
        raise ValueError(msg)
    idx = t.astype(np.int64)
    if np.any(idx != t) or idx.min(initial=0) < 0 or idx.max(initial=0) >= x_shape[axis]:
        msg = f"labels must be integers in [0, {x_shape[axis]}), got values in [{t.min()}, {t.max()}]"
        raise ValueError(msg)
    return idx


class SoftmaxCrossEntropy(Function):
    """``logsumexp(x) - x[t]`` over ``axis``; output keeps ``axis`` with size 1."""

    def forward(self, x, t, *, axis):
        axis %= x.ndim
        self.axis, self.idx = axis, _labels(t, x.shape, axis)
        self.log_p = special.log_softmax(x, axis=axis).astype(x.dtype, copy=False)
        return -np.take_along_axis(self.log_p, self.idx, axis=axis)

    def backward(self, g):
        gx = np.exp(self.log_p)
        np.put_along_axis(gx, self.idx, np.take_along_axis(gx, self.idx, axis=self.axis) - 1, axis=self.axis)
        return gx * g, None


class CategoricalCrossEntropy(Function):
    """``-log p[t]`` for probabilities ``p`` (clipped away from 0)."""

    def forward(self, p, t, *, axis):
        axis %= p.ndim
        self.axis, self.idx, self.shape, self.dtype = axis, _labels(t, p.shape, axis), p.shape, p.dtype
        self.pt = np.maximum(np.take_along_axis(p, self.idx, axis=axis), _prob_eps(p.dtype))
        return -np.log(self.pt)

    def backward(self, g):
        gp = np.zeros(self.shape, dtype=self.dtype)
        np.put_along_axis(gp, self.idx, -g / self.pt, axis=self.axis)
        return gp, None


class KLMultinomial(Function):
    """``Σ p·(log p - log q)`` over the axes from ``base_axis`` on."""

    def forward(self, p, q, *, base_axis):
        eps = _prob_eps(p.dtype)
        self.p, self.q = np.maximum(p, eps), np.maximum(q, eps)
        self.red = tuple(range(base_axis, p.ndim))
        self.log_ratio = np.log(self.p) - np.log(self.q)
        return (self.p * self.log_ratio).sum(axis=self.red, keepdims=True).reshape(*p.shape[:base_axis], 1)

    def backward(self, g):
        g = g.reshape(g.shape[:-1] + (1,) * len(self.red))
        return g * (self.log_ratio + 1), -g * self.p / self.q


def squared_error(x: Any, t: Any) -> Tensor:
    return SquaredError.apply(x, t)


def absolute_error(x: Any, t: Any) -> Tensor:
    return AbsoluteError.apply(x, t)


def huber_loss(x: Any, t: Any, delta: float = 1.0) -> Tensor:
    return HuberLoss.apply(x, t, delta=delta)


def epsilon_insensitive_loss(x: Any, t: Any, epsilon: float = 0.1) -> Tensor:
    return EpsilonInsensitiveLoss.apply(x, t, epsilon=epsilon)


def binary_cross_entropy(p: Any, t: Any) -> Tensor:
    return BinaryCrossEntropy.apply(p, t)


def sigmoid_cross_entropy(x: Any, t: Any) -> Tensor:
    return SigmoidCrossEntropy.apply(x, t)


def softmax_cross_entropy(x: Any, t: Any, axis: int = 1) -> Tensor:
    """**Shape:** x (N, K, …); t class indices (N, 1, …) or (N, …) → (N, 1, …)."""
    return SoftmaxCrossEntropy.apply(x, np.asarray(t.data if isinstance(t, Tensor) else t), axis=axis)


def categorical_cross_entropy(p: Any, t: Any, axis: int = 1) -> Tensor:
    return CategoricalCrossEntropy.apply(p, np.asarray(t.data if isinstance(t, Tensor) else t), axis=axis)


def kl_multinomial(p: Any, q: Any, base_axis: int = 1) -> Tensor:
    return KLMultinomial.apply(p, q, base_axis=base_axis)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 2-D Gaussian window (the outer product of :func:`gaussian_kernel`)."""
    g = gaussian_kernel(size, sigma)
    return np.outer(g, g)


def gaussian_kernel(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian."""
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(x: Any, y: Any, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> Tensor:
    """Per-pixel structural similarity map of two image batches (N, C, H, W).

    Local statistics use a Gaussian window, applied as two 1-D passes (it is separable); at the
    borders the window is renormalised over the pixels that exist (no zero-padding bias).
    **Shape:** → (N, C, H, W).
    """
    x, y = as_tensor(x), as_tensor(y)
    g = gaussian_kernel(window, sigma).astype(x.dtype)
    norm = F.separable_filter(np.ones((1, 1, *x.shape[2:]), dtype=x.dtype), g).data

    def local_mean(t: Tensor) -> Tensor:
        return F.separable_filter(t, g) / norm

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x * mu_x
    var_y = local_mean(y * y) - mu_y * mu_y
    cov = local_mean(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return num / den


def ssim_loss(x: Any, y: Any, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> Tensor:
    """``1 - SSIM`` per pixel: 0 for identical images."""
    return 1 - ssim(x, y, window, sigma, data_range)
