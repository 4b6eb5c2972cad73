"""Affine, convolution, deconvolution and pooling: numerical gradient checks over a grid of
geometries, and forward values against direct sums."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from engine import Tensor, gradcheck
from engine import functions as F
from engine.functions import windows as win

RNG = np.random.default_rng(4321)


def randn(*shape):
    return RNG.standard_normal(shape)


# -- affine, convolution, deconvolution --------------------------------------------------
def test_affine_gradients_and_base_axis():
    gradcheck(F.affine, [randn(3, 2, 4), randn(8, 5), randn(5)])
    gradcheck(lambda x, w: F.affine(x, w, base_axis=2), [randn(2, 3, 4), randn(4, 2)])
    x, w, b = randn(3, 6), randn(6, 2), randn(2)
    np.testing.assert_allclose(F.affine(x, w, b).data, x @ w + b)


def direct_convolution(x, w, b, pads, stride, dilation, group):
    """Reference: the textbook sum, one output element at a time."""
    xp = np.pad(x, ((0, 0), (0, 0), *pads))
    n, c, *_ = x.shape
    oc, cg, *kernel = w.shape
    out = [(p - d * (k - 1) - 1) // s + 1 for p, k, s, d in zip(xp.shape[2:], kernel, stride, dilation, strict=False)]
    y = np.zeros((n, oc, *out))
    ocg = oc // group
    for o in range(oc):
        g = o // ocg
        for pos in itertools.product(*(range(v) for v in out)):
            for koff in itertools.product(*(range(k) for k in kernel)):
                idx = tuple(p * s + k * d for p, s, k, d in zip(pos, stride, koff, dilation, strict=False))
                patch = xp[(slice(None), slice(g * cg, (g + 1) * cg), *idx)]
                y[(slice(None), o, *pos)] += patch @ w[(o, slice(None), *koff)]
        if b is not None:
            y[:, o] += b[o]
    return y


CONV_CASES = [
    # (x shape, w shape, pad, stride, dilation, group)
    ((2, 3, 6, 5), (4, 3, 3, 3), 1, 1, 1, 1),
    ((2, 3, 7, 6), (4, 3, 3, 2), ((1, 2), (0, 1)), (2, 1), (1, 2), 1),
    ((1, 4, 6, 6), (6, 2, 3, 3), 1, 2, 1, 2),
    ((2, 3, 5, 5), (3, 1, 3, 3), 1, 1, 1, 3),  # depthwise
    ((2, 2, 8, 7), (3, 2, 2, 3), 0, (2, 3), 1, 1),
    ((2, 2, 9), (3, 2, 3), 1, 1, 1, 1),  # 1-D sensor window
    ((2, 4, 11), (2, 2, 3), 2, 2, 2, 2),
    # no more outputs than inputs at stride 1: the input gradient is a convolution of the output's
    ((2, 5, 6, 5), (3, 5, 3, 3), 1, 1, 1, 1),
    ((2, 4, 7, 6), (4, 4, 3, 2), ((1, 2), (0, 1)), 1, (1, 2), 1),
    ((2, 4, 9), (2, 4, 3), 1, 1, 2, 1),
    ((1, 3, 4, 4, 3), (2, 3, 3, 3, 3), 1, 1, 1, 1),
    ((2, 3, 5, 4), (3, 3, 1, 1), 0, 1, 1, 1),
    ((2, 3, 6, 6), (2, 3, 3, 3), 3, 1, 1, 1),  # padded beyond the kernel: col2im again
]


@pytest.fixture(params=["columns at once", "columns per sample"])
def column_runs(request, monkeypatch):
    """Convolution makes its columns in runs of samples within a byte budget and makes them
    again in backward when they took more than one run: both ways, every case."""
    if request.param == "columns per sample":
        monkeypatch.setattr(win, "COLUMN_BUDGET", 1)
        monkeypatch.setattr(win, "KEEP_COLUMNS", 0)
    return request.param


@pytest.mark.parametrize("case", CONV_CASES)
def test_convolution_forward_and_gradients(case, column_runs):
    xs, ws, pad, stride, dilation, group = case
    x, w, b = randn(*xs), randn(*ws), randn(ws[0])
    y = F.convolution(x, w, b, pad=pad, stride=stride, dilation=dilation, group=group).data
    nd = len(xs) - 2
    pads = tuple((p, p) if isinstance(p, int) else p for p in (pad if not isinstance(pad, int) else (pad,) * nd))
    st = stride if isinstance(stride, tuple) else (stride,) * nd
    dl = dilation if isinstance(dilation, tuple) else (dilation,) * nd
    np.testing.assert_allclose(y, direct_convolution(x, w, b, pads, st, dl, group), atol=1e-10)
    gradcheck(lambda x, w, b: F.convolution(x, w, b, pad=pad, stride=stride, dilation=dilation, group=group), [x, w, b])


def test_gradients_come_from_the_output_gradients_columns_where_that_is_cheaper():
    """Where the output has no more channels than the input (stride 1, one group) both gradients
    come from the columns of the output gradient (the input's is its convolution with the flipped
    kernel) and the input is kept instead of its K times larger columns; else im2col / col2im."""
    x, w = Tensor(randn(2, 5, 6, 5), requires_grad=True), Tensor(randn(3, 5, 3, 3), requires_grad=True)
    ctx = F.convolution(x, w, pad=1)._ctx
    assert ctx.transposed is not None and ctx.col is None
    for kwargs in ({"pad": 1, "stride": 2}, {"pad": 3}):
        assert F.convolution(x, w, **kwargs)._ctx.transposed is None
    wider = Tensor(randn(8, 5, 3, 3), requires_grad=True)
    assert F.convolution(x, wider, pad=1)._ctx.transposed is None


def test_columns_are_kept_for_the_weight_gradient_only_when_they_are_small(monkeypatch):
    x, w = Tensor(randn(3, 2, 6, 5), requires_grad=True), Tensor(randn(4, 2, 3, 3), requires_grad=True)
    kept = F.convolution(x, w, pad=1)._ctx
    assert kept.col is not None and kept.col.size == 2 * 9 * 3 * 6 * 7  # (C·K, N·wide grid)
    assert kept.geo.column_bytes == kept.col.nbytes
    runs = list(kept.geo.batches(budget=kept.col.nbytes // 2))  # one sample's columns fit, not three
    assert [part for part, _ in runs] == [slice(0, 1), slice(1, 2), slice(2, 3)]
    assert all(run.n == 1 and run.columns * 3 == kept.geo.columns for _, run in runs)
    monkeypatch.setattr(win, "KEEP_COLUMNS", kept.col.nbytes - 1)
    assert F.convolution(x, w, pad=1)._ctx.col is None


@pytest.mark.parametrize("mode,expected", [("valid", (5, 4)), ("same", (7, 6)), ("full", (9, 8))])
def test_border_modes(mode, expected):
    x, w = randn(1, 2, 7, 6), randn(3, 2, 3, 3)
    y = F.convolution(x, w, border_mode=mode)
    assert y.shape[2:] == expected
    gradcheck(lambda x, w: F.convolution(x, w, border_mode=mode), [x, w])


def test_depthwise_convolution_is_grouped_per_channel():
    x, w = randn(2, 3, 6, 6), randn(6, 1, 3, 3)  # multiplier 2
    y = F.depthwise_convolution(x, w, pad=1).data
    np.testing.assert_allclose(y, direct_convolution(x, w, None, ((1, 1), (1, 1)), (1, 1), (1, 1), 3), atol=1e-10)


def test_convolution_refuses_channel_mismatch():
    with pytest.raises(ValueError, match="input has 3 channels"):
        F.convolution(randn(1, 3, 5, 5), randn(2, 2, 3, 3))


DECONV_CASES = [
    # (x shape, w shape, pad, stride, dilation, group, output_padding)
    ((2, 3, 4, 5), (3, 2, 3, 3), 0, 1, 1, 1, 0),
    ((2, 3, 4, 4), (3, 2, 2, 2), 0, 2, 1, 1, 0),
    ((2, 3, 4, 5), (3, 2, 3, 3), 1, 2, 1, 1, 1),
    ((1, 4, 3, 3), (4, 1, 3, 3), 1, (2, 1), (1, 2), 2, (1, 0)),
    ((2, 2, 5), (2, 3, 4), 1, 2, 1, 1, 0),  # 1-D
]


@pytest.mark.parametrize("case", DECONV_CASES)
def test_deconvolution_is_the_adjoint_of_convolution(case):
    xs, ws, pad, stride, dilation, group, out_pad = case
    x, w, b = randn(*xs), randn(*ws), randn(ws[1] * group)
    y = F.deconvolution(x, w, b, pad=pad, stride=stride, dilation=dilation, group=group, output_padding=out_pad)
    # <deconv(x), z> == <x, conv(z)>: deconvolution is the adjoint of convolution with the same weight.
    z = randn(*y.shape)
    conv_z = F.convolution(z, w, pad=pad, stride=stride, dilation=dilation, group=group).data
    crop = tuple(slice(0, s) for s in x.shape[2:])
    lhs = float(((y.data - b.reshape(1, -1, *[1] * (y.ndim - 2))) * z).sum())
    assert lhs == pytest.approx(float((x * conv_z[(slice(None), slice(None), *crop)]).sum()), rel=1e-9)
    gradcheck(
        lambda x, w, b: F.deconvolution(
            x, w, b, pad=pad, stride=stride, dilation=dilation, group=group, output_padding=out_pad
        ),
        [x, w, b],
    )


def test_deconvolution_output_size():
    y = F.deconvolution(randn(1, 2, 7, 7), randn(2, 4, 3, 3), pad=1, stride=2, output_padding=1)
    assert y.shape == (1, 4, 14, 14)


# -- pooling, unpooling, upsampling ------------------------------------------------------
POOL_CASES = [
    # (x shape, kernel, stride, pad, ignore_border)
    ((2, 3, 6, 6), (2, 2), None, 0, True),
    ((2, 2, 7, 5), (3, 3), (2, 2), 1, True),
    ((2, 2, 7, 5), (2, 2), (2, 2), 0, False),
    ((2, 2, 6, 7), (3, 2), (1, 2), (1, 0), False),
    ((2, 3, 9), (3,), (2,), 1, True),  # 1-D
]


def reference_pool(x, kernel, stride, pads, ignore_border, reduce):
    n, c, *spatial = x.shape
    stride = stride or kernel
    out = []
    for s, k, st, (lo, hi) in zip(spatial, kernel, stride, pads, strict=False):
        span = s + lo + hi - k
        out.append(span // st + 1 if ignore_border else int(np.ceil(span / st)) + 1)
    y = np.zeros((n, c, *out))
    for pos in itertools.product(*(range(o) for o in out)):
        region = tuple(
            slice(max(p * st - lo, 0), min(p * st - lo + k, s))
            for p, st, (lo, _), k, s in zip(pos, stride, pads, kernel, spatial, strict=False)
        )
        y[(slice(None), slice(None), *pos)] = reduce(x[(slice(None), slice(None), *region)], tuple(range(2, x.ndim)))
    return y


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pooling(case):
    xs, kernel, stride, pad, ib = case
    x = randn(*xs)
    pads = tuple((p, p) for p in ((pad,) * len(kernel) if isinstance(pad, int) else pad))
    y = F.max_pooling(x, kernel, stride, ignore_border=ib, pad=pad).data
    np.testing.assert_allclose(y, reference_pool(x, kernel, stride, pads, ib, np.max))
    gradcheck(lambda x: F.max_pooling(x, kernel, stride, ignore_border=ib, pad=pad), [x])


@pytest.mark.parametrize("case", POOL_CASES)
def test_sum_and_average_pooling(case):
    xs, kernel, stride, pad, ib = case
    x = randn(*xs)
    pads = tuple((p, p) for p in ((pad,) * len(kernel) if isinstance(pad, int) else pad))
    np.testing.assert_allclose(
        F.sum_pooling(x, kernel, stride, ignore_border=ib, pad=pad).data,
        reference_pool(x, kernel, stride, pads, ib, np.sum),
        atol=1e-12,
    )
    np.testing.assert_allclose(
        F.average_pooling(x, kernel, stride, ignore_border=ib, pad=pad, including_pad=False).data,
        reference_pool(x, kernel, stride, pads, ib, np.mean),
        atol=1e-12,
    )
    for fn in (F.sum_pooling, F.average_pooling):
        gradcheck(lambda x, fn=fn: fn(x, kernel, stride, ignore_border=ib, pad=pad), [x])


def test_average_pooling_including_pad_divides_by_the_kernel():
    x = np.ones((1, 1, 2, 2))
    y = F.average_pooling(x, (2, 2), (2, 2), pad=1, including_pad=True).data
    np.testing.assert_allclose(y, np.full((1, 1, 2, 2), 0.25))


def test_max_pooling_gradient_goes_to_one_element_of_a_tie():
    x = Tensor(np.zeros((1, 1, 2, 2)), requires_grad=True)
    F.max_pooling(x, (2, 2)).sum().backward()
    assert x.grad.sum() == 1.0


def test_global_average_pooling():
    x = randn(2, 3, 4, 5)
    np.testing.assert_allclose(F.global_average_pooling(x).data, x.mean(axis=(2, 3), keepdims=True))
    gradcheck(F.global_average_pooling, [x])


def test_unpooling_and_nearest_upsample():
    x = randn(2, 2, 3, 2)
    np.testing.assert_allclose(F.unpooling(x, (2, 3)).data, x.repeat(2, axis=2).repeat(3, axis=3))
    np.testing.assert_allclose(F.upsample(x, 2).data, x.repeat(2, axis=2).repeat(2, axis=3))
    gradcheck(lambda x: F.unpooling(x, (2, 3)), [x])
    gradcheck(lambda x: F.unpooling(x, (2,)), [randn(2, 3, 4)])


def test_bilinear_upsample_values_and_gradients():
    x = randn(2, 2, 3, 4)
    y = F.upsample(x, 2, mode="bilinear").data
    assert y.shape == (2, 2, 6, 8)
    # half-pixel centres: output pixel 1 of row sits 1/4 of the way from input 0 to input 1
    np.testing.assert_allclose(y[..., 0, 1], 0.75 * x[..., 0, 0] + 0.25 * x[..., 0, 1])
    np.testing.assert_allclose(y[..., 0, 0], x[..., 0, 0])  # clamped at the border
    gradcheck(lambda x: F.upsample(x, 2, mode="bilinear"), [x])
    gradcheck(lambda x: F.upsample(x, size=(7,), mode="bilinear"), [randn(2, 2, 3)])


@pytest.mark.parametrize(
    "shape,kernel,axes",
    [
        ((2, 3, 6, 5), [0.25, 0.5, 0.25], (2, 3)),
        ((2, 2, 9), [1.0, -2.0, 0.5, 3.0, 0.1], (2,)),
        ((1, 2, 4, 5, 3), [0.2, 0.7, 0.1], (2, 3, 4)),
    ],
)
def test_separable_filter_values_and_gradients(shape, kernel, axes):
    """Each axis in turn, zero padded, the same size out: a 2-D one equals the K×K convolution of
    the outer product; gradients checked numerically (an asymmetric kernel too)."""
    x = randn(*shape)
    gradcheck(lambda x: F.separable_filter(x, kernel, axes), [x])
    if len(axes) == 2:
        k = np.asarray(kernel)
        full = np.broadcast_to(np.outer(k, k), (shape[1], 1, len(k), len(k)))
        expected = F.depthwise_convolution(x, full, pad=len(k) // 2).data
        np.testing.assert_allclose(F.separable_filter(x, kernel, axes).data, expected, atol=1e-12)
    with pytest.raises(ValueError, match="odd length"):
        F.separable_filter(x, [0.5, 0.5])
