"""Affine, convolution (1-D/2-D, stride, padding, dilation, groups) and deconvolution."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from engine.functions import windows as win
from engine.tensor import Function, Tensor


class Affine(Function):
    """``y = flatten(x, base_axis) @ W + b`` with ``W`` of shape ``(in, *out)`` as in NNC."""

    def forward(self, x, w, b, *, base_axis):
        self.x_shape, self.w_shape = x.shape, w.shape
        self.x = x.reshape(int(np.prod(x.shape[:base_axis])), -1)
        self.w = w.reshape(w.shape[0], -1)
        y = self.x @ self.w
        if b is not None:
            y += b.reshape(1, -1)
        return y.reshape(*x.shape[:base_axis], *w.shape[1:])

    def backward(self, g):
        g = g.reshape(self.x.shape[0], -1)
        gx = (g @ self.w.T).reshape(self.x_shape) if self.needs_grad[0] else None
        gw = (self.x.T @ g).reshape(self.w_shape) if self.needs_grad[1] else None
        gb = g.sum(axis=0).reshape(self.w_shape[1:]) if self.needs_grad[2] else None
        return gx, gw, gb


def group_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-group matrix products (G, m, k) @ (G, k, n); one plain 2-D GEMM when G is 1, which
    lets BLAS take transposed operands without the stacked-matmul overhead."""
    if a.shape[0] == 1:
        return (a[0] @ b[0])[None]
    return np.matmul(a, b)


def group_matmul_nt(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-group ``a @ b^T`` for (G, m, n) and (G, k, n) row-major operands that share their long
    axis ``n`` (a weight gradient: output gradient × input columns), computed with the operand of
    more rows first and transposed back: OpenBLAS runs these 1.3-1.9x faster that way round (the
    detector's 16-channel layers: 49 → 93 GFLOP/s on this 2-core machine)."""
    if a.shape[1] >= b.shape[1]:
        return group_matmul(a, b.transpose(0, 2, 1))
    return group_matmul(b, a.transpose(0, 2, 1)).transpose(0, 2, 1)


class Convolution(Function):
    """Cross-correlation over 1, 2 or 3 spatial axes with NNC's weight layout ``(OC, C/G, *k)``:
    one im2col and one GEMM per group."""

    def forward(self, x, w, b, *, pads, stride, dilation, group):
        n, c, *spatial = x.shape
        oc, cg, *kernel = w.shape
        if c != cg * group:
            msg = f"convolution: input has {c} channels, weight expects {cg} x group {group}"
            raise ValueError(msg)
        out = [win.out_size(*a) for a in zip(spatial, kernel, stride, dilation, pads, strict=True)]
        if min(out) < 1:
            msg = f"convolution: kernel {tuple(kernel)} does not fit input {tuple(spatial)} with pads {pads}"
            raise ValueError(msg)
        self.geo = win.Geometry(n, c, spatial, pads, kernel, stride, dilation, out, x.dtype)
        self.w, self.group, self.kernel = w.reshape(group, oc // group, -1), group, kernel
        # Where both gradients come from the output gradient's columns (self.transposed), the
        # input's columns are never needed: the output is a sum of shifted products instead;
        # else they are kept when small (win.KEEP_COLUMNS) and made again in backward from the
        # input, K times smaller, when not.
        self.transposed = _transposed_geometry(self.geo, oc, group)
        self.x, self.col = x, None
        y = np.empty((n, oc, *out), dtype=x.dtype)
        if self.transposed is not None:
            self._shifted_products(x, y)
        else:
            self._column_products(x, y)
        if b is not None:
            y += b.reshape(1, -1, *([1] * len(out)))
        return y

    def _column_products(self, x: np.ndarray, y: np.ndarray) -> None:
        """``y`` as the product of the weights with the input's columns (im2col), per group."""
        group, oc = self.group, y.shape[1]
        if self.geo.column_bytes <= win.KEEP_COLUMNS:
            self.col = self.geo.im2col(self.geo.pad(x)).reshape(group, -1, self.geo.columns)
            runs = [(slice(0, len(x)), self.geo)]
        else:
            runs = self.geo.batches()
        for part, geo in runs:
            col = self.col if self.col is not None else geo.im2col(geo.pad(x[part])).reshape(group, -1, geo.columns)
            geo.from_grid(group_matmul(self.w, col).reshape(oc, -1), out=y[part])

    def _shifted_products(self, x: np.ndarray, y: np.ndarray) -> None:
        """``y`` (stride 1, one group) as the sum over kernel offsets of the products of each
        offset's weights with the padded input, read at that offset: one GEMM of K·OC rows on the
        input as it is, then K shifted adds of the output's size. Where the output has no more
        channels than the input this moves less memory than im2col's K copies of the input (the
        detector's U-Net, 48 → 16 channels at 64 px: about half the time)."""
        oc, c = y.shape[1], self.geo.c
        offsets = win.kernel_offsets(self.kernel)
        stacked = np.ascontiguousarray(np.moveaxis(self.w[0].reshape(oc, c, len(offsets)), -1, 0)).reshape(-1, c)
        for part, geo in self.geo.batches():
            products = stacked @ geo.pad(x[part]).reshape(c, -1)
            products = products.reshape(len(offsets), oc, geo.n, *geo.padded)
            total = None
            for k, offset in enumerate(offsets):
                at = win.offset_slices(offset, geo.stride, geo.dilation, geo.out)
                view = products[(k, slice(None), slice(None), *at)]
                total = view.copy() if total is None else _add(total, view)
            y[part] = total.swapaxes(0, 1)

    def backward(self, g):
        gb = g.sum(axis=(0, *range(2, g.ndim))) if self.needs_grad[2] else None
        if self.transposed is not None:
            return (*self._gradients_by_convolution(g), gb)
        group, oc = self.group, g.shape[1]
        gx = np.empty(self.x.shape, dtype=g.dtype) if self.needs_grad[0] else None
        gw = None
        runs = [(slice(0, g.shape[0]), self.geo)] if self.col is not None else self.geo.batches()
        for part, geo in runs:
            g_grid = geo.to_grid(g[part]).reshape(group, oc // group, -1)
            if gx is not None:
                dcol = group_matmul(self.w.transpose(0, 2, 1), g_grid).reshape(-1, geo.columns)
                geo.crop(geo.col2im(dcol), out=gx[part])
            if self.needs_grad[1]:
                col = self.col if self.col is not None else geo.im2col(geo.pad(self.x[part]))
                gw = _add(gw, group_matmul_nt(g_grid, col.reshape(group, -1, geo.columns)))
        return gx, None if gw is None else gw.reshape(oc, -1, *self.kernel), gb

    def _gradients_by_convolution(self, g: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Both gradients from the columns of ``g`` padded for the flipped kernel (OC·K rows, where
        col2im would add C·K): the input's is their product with the flipped, transposed kernel,
        the weight's their product with the input on the same grid (kernel offsets flipped back)."""
        w = self.w.reshape(g.shape[1], self.geo.c, *self.kernel)  # (OC, C, *k): one group
        spatial_axes = tuple(range(2, w.ndim))
        flipped = np.ascontiguousarray(np.flip(w, spatial_axes).swapaxes(0, 1)).reshape(self.geo.c, -1)
        gx = np.empty(self.x.shape, dtype=g.dtype) if self.needs_grad[0] else None
        per_offset = None
        for part, geo in self.transposed.batches():
            cols = geo.im2col(geo.pad(g[part]))
            if gx is not None:
                geo.from_grid(flipped @ cols, out=gx[part])
            if self.needs_grad[1]:
                per_offset = _add(per_offset, group_matmul_nt(cols[None], geo.to_grid(self.x[part])[None])[0])
        if per_offset is None:
            return gx, None
        per_offset = per_offset.reshape(w.shape[0], *self.kernel, w.shape[1])
        kernel_axes = tuple(range(1, w.ndim - 1))  # (OC, *k, C)
        return gx, np.ascontiguousarray(np.moveaxis(np.flip(per_offset, kernel_axes), -1, 1))


def _add(total: np.ndarray | None, term: np.ndarray) -> np.ndarray:
    if total is None:
        return term
    total += term
    return total


def _transposed_geometry(geo: win.Geometry, oc: int, group: int) -> win.Geometry | None:
    """The geometry on which both gradients come from the output gradient's columns (the input's
    as a stride-1 convolution of it with the flipped kernel), where that is the cheaper way: one
    group, stride 1, no more output channels than input channels, padding within the kernel's
    span (else None: the input's columns are kept, and col2im gives the input gradient)."""
    spans = [d * (k - 1) for k, d in zip(geo.kernel, geo.dilation, strict=True)]
    if group != 1 or any(s != 1 for s in geo.stride) or oc > geo.c:
        return None
    if any(lo > span or hi > span for (lo, hi), span in zip(geo.pads, spans, strict=True)):
        return None
    pads = tuple((span - lo, span - hi) for (lo, hi), span in zip(geo.pads, spans, strict=True))
    return win.Geometry(geo.n, oc, geo.out, pads, geo.kernel, geo.stride, geo.dilation, geo.spatial, geo.dtype)


class Deconvolution(Function):
    """Transposed convolution with NNC's weight layout ``(C, OC/G, *k)``: the adjoint of
    :class:`Convolution` (GEMM then col2im forward, im2col then GEMM backward)."""

    def forward(self, x, w, b, *, pads, stride, dilation, group, output_padding):
        n, c, *spatial = x.shape
        cw, ocg, *kernel = w.shape
        if c != cw:
            msg = f"deconvolution: input has {c} channels, weight expects {cw}"
            raise ValueError(msg)
        full = [(i - 1) * s + d * (k - 1) + 1 for i, s, d, k in zip(spatial, stride, dilation, kernel, strict=True)]
        out = [f - lo - hi + op for f, (lo, hi), op in zip(full, pads, output_padding, strict=True)]
        if min(out) < 1:
            msg = f"deconvolution: pads {pads} leave no output for input {tuple(spatial)}"
            raise ValueError(msg)
        extent = [max(f, lo + o) for f, (lo, _), o in zip(full, pads, out, strict=True)]
        out_pads = tuple((lo, e - lo - o) for (lo, _), e, o in zip(pads, extent, out, strict=True))
        self.geo = win.Geometry(n, ocg * group, out, out_pads, kernel, stride, dilation, spatial, x.dtype)
        self.x_grid = self.geo.to_grid(x).reshape(group, c // group, -1)
        self.w, self.group, self.kernel, self.c = w.reshape(group, c // group, -1), group, kernel, c
        col = group_matmul(self.w.transpose(0, 2, 1), self.x_grid).reshape(-1, self.geo.columns)
        y = self.geo.crop(self.geo.col2im(col))
        if b is not None:
            y += b.reshape(1, -1, *([1] * len(out)))
        return y

    def backward(self, g):
        dcol = self.geo.im2col(self.geo.pad(g)).reshape(self.group, -1, self.geo.columns)
        gx = gw = gb = None
        if self.needs_grad[0]:
            gx = self.geo.from_grid(group_matmul(self.w, dcol).reshape(self.c, -1))
        if self.needs_grad[1]:
            gw = group_matmul_nt(self.x_grid, dcol).reshape(self.c, -1, *self.kernel)
        if self.needs_grad[2]:
            gb = g.sum(axis=(0, *range(2, g.ndim)))
        return gx, gw, gb


class SeparableFilter(Function):
    """One odd-length 1-D kernel correlated along each of ``axes`` in turn, zero outside the
    input, output the input's size: a separable blur in two cheap passes instead of a K×K
    convolution. Its adjoint is the flipped kernel along the same axes, in reverse order."""

    def forward(self, x, *, kernel, axes):
        self.kernel, self.axes = kernel.astype(x.dtype), axes
        return _correlate(x, self.kernel, axes)

    def backward(self, g):
        return _correlate(g, self.kernel[::-1], self.axes[::-1])


def _correlate(x: np.ndarray, kernel: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    for axis in axes:
        x = ndimage.correlate1d(x, kernel, axis=axis, mode="constant", cval=0.0)
    return x


def _conv_geometry(w: Any, pad: Any, stride: Any, dilation: Any, border_mode: str | None) -> tuple:
    nd = np.ndim(w.data if isinstance(w, Tensor) else w) - 2
    stride = win.as_tuple(stride, nd, "stride")
    dilation = win.as_tuple(dilation, nd, "dilation")
    kernel = (w.shape if isinstance(w, Tensor) else np.shape(w))[2:]
    pads = win.border_mode_pads(border_mode, kernel, dilation) if border_mode else win.as_pads(pad, nd)
    return pads, stride, dilation


def affine(x: Any, w: Any, b: Any = None, base_axis: int = 1) -> Tensor:
    """**Shape:** x (*B, *F) with prod(F) = in; w (in, *out); b (*out) → (*B, *out)."""
    return Affine.apply(x, w, b, base_axis=base_axis)


def convolution(
    x: Any,
    w: Any,
    b: Any = None,
    pad: Any = 0,
    stride: Any = 1,
    dilation: Any = 1,
    group: int = 1,
    border_mode: str | None = None,
) -> Tensor:
    """N-D convolution (1-D sensor windows, 2-D images).

    ``border_mode`` (NNC's ``valid``/``same``/``full``) overrides ``pad`` when given.

    **Shape:** x (N, C, *S); w (OC, C/group, *k); b (OC,) → (N, OC, *out) with
    ``out = (S + lo + hi - dilation·(k-1) - 1) // stride + 1``.
    """
    pads, stride, dilation = _conv_geometry(w, pad, stride, dilation, border_mode)
    return Convolution.apply(x, w, b, pads=pads, stride=stride, dilation=dilation, group=group)


def depthwise_convolution(
    x: Any, w: Any, b: Any = None, pad: Any = 0, stride: Any = 1, dilation: Any = 1, border_mode: str | None = None
) -> Tensor:
    """Depthwise convolution: one group per input channel. **Shape:** w (C·multiplier, 1, *k)."""
    channels = (x.shape if isinstance(x, Tensor) else np.shape(x))[1]
    return convolution(x, w, b, pad, stride, dilation, group=channels, border_mode=border_mode)


def separable_filter(x: Any, kernel: Any, axes: Sequence[int] = (2, 3)) -> Tensor:
    """Correlate ``kernel`` (1-D, odd length, centred) along each of ``axes``, zero padded, same
    size: e.g. a Gaussian blur per channel. **Shape:** x (N, C, *S) → (N, C, *S)."""
    kernel = np.asarray(kernel)
    if kernel.ndim != 1 or len(kernel) % 2 == 0:
        msg = f"separable_filter needs a 1-D kernel of odd length, got shape {kernel.shape}"
        raise ValueError(msg)
    x = x if isinstance(x, Tensor) else np.asarray(x)
    axes = tuple(a % x.ndim for a in axes)
    return SeparableFilter.apply(x, kernel=kernel, axes=axes)


def deconvolution(
    x: Any,
    w: Any,
    b: Any = None,
    pad: Any = 0,
    stride: Any = 1,
    dilation: Any = 1,
    group: int = 1,
    output_padding: Any = 0,
) -> Tensor:
    """Transposed convolution.

    **Shape:** x (N, C, *S); w (C, OC/group, *k); b (OC,) → (N, OC, *out) with
    ``out = (S - 1)·stride - lo - hi + dilation·(k-1) + 1 + output_padding``.
    """
    pads, stride, dilation = _conv_geometry(w, pad, stride, dilation, None)
    output_padding = win.as_tuple(output_padding, len(stride), "output_padding")
    return Deconvolution.apply(
        x, w, b, pads=pads, stride=stride, dilation=dilation, group=group, output_padding=output_padding
    )


def conv_output_shape(
    in_shape: Sequence[int],
    out_channels: int,
    kernel: Sequence[int],
    pads: win.Pads,
    stride: Sequence[int],
    dilation: Sequence[int],
) -> tuple[int, ...]:
    """Output shape of :func:`convolution` without data (``in_shape`` excludes the batch)."""
    spatial = [win.out_size(*a) for a in zip(in_shape[1:], kernel, stride, dilation, pads, strict=True)]
    return (out_channels, *spatial)


def deconv_output_shape(
    in_shape: Sequence[int],
    out_channels: int,
    kernel: Sequence[int],
    pads: win.Pads,
    stride: Sequence[int],
    dilation: Sequence[int],
    output_padding: Sequence[int],
) -> tuple[int, ...]:
    """Output shape of :func:`deconvolution` without data (``in_shape`` excludes the batch)."""
    spatial = [
        (i - 1) * s - lo - hi + d * (k - 1) + 1 + op
        for i, s, (lo, hi), d, k, op in zip(in_shape[1:], stride, pads, dilation, kernel, output_padding, strict=True)
    ]
    return (out_channels, *spatial)
