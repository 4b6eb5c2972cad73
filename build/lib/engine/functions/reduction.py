"""Reductions over axes with ``keepdims``: sum, mean, max, min."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.tensor import Function, Tensor


def _expand(g: np.ndarray, in_shape: tuple[int, ...], axis: Any, keepdims: bool) -> np.ndarray:
    if axis is None:
        axis = tuple(range(len(in_shape)))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if not keepdims:
        g = np.expand_dims(g, tuple(a % len(in_shape) for a in axes))
    return np.broadcast_to(g, in_shape)


class Sum(Function):
    def forward(self, x, *, axis, keepdims):
        self.in_shape, self.axis, self.keepdims = x.shape, axis, keepdims
        return np.sum(x, axis=axis, keepdims=keepdims)

    def backward(self, g):
        return _expand(g, self.in_shape, self.axis, self.keepdims).copy()


class Mean(Function):
    def forward(self, x, *, axis, keepdims):
        self.in_shape, self.axis, self.keepdims = x.shape, axis, keepdims
        y = np.mean(x, axis=axis, keepdims=keepdims)
        self.scale = y.size / x.size if x.size else 0.0
        return y

    def backward(self, g):
        return _expand(g, self.in_shape, self.axis, self.keepdims) * g.dtype.type(self.scale)


class _Extreme(Function):
    """Max or min; ties share the gradient equally."""

    reduce = staticmethod(np.max)

    def forward(self, x, *, axis, keepdims):
        self.x, self.axis, self.keepdims = x, axis, keepdims
        self.y = self.reduce(x, axis=axis, keepdims=True)
        return self.y if keepdims else np.squeeze(self.y, axis=axis)

    def backward(self, g):
        hit = self.x == self.y
        count = hit.sum(axis=self.axis, keepdims=True)
        g = g if self.keepdims else np.expand_dims(g, self.axis if self.axis is not None else tuple(range(self.x.ndim)))
        return hit * (g / count)


class Max(_Extreme):
    reduce = staticmethod(np.max)


class Min(_Extreme):
    reduce = staticmethod(np.min)


def sum(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return Sum.apply(x, axis=axis, keepdims=keepdims)


def mean(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:
    return Mean.apply(x, axis=axis, keepdims=keepdims)


def max(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return Max.apply(x, axis=axis, keepdims=keepdims)


def min(x: Any, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return Min.apply(x, axis=axis, keepdims=keepdims)
