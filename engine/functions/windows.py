"""Sliding-window helpers shared by convolution, deconvolution and pooling.

Convolution work is laid out channel-first, ``(C, N, *spatial)``, so that im2col produces a
``(C·K, N·OUT)`` column matrix whose product with a ``(OC, C·K)`` weight is a single GEMM, and
so that col2im is a loop over the K kernel offsets only (never over the batch or pixels).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

Pads = tuple[tuple[int, int], ...]
# Columns (im2col) are made a few samples at a time, at most COLUMN_BUDGET bytes (a run stays in
# the L2 cache: at 4 MiB the detector's 128 px step ran 1.06-1.10× faster than at once, and at
# 16 MiB 1.03×); those of a whole batch within KEEP_COLUMNS bytes are kept for the weight gradient,
# larger ones are made again from the input in backward.
COLUMN_BUDGET = 4 * 1024 * 1024
KEEP_COLUMNS = 16 * 1024 * 1024


def as_tuple(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    """``3`` → ``(3, 3)``; a sequence must already have ``n`` entries."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * n
    out = tuple(int(v) for v in value)
    if len(out) != n:
        msg = f"{name} {tuple(value)} has {len(out)} entries, expected {n}"
        raise ValueError(msg)
    return out


def as_pads(pad: Any, n: int) -> Pads:
    """Accept ``p``, ``(p_h, p_w)`` or ``((lo_h, hi_h), (lo_w, hi_w))``."""
    if isinstance(pad, (int, np.integer)):
        return ((int(pad), int(pad)),) * n
    pads = tuple(pad)
    if len(pads) != n:
        msg = f"pad {pad!r} has {len(pads)} entries, expected {n}"
        raise ValueError(msg)
    return tuple((int(p), int(p)) if isinstance(p, (int, np.integer)) else (int(p[0]), int(p[1])) for p in pads)


def border_mode_pads(mode: str, kernel: Sequence[int], dilation: Sequence[int]) -> Pads:
    """NNC's BorderMode: ``valid`` (no padding), ``same`` (output = input at stride 1), ``full``."""
    spans = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
    if mode == "valid":
        return tuple((0, 0) for _ in spans)
    if mode == "same":
        return tuple((s // 2, s - s // 2) for s in spans)
    if mode == "full":
        return tuple((s, s) for s in spans)
    msg = f"border_mode {mode!r} is not one of 'valid', 'same', 'full'"
    raise ValueError(msg)


def out_size(size: int, kernel: int, stride: int, dilation: int, pads: tuple[int, int]) -> int:
    """Output length of a sliding window along one axis."""
    return (size + pads[0] + pads[1] - dilation * (kernel - 1) - 1) // stride + 1


def offset_slices(
    offset: Sequence[int], stride: Sequence[int], dilation: Sequence[int], out: Sequence[int]
) -> tuple[slice, ...]:
    """Spatial slices of the padded input seen by one kernel offset at every output position."""
    return tuple(
        slice(k * d, k * d + s * (o - 1) + 1, s) for k, s, d, o in zip(offset, stride, dilation, out, strict=True)
    )


def kernel_offsets(kernel: Sequence[int]) -> list[tuple[int, ...]]:
    return list(itertools.product(*(range(k) for k in kernel)))


class Geometry:
    """im2col / col2im for one window geometry, on a "wide" grid where possible.

    ``spatial`` is the unpadded size, ``pads`` take it to the padded size ``P``, and the windows
    sit at the ``out`` positions. For 2-D windows with column stride 1, columns are computed for
    every one of the ``P[-1]`` columns of each output row ("wide" grid), so each kernel offset is
    one long contiguous run of memory: im2col is K block copies and col2im K block adds.
    The extra columns are cropped from outputs; gradients fed back are zero there, so they add
    nothing (the buffer keeps slack so the last run stays in bounds).
    """

    def __init__(
        self,
        n: int,
        c: int,
        spatial: Sequence[int],
        pads: Pads,
        kernel: Sequence[int],
        stride: Sequence[int],
        dilation: Sequence[int],
        out: Sequence[int],
        dtype: Any,
    ) -> None:
        self.n, self.c, self.spatial, self.pads = n, c, tuple(spatial), pads
        self.kernel, self.stride, self.dilation, self.out = tuple(kernel), tuple(stride), tuple(dilation), tuple(out)
        self.padded = tuple(s + lo + hi for s, (lo, hi) in zip(spatial, pads, strict=True))
        self.wide = len(kernel) == 2 and stride[-1] == 1
        self.grid = (*self.out[:-1], self.padded[-1]) if self.wide else self.out
        self.dtype = dtype
        self.slack = dilation[-1] * (kernel[-1] - 1) if self.wide else 0

    @property
    def column_bytes(self) -> int:
        return self.c * int(np.prod(self.kernel)) * self.columns * np.dtype(self.dtype).itemsize

    def batches(self, budget: int | None = None) -> Iterator[tuple[slice, Geometry]]:
        """Runs of samples whose columns take at most ``budget`` bytes (``COLUMN_BUDGET``; at
        least one sample each), with the geometry of each run."""
        step = max(1, (COLUMN_BUDGET if budget is None else budget) * self.n // max(self.column_bytes, 1))
        for start in range(0, self.n, step):
            part = slice(start, min(start + step, self.n))
            run = copy.copy(self)
            run.n = part.stop - start
            yield part, run

    @property
    def columns(self) -> int:
        return self.n * int(np.prod(self.grid))

    def buffer(self) -> np.ndarray:
        """Zeroed padded buffer (C, N, *P) with slack after its end."""
        size = self.c * self.n * int(np.prod(self.padded))
        return np.zeros(size + self.slack, dtype=self.dtype)[:size].reshape(self.c, self.n, *self.padded)

    def inner(self) -> tuple[slice, ...]:
        return (
            slice(None),
            slice(None),
            *(slice(lo, lo + s) for (lo, _), s in zip(self.pads, self.spatial, strict=True)),
        )

    def pad(self, x: np.ndarray) -> np.ndarray:
        """(N, C, *S) → padded (C, N, *P)."""
        buf = self.buffer()
        buf[self.inner()] = x.swapaxes(0, 1)
        return buf

    def crop(self, buf: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Padded (C, N, *P) → (N, C, *S), into ``out`` when given."""
        return _copy(buf[self.inner()].swapaxes(0, 1), out)

    def _view(self, buf: np.ndarray, offset: Sequence[int]) -> np.ndarray:
        """The (C, N, *grid) values of ``buf`` seen by one kernel offset."""
        if not self.wide:
            return buf[(slice(None), slice(None), *offset_slices(offset, self.stride, self.dilation, self.out))]
        item = buf.itemsize
        ph, pw = self.padded
        start = (offset[0] * self.dilation[0] * pw + offset[1] * self.dilation[1]) * item
        strides = (buf.strides[0], buf.strides[1], self.stride[0] * pw * item, item)
        base = buf.base if buf.base is not None else buf
        return np.ndarray(
            (self.c, self.n, *self.grid),
            dtype=buf.dtype,
            buffer=base,
            offset=start + _base_offset(buf),
            strides=strides,
        )

    def im2col(self, buf: np.ndarray) -> np.ndarray:
        """Padded (C, N, *P) → (C·K, N·grid), rows ordered (C, *kernel)."""
        offsets = kernel_offsets(self.kernel)
        col = np.empty((self.c, len(offsets), self.n, *self.grid), dtype=buf.dtype)
        for i, offset in enumerate(offsets):
            col[:, i] = self._view(buf, offset)
        return col.reshape(self.c * len(offsets), self.columns)

    def col2im(self, col: np.ndarray) -> np.ndarray:
        """(C·K, N·grid) → padded (C, N, *P), summing overlapping windows."""
        offsets = kernel_offsets(self.kernel)
        cols = col.reshape(self.c, len(offsets), self.n, *self.grid)
        buf = self.buffer()
        for i, offset in enumerate(offsets):
            view = self._view(buf, offset)
            view += cols[:, i]
        return buf

    def to_grid(self, y: np.ndarray) -> np.ndarray:
        """(N, C, *out) → (C, N·grid) with zeros in the extra columns."""
        if not self.wide:
            return np.ascontiguousarray(y.swapaxes(0, 1)).reshape(y.shape[1], -1)
        grid = np.zeros((y.shape[1], self.n, *self.grid), dtype=y.dtype)
        grid[..., : self.out[-1]] = y.swapaxes(0, 1)
        return grid.reshape(y.shape[1], -1)

    def from_grid(self, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(C, N·grid) → (N, C, *out), dropping the extra columns; into ``out`` when given."""
        y = y.reshape(-1, self.n, *self.grid)[..., : self.out[-1]]
        return _copy(y.swapaxes(0, 1), out)


def _copy(view: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    if out is None:
        return np.ascontiguousarray(view)
    np.copyto(out, view)
    return out


def _base_offset(buf: np.ndarray) -> int:
    base = buf.base if buf.base is not None else buf
    return buf.__array_interface__["data"][0] - base.__array_interface__["data"][0]
