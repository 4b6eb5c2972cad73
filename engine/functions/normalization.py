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
        if batch_stat:
            mu = x.mean(axis=self.red, keepdims=True)
            v = x.var(axis=self.red, keepdims=True)
            n = x.size // mu.size
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
        y = x - self.mu
        y *= self.inv * self.gamma
        y += beta.reshape(shape)
        return y

    def backward(self, g):
        xhat = self.x - self.mu
        xhat *= self.inv
        gbeta = g.sum(axis=self.red).reshape(-1) if self.needs_grad[1] else None
        g_xhat_sum = (g * xhat).sum(axis=self.red, keepdims=True)
        ggamma = g_xhat_sum.reshape(-1) if self.needs_grad[2] else None
        gx = None
        if self.needs_grad[0]:
            scale = self.gamma * self.inv
            if self.batch_stat:
                n = g.size // scale.size
                g_sum = g.sum(axis=self.red, keepdims=True)
                xhat *= g_xhat_sum
                xhat += g_sum
                xhat *= 1.0 / n
                gx = scale * (g - xhat)
            else:
                gx = g * scale
        return gx, gbeta, ggamma


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
