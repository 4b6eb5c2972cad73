"""Shape manipulation: reshape, flatten, transpose, broadcast, concatenate, split, slice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.tensor import Function, Tensor, as_tensor


class Reshape(Function):
    def forward(self, x, *, shape):
        self.in_shape = x.shape
        return x.reshape(shape)

    def backward(self, g):
        return g.reshape(self.in_shape)


class Transpose(Function):
    def forward(self, x, *, axes):
        self.axes = tuple(range(x.ndim))[::-1] if axes is None else tuple(axes)
        return np.transpose(x, self.axes)

    def backward(self, g):
        return np.transpose(g, np.argsort(self.axes))


class Broadcast(Function):
    def forward(self, x, *, shape):
        self.in_shape = x.shape
        return np.broadcast_to(x, shape)

    def backward(self, g):
        from engine.tensor import unbroadcast

        return unbroadcast(g, self.in_shape)


class Concatenate(Function):
    def forward(self, *xs, axis):
        self.axis = axis
        self.bounds = np.cumsum([x.shape[axis] for x in xs])[:-1]
        return np.concatenate(xs, axis=axis)

    def backward(self, g):
        return tuple(np.split(g, self.bounds, axis=self.axis))


class Slice(Function):
    """Numpy indexing; basic slices are views, advanced indices scatter-add their gradient."""

    def forward(self, x, *, index):
        self.in_shape, self.dtype, self.index = x.shape, x.dtype, index
        return x[index]

    def backward(self, g):
        out = np.zeros(self.in_shape, dtype=self.dtype)
        if _is_basic(self.index):
            out[self.index] = g
        else:
            np.add.at(out, self.index, g)
        return out


def _is_basic(index: Any) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(p, (int, np.integer, slice)) or p is None or p is Ellipsis for p in parts)


def reshape(x: Any, shape: Sequence[int]) -> Tensor:
    """Reshape; one entry may be -1. **Shape:** same number of elements."""
    return Reshape.apply(x, shape=tuple(int(s) for s in shape))


def flatten(x: Any, base_axis: int = 1) -> Tensor:
    """Keep axes before ``base_axis``, merge the rest: (N, C, H, W) → (N, C·H·W)."""
    t = as_tensor(x)
    return reshape(t, (*t.shape[:base_axis], -1))


def transpose(x: Any, axes: Sequence[int] | None = None) -> Tensor:
    return Transpose.apply(x, axes=axes)


def broadcast(x: Any, shape: Sequence[int]) -> Tensor:
    return Broadcast.apply(x, shape=tuple(shape))


def concatenate(*xs: Any, axis: int = 1) -> Tensor:
    return Concatenate.apply(*xs, axis=axis)


def split(x: Any, sections: int | Sequence[int], axis: int = 1) -> list[Tensor]:
    """Split along ``axis`` into equal ``sections`` or at the given indices (numpy's rule)."""
    t = as_tensor(x)
    n = t.shape[axis]
    if isinstance(sections, int):
        if n % sections:
            msg = f"split: axis {axis} of size {n} does not divide into {sections} sections"
            raise ValueError(msg)
        cuts = list(range(0, n + 1, n // sections))
    else:
        cuts = [0, *sections, n]
    pre = (slice(None),) * (axis % t.ndim)
    return [slice_(t, (*pre, slice(a, b))) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def slice_(x: Any, index: Any) -> Tensor:
    return Slice.apply(x, index=index)
