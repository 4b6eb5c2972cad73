"""Max / average / sum pooling, global average pooling, unpooling and upsampling."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.functions import windows as win
from engine.tensor import Function, Tensor, as_tensor


def pool_geometry(
    spatial: Sequence[int], kernel: Sequence[int], stride: Sequence[int], pads: win.Pads, ignore_border: bool
) -> tuple[list[int], win.Pads]:
    """Output size and the padding actually applied (``ignore_border=False`` adds high padding
    so that partial windows at the border are kept, as in NNC)."""
    out, used = [], []
    for s, k, st, (lo, hi) in zip(spatial, kernel, stride, pads, strict=True):
        span = s + lo + hi - k
        o = span // st + 1 if ignore_border else math.ceil(max(span, 0) / st) + 1
        o = max(o, 1) if not ignore_border else o
        extra = max((o - 1) * st + k - (s + lo + hi), 0)
        out.append(o)
        used.append((lo, hi + extra))
    if min(out) < 1:
        msg = f"pooling: kernel {tuple(kernel)} does not fit input {tuple(spatial)}"
        raise ValueError(msg)
    return out, tuple(used)


class _Pooling(Function):
    """Pooling as a loop over the K kernel offsets; pooling never mixes channels, so the
    work stays in the (N, C, *S) layout and pads only when it must."""

    def setup(self, x, kernel, stride, pads, ignore_border, fill):
        self.out, self.pads = pool_geometry(x.shape[2:], kernel, stride, pads, ignore_border)
        self.x_shape = x.shape
        self.padded = any(lo or hi for lo, hi in self.pads)
        if self.padded:
            shape = (*x.shape[:2], *(s + lo + hi for s, (lo, hi) in zip(x.shape[2:], self.pads, strict=True)))
            self.xp = np.full(shape, fill, dtype=x.dtype)
            self.xp[self.inner()] = x
        else:
            self.xp = x
        self.overlap = any(k > s for k, s in zip(kernel, stride, strict=True))
        lead = (slice(None), slice(None))
        dil = (1,) * len(kernel)
        return [lead + win.offset_slices(o, stride, dil, self.out) for o in win.kernel_offsets(kernel)]

    def inner(self):
        spatial = self.x_shape[2:]
        return (slice(None), slice(None), *(slice(lo, lo + s) for (lo, _), s in zip(self.pads, spatial, strict=True)))

    def scatter(self, parts):
        """Sum per-offset gradients (N, C, *out) back into the input's shape."""
        buf = np.zeros(self.xp.shape, dtype=self.xp.dtype)
        for sl, part in zip(self.slices, parts, strict=True):
            if self.overlap:
                buf[sl] += part
            else:
                buf[sl] = part
        return buf[self.inner()] if self.padded else buf


class MaxPooling(_Pooling):
    """The gradient goes to the first maximum of each window, recovered by equality in backward
    (far cheaper in numpy than tracking arg-max indices in forward)."""

    def forward(self, x, *, kernel, stride, pads, ignore_border):
        self.slices = self.setup(x, kernel, stride, pads, ignore_border, -np.inf)
        self.y = self.xp[self.slices[0]].copy()
        for sl in self.slices[1:]:
            np.maximum(self.y, self.xp[sl], out=self.y)
        return self.y

    def backward(self, g):
        remaining = g.copy()

        def parts():  # each window's gradient goes to its first maximum; rem - rem·1 is exactly 0
            for sl in self.slices:
                part = remaining * (self.xp[sl] == self.y)
                np.subtract(remaining, part, out=remaining)
                yield part

        return self.scatter(parts())


class SumPooling(_Pooling):
    def forward(self, x, *, kernel, stride, pads, ignore_border, divisor=None):
        self.slices = self.setup(x, kernel, stride, pads, ignore_border, 0.0)
        y = self.xp[self.slices[0]].copy()
        for sl in self.slices[1:]:
            y += self.xp[sl]
        self.divisor = divisor
        if divisor is not None:
            y /= divisor
        return y

    def backward(self, g):
        if self.divisor is not None:
            g = g / self.divisor
        return self.scatter(g for _ in self.slices)


def _pool_args(x: Tensor, kernel: Any, stride: Any, pad: Any) -> tuple:
    nd = x.ndim - 2
    kernel = win.as_tuple(kernel, nd, "kernel")
    stride = kernel if stride is None else win.as_tuple(stride, nd, "stride")
    return kernel, stride, win.as_pads(pad, nd)


def max_pooling(x: Any, kernel: Any, stride: Any = None, ignore_border: bool = True, pad: Any = 0) -> Tensor:
    """**Shape:** (N, C, *S) → (N, C, *out); stride defaults to the kernel, as in NNC."""
    x = as_tensor(x)
    kernel, stride, pads = _pool_args(x, kernel, stride, pad)
    return MaxPooling.apply(x, kernel=kernel, stride=stride, pads=pads, ignore_border=ignore_border)


def sum_pooling(x: Any, kernel: Any, stride: Any = None, ignore_border: bool = True, pad: Any = 0) -> Tensor:
    x = as_tensor(x)
    kernel, stride, pads = _pool_args(x, kernel, stride, pad)
    return SumPooling.apply(x, kernel=kernel, stride=stride, pads=pads, ignore_border=ignore_border)


def average_divisor(
    spatial: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    pads: win.Pads,
    ignore_border: bool,
    including_pad: bool = True,
) -> np.ndarray:
    """Cells counted by each average-pooling window, shape (1, 1, *out): explicit padding counts
    when ``including_pad``; border cells added by ``ignore_border=False`` never do."""
    _, used = pool_geometry(spatial, kernel, stride, pads, ignore_border)
    mask = np.zeros((1, 1, *[s + lo + hi for s, (lo, hi) in zip(spatial, used, strict=True)]), np.float64)
    counted = [
        slice(0, lo + s + p_hi) if including_pad else slice(lo, lo + s)
        for s, (lo, _), (_, p_hi) in zip(spatial, used, pads, strict=True)
    ]
    mask[(0, 0, *counted)] = 1
    no_pad = tuple((0, 0) for _ in kernel)
    return SumPooling().forward(mask, kernel=kernel, stride=stride, pads=no_pad, ignore_border=True)


def average_pooling(
    x: Any, kernel: Any, stride: Any = None, ignore_border: bool = True, pad: Any = 0, including_pad: bool = True
) -> Tensor:
    """Mean over each window. ``including_pad`` counts explicit zero padding in the mean;
    border cells added by ``ignore_border=False`` are never counted."""
    x = as_tensor(x)
    kernel, stride, pads = _pool_args(x, kernel, stride, pad)
    counts = average_divisor(x.shape[2:], kernel, stride, pads, ignore_border, including_pad).astype(x.dtype)
    return SumPooling.apply(x, kernel=kernel, stride=stride, pads=pads, ignore_border=ignore_border, divisor=counts)


def global_average_pooling(x: Any) -> Tensor:
    """**Shape:** (N, C, *S) → (N, C, 1, …, 1)."""
    from engine.functions.reduction import mean

    x = as_tensor(x)
    return mean(x, axis=tuple(range(2, x.ndim)), keepdims=True)


class Unpooling(Function):
    """Repeat every element ``kernel`` times along each spatial axis (nearest upsampling): one
    strided copy per kernel offset forward, one strided add per offset backward."""

    def forward(self, x, *, kernel):
        n, c, *spatial = x.shape
        self.kernel, self.slices = (
            kernel,
            [
                (slice(None), slice(None), *(slice(o, None, k) for o, k in zip(offset, kernel, strict=True)))
                for offset in win.kernel_offsets(kernel)
            ],
        )
        y = np.empty((n, c, *(s * k for s, k in zip(spatial, kernel, strict=True))), dtype=x.dtype)
        for sl in self.slices:
            y[sl] = x
        return y

    def backward(self, g):
        gx = g[self.slices[0]].copy()
        for sl in self.slices[1:]:
            gx += g[sl]
        return gx


def unpooling(x: Any, kernel: Any) -> Tensor:
    x = as_tensor(x)
    return Unpooling.apply(x, kernel=win.as_tuple(kernel, x.ndim - 2, "kernel"))


def bilinear_matrix(size_in: int, size_out: int, dtype: Any = np.float32) -> np.ndarray:
    """(size_out, size_in) linear interpolation with half-pixel centres (ONNX ``half_pixel``)."""
    scale = size_in / size_out
    src = np.clip((np.arange(size_out) + 0.5) * scale - 0.5, 0, size_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, size_in - 1)
    frac = src - lo
    m = np.zeros((size_out, size_in), dtype=np.float64)
    np.add.at(m, (np.arange(size_out), lo), 1 - frac)
    np.add.at(m, (np.arange(size_out), hi), frac)
    return m.astype(dtype)


class BilinearUpsample(Function):
    """Separable linear interpolation of the last one or two axes: y = A_h · x · A_wᵀ."""

    def forward(self, x, *, size):
        self.mats = [bilinear_matrix(i, o, x.dtype) for i, o in zip(x.shape[2:], size, strict=True)]
        y = x @ self.mats[-1].T
        if len(self.mats) == 2:
            y = self.mats[0] @ y
        return y

    def backward(self, g):
        if len(self.mats) == 2:
            g = self.mats[0].T @ g
        return g @ self.mats[-1]


def upsample(x: Any, scale: Any = 2, mode: str = "nearest", size: Sequence[int] | None = None) -> Tensor:
    """Upsample 1-D or 2-D maps by an integer ``scale`` or to ``size``; ``nearest`` or ``bilinear``."""
    x = as_tensor(x)
    nd = x.ndim - 2
    if size is None:
        scales = win.as_tuple(scale, nd, "scale")
        size = tuple(s * k for s, k in zip(x.shape[2:], scales, strict=True))
    if mode == "nearest":
        kernel = [o // i for o, i in zip(size, x.shape[2:], strict=True)]
        if any(o % i for o, i in zip(size, x.shape[2:], strict=True)):
            msg = f"nearest upsampling needs integer factors, got {x.shape[2:]} → {tuple(size)}"
            raise ValueError(msg)
        return Unpooling.apply(x, kernel=tuple(kernel))
    if mode == "bilinear":
        if nd not in (1, 2):
            msg = f"bilinear upsampling supports 1 or 2 spatial axes, got {nd}"
            raise ValueError(msg)
        return BilinearUpsample.apply(x, size=tuple(size))
    msg = f"upsample mode {mode!r} is not 'nearest' or 'bilinear'"
    raise ValueError(msg)
