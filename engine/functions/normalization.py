"""Batch normalization and dropout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.tensor import Function, Tensor


class BatchNormalization(Function):
    """Normalise over every axis but ``axes``; ``beta``/``gamma`` hold one value per channel.

    With ``batch_stat`` the batch statistics are used and the running ``mean``/``var`` arrays
    are updated in place (``running = decay·running + (1-decay)·batch``, unbiased variance);
    otherwise the running statistics are used.
    """

    def forward(self, x, beta, gamma, *, mean, var, axes, decay, eps, batch_stat):
        self.red = tuple(i for i in range(x.ndim) if i not in axes)
        shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
        self.batch_stat = batch_stat
        # channels of a C-contiguous (N, C, ...) array: sums as contiguous runs (1.3-1.6x faster)
        self.per_channel = tuple(axes) == (1,) and x.ndim > 2 and x.flags.c_contiguous
        y = None
        if batch_stat:
            n = x.size // int(np.prod(shape))
            if self.per_channel:
                mu = (_channel_sums(x) / n).reshape(shape)
                y = x - mu
                v = (_channel_dots(y, y) / n).reshape(shape)
            else:
                mu = x.mean(axis=self.red, keepdims=True)
                v = x.var(axis=self.red, keepdims=True)
            mean *= decay
            mean += (1 - decay) * mu.reshape(mean.shape)
            var *= decay
            var += (1 - decay) * v.reshape(var.shape) * (n / max(n - 1, 1))
        else:
            mu, v = mean.reshape(shape).astype(x.dtype), var.reshape(shape).astype(x.dtype)
        self.inv = (1.0 / np.sqrt(v + eps)).astype(x.dtype)
        # the input (which the graph holds anyway) is kept, not the normalised copy of it
        self.x, self.mu = x, mu.astype(x.dtype)
        self.gamma = gamma.reshape(shape)
        if y is None:
            y = x - self.mu
        y *= self.inv * self.gamma
        y += beta.reshape(shape)
        return y

    def _sums(self, a: np.ndarray) -> np.ndarray:
        """``a`` summed over every axis but the channels', keeping dimensions."""
        if self.per_channel and a.flags.c_contiguous:
            return _channel_sums(a).reshape(self.inv.shape)
        return a.sum(axis=self.red, keepdims=True)

    def backward(self, g):
        xhat = self.x - self.mu
        xhat *= self.inv
        gbeta = self._sums(g).reshape(-1) if self.needs_grad[1] else None
        if self.per_channel and g.flags.c_contiguous:
            g_xhat_sum = _channel_dots(g, xhat).reshape(self.inv.shape)
        else:
            g_xhat_sum = (g * xhat).sum(axis=self.red, keepdims=True)
        ggamma = g_xhat_sum.reshape(-1) if self.needs_grad[2] else None
        gx = None
        if self.needs_grad[0]:
            scale = self.gamma * self.inv
            gx = g * scale
            if self.batch_stat:  # scale·(g - (xhat·Σg·xhat + Σg)/n), in place: two passes fewer
                n = g.size // scale.size
                xhat *= scale * g_xhat_sum / n
                gx -= xhat
                gx -= scale * self._sums(g) / n
        return gx, gbeta, ggamma


def _channel_sums(a: np.ndarray) -> np.ndarray:
    """(N, C, ...) C-contiguous → (C,): each channel's sum, run by run."""
    n, c = a.shape[:2]
    return a.reshape(n, c, -1).sum(axis=2).sum(axis=0)


def _channel_dots(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, C, ...) × (N, C, ...) → (C,): each channel's sum of products, without their product array."""
    n, c = a.shape[:2]
    return np.einsum("nci,nci->c", a.reshape(n, c, -1), b.reshape(n, c, -1))


class Dropout(Function):
    def forward(self, x, *, p, seed):
        keep = np.random.default_rng(seed).random(x.shape, dtype=np.float32) >= p
        self.mask = keep * x.dtype.type(1.0 / (1.0 - p))
        return x * self.mask

    def backward(self, g):
        return g * self.mask


def batch_normalization(
    x: Any,
    beta: Any,
    gamma: Any,
    mean: np.ndarray,
    var: np.ndarray,
    axes: Sequence[int] = (1,),
    decay_rate: float = 0.9,
    eps: float = 1e-4,
    batch_stat: bool = True,
) -> Tensor:
    """NNC's batch normalization (defaults decay 0.9, eps 1e-4).

    **Shape:** x (N, C, …); beta, gamma, mean, var (C,) for ``axes=(1,)``.
    """
    return BatchNormalization.apply(
        x, beta, gamma, mean=mean, var=var, axes=tuple(axes), decay=decay_rate, eps=eps, batch_stat=batch_stat
    )


def dropout(x: Any, p: float = 0.5, train: bool = True, seed: int | None = None) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p); identity when
    ``train`` is false."""
    if not 0.0 <= p < 1.0:
        msg = f"dropout probability must be in [0, 1), got {p}"
        raise ValueError(msg)
    if not train or p == 0.0:
        from engine.tensor import as_tensor

        return as_tensor(x)
    return Dropout.apply(x, p=p, seed=seed)
