"""Every function: numerical gradient check over a grid of shapes, and forward values against
independent formulas (direct sums, scipy)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from engine import Tensor, gradcheck
from engine import functions as F

RNG = np.random.default_rng(1234)


def randn(*shape):
    return RNG.standard_normal(shape)


def away_from_zero(*shape):
    """Values at least 0.1 from 0 (kinks of ReLU-like functions stay out of the difference)."""
    x = randn(*shape)
    return np.where(np.abs(x) < 0.1, 0.1 * np.sign(x) + 0.1 * (x == 0), x)


# -- element-wise --------------------------------------------------------------------
UNARY = {
    "relu": (F.relu, away_from_zero),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), away_from_zero),
    "elu": (lambda x: F.elu(x, 1.3), away_from_zero),
    "selu": (F.selu, away_from_zero),
    "swish": (F.swish, randn),
    "gelu": (F.gelu, randn),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), randn),
    "tanh": (F.tanh, randn),
    "sigmoid": (F.sigmoid, randn),
    "softmax": (lambda x: F.softmax(x, axis=min(1, x.ndim - 1)), randn),
    "softmax_last": (lambda x: F.softmax(x, axis=-1), randn),
    "log_softmax": (lambda x: F.log_softmax(x, axis=min(1, x.ndim - 1)), randn),
    "exp": (F.exp, randn),
    "log": (F.log, lambda *s: np.abs(randn(*s)) + 0.5),
    "sqrt": (F.sqrt, lambda *s: np.abs(randn(*s)) + 0.5),
    "abs": (F.abs, away_from_zero),
    "neg": (F.neg, randn),
    "clip": (
        lambda x: F.clip(x, -0.5, 0.5),
        lambda *s: np.sign(randn(*s)) * (0.3 + np.abs(randn(*s)) % 0.15) + 0 * randn(*s),
    ),
    "add_scalar": (lambda x: F.add_scalar(x, 1.5), randn),
    "mul_scalar": (lambda x: F.mul_scalar(x, -2.5), randn),
    "r_sub_scalar": (lambda x: F.r_sub_scalar(x, 3.0), randn),
    "r_div_scalar": (lambda x: F.r_div_scalar(x, 2.0), lambda *s: np.abs(randn(*s)) + 0.5),
    "pow_scalar": (lambda x: F.pow_scalar(x, 3), randn),
    "r_pow_scalar": (lambda x: F.r_pow_scalar(x, 2.0), randn),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 2, 2)])
def test_unary_gradients(name, shape):
    fn, make = UNARY[name]
    gradcheck(fn, [make(*shape)])


@pytest.mark.parametrize("op", [F.add, F.sub, F.mul, F.div, F.pow])
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((2, 3, 4), (3, 1)), ((4,), (2, 3, 4)), ((2, 1, 3), (1, 4, 1))])
def test_binary_broadcast_gradients(op, shapes):
    a = np.abs(randn(*shapes[0])) + 0.5
    b = np.abs(randn(*shapes[1])) + 0.5
    gradcheck(op, [a, b])


def test_operators_match_functions():
    a, b = Tensor(randn(3, 4)), Tensor(np.abs(randn(3, 4)) + 1)
    np.testing.assert_allclose((a + b).data, a.data + b.data)
    np.testing.assert_allclose((2 - a).data, 2 - a.data)
    np.testing.assert_allclose((a / b).data, a.data / b.data)
    np.testing.assert_allclose((b**2).data, b.data**2)
    np.testing.assert_allclose((a @ b.T).data, a.data @ b.data.T)
    np.testing.assert_allclose((-a).data, -a.data)


def test_float32_stays_float32_with_python_scalars():
    x = Tensor(np.ones((2, 2), np.float32))
    assert (x * 2.5 + 1.0 - 0.5).dtype == np.float32
    assert (2.0 / (x + 1)).dtype == np.float32


def test_prelu_gradients_shared_and_per_channel():
    x = away_from_zero(2, 3, 4)
    gradcheck(lambda x, w: F.prelu(x, w), [x, np.array([0.3])])
    gradcheck(lambda x, w: F.prelu(x, w), [x, np.array([0.1, 0.2, 0.3])])


def test_matmul_gradients():
    gradcheck(F.matmul, [randn(3, 4), randn(4, 2)])
    gradcheck(F.matmul, [randn(2, 3, 4), randn(4, 5)])


# -- forward values against references -------------------------------------------
def test_softmax_matches_scipy():
    x = randn(4, 7) * 30  # large values: must stay finite
    np.testing.assert_allclose(F.softmax(x, axis=1).data, special.softmax(x, axis=1), rtol=1e-12)
    np.testing.assert_allclose(F.log_softmax(x, axis=1).data, special.log_softmax(x, axis=1), rtol=1e-12)


def test_activation_formulas():
    x = np.linspace(-3, 3, 13)
    np.testing.assert_allclose(F.gelu(x).data, x * 0.5 * (1 + special.erf(x / np.sqrt(2))))
    tanh_form = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))  # nnabla's GELU
    np.testing.assert_allclose(F.gelu(x, approximate="tanh").data, tanh_form)
    np.testing.assert_allclose(F.swish(x).data, x / (1 + np.exp(-x)))
    np.testing.assert_allclose(F.elu(x, 1.0).data, np.where(x > 0, x, np.exp(x) - 1))
    np.testing.assert_allclose(F.leaky_relu(x).data, np.where(x > 0, x, 0.1 * x))
    selu = F.selu(x).data
    np.testing.assert_allclose(selu[x > 0], 1.0507009873554805 * x[x > 0])


# -- reductions and shapes ---------------------------------------------------------------
@pytest.mark.parametrize("fn", [F.sum, F.mean, F.max, F.min])
@pytest.mark.parametrize(
    "axis,keepdims", [(None, False), (1, False), (1, True), ((0, 2), False), ((0, 2), True), (-1, True)]
)
def test_reduction_gradients(fn, axis, keepdims):
    x = randn(3, 4, 5)
    gradcheck(lambda x: fn(x, axis=axis, keepdims=keepdims), [x])
    np.testing.assert_allclose(
        fn(x, axis=axis, keepdims=keepdims).data, getattr(np, fn.__name__)(x, axis=axis, keepdims=keepdims)
    )


def test_max_with_ties_splits_the_gradient():
    x = Tensor(np.array([[1.0, 3.0, 3.0]]), requires_grad=True)
    F.max(x, axis=1).sum().backward()
    np.testing.assert_allclose(x.grad, [[0, 0.5, 0.5]])


def test_array_op_gradients():
    x = randn(2, 3, 4)
    gradcheck(lambda x: F.reshape(x, (6, 4)), [x])
    gradcheck(lambda x: F.flatten(x), [x])
    gradcheck(lambda x: F.transpose(x, (2, 0, 1)), [x])
    gradcheck(lambda x: F.broadcast(x[:, :1], (2, 3, 4)) if False else F.broadcast(x, (5, 2, 3, 4)), [x])
    gradcheck(lambda a, b: F.concatenate(a, b, axis=1), [x, randn(2, 2, 4)])
    gradcheck(lambda x: F.split(x, 2, axis=2)[1] * 2 + F.split(x, 2, axis=2)[0], [x])
    gradcheck(lambda x: F.split(x, [1], axis=1)[1], [x])
    gradcheck(lambda x: x[:, 1:, ::2], [x])
    gradcheck(lambda x: x[np.array([0, 0, 1]), :, 1], [x])  # advanced index, repeated rows


def test_split_refuses_uneven_sections():
    with pytest.raises(ValueError, match="does not divide"):
        F.split(randn(2, 5), 2, axis=1)


# -- batch normalization and dropout -------------------------------------------------
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 2, 2), (4, 3, 5)])
@pytest.mark.parametrize("batch_stat", [True, False])
def test_batch_normalization_gradients(shape, batch_stat):
    c = shape[1]
    mean, var = RNG.standard_normal(c), np.abs(RNG.standard_normal(c)) + 0.5
    gradcheck(
        lambda x, b, g: F.batch_normalization(x, b, g, mean.copy(), var.copy(), batch_stat=batch_stat),
        [randn(*shape), randn(c), randn(c)],
    )


def test_batch_normalization_of_a_strided_view_matches_its_contiguous_copy():
    """The per-channel fast path takes C-contiguous (N, C, ...) arrays; any other layout goes the
    general way, to the same outputs and gradients."""
    base = randn(3, 5, 4, 6)
    view = base.transpose(0, 3, 1, 2)[..., ::2]  # (3, 6, 5, 2), strided
    results = []
    for x in (view, np.ascontiguousarray(view)):
        t = Tensor(x, requires_grad=True)
        y = F.batch_normalization(t, np.zeros(6), np.ones(6) * 2, np.zeros(6), np.ones(6))
        (y * Tensor(np.arange(y.size, dtype=float).reshape(y.shape))).sum().backward()
        results.append((y.data, t.grad))
    np.testing.assert_allclose(results[0][0], results[1][0], atol=1e-12)
    np.testing.assert_allclose(results[0][1], results[1][1], atol=1e-12)


def test_batch_normalization_statistics_and_running_update():
    x = randn(50, 3, 4, 4) * 3 + 2
    mean, var = np.zeros(3), np.ones(3)
    y = F.batch_normalization(x, np.zeros(3), np.ones(3), mean, var, decay_rate=0.9, eps=1e-4).data
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-10)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), x.var(axis=(0, 2, 3)) / (x.var(axis=(0, 2, 3)) + 1e-4))
    np.testing.assert_allclose(mean, 0.1 * x.mean(axis=(0, 2, 3)))
    n = x.size / 3
    np.testing.assert_allclose(var, 0.9 + 0.1 * x.var(axis=(0, 2, 3)) * n / (n - 1))
    # inference uses the running statistics
    y_eval = F.batch_normalization(x, np.zeros(3), np.ones(3), mean, var, batch_stat=False).data
    np.testing.assert_allclose(y_eval[:, 0], (x[:, 0] - mean[0]) / np.sqrt(var[0] + 1e-4))


def test_dropout_scales_and_is_off_at_test():
    x = np.ones((1000, 10))
    y = F.dropout(x, 0.3, seed=1).data
    assert np.all(np.isclose(y, 0) | np.isclose(y, 1 / 0.7))
    assert abs((y == 0).mean() - 0.3) < 0.02
    np.testing.assert_array_equal(F.dropout(x, 0.3, train=False).data, x)
    gradcheck(lambda x: F.dropout(x, 0.5, seed=3), [randn(4, 5)])
    with pytest.raises(ValueError, match="dropout probability"):
        F.dropout(x, 1.0)


# -- autograd mechanics --------------------------------------------------------------
def test_gradient_accumulates_over_reuse_and_graph_is_freed():
    x = Tensor(randn(3), requires_grad=True)
    y = (x * x + x).sum()
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * x.data + 1)
    assert y._ctx is None  # graph released after backward


def test_backward_frees_each_activation_once_its_function_has_run():
    """A step's peak memory is the forward's activations; they go as the walk passes them, not
    all at its end (the first function's backward runs last and finds the later ones gone)."""
    import weakref

    from engine.tensor import Function

    class Probe(Function):
        later = None  # a weak reference to an activation computed after this function's output

        def forward(self, x):
            return x * 2.0

        def backward(self, g):
            self.later_was_freed = self.later() is None
            return g * 2.0

    x = Tensor(randn(4), requires_grad=True)
    probed = Probe.apply(x)
    probe, hidden = probed._ctx, F.relu(probed * 3.0)
    probe.later = weakref.ref(hidden.data)
    loss = hidden.sum()
    del probed, hidden
    loss.backward()
    assert probe.later_was_freed
    np.testing.assert_allclose(x.grad, 6.0 * (x.data > 0))


def test_no_grad_records_nothing():
    from engine import no_grad

    x = Tensor(randn(3), requires_grad=True)
    with no_grad():
        y = F.relu(x)
    assert not y.requires_grad and y._ctx is None


def test_wrong_gradient_shape_names_the_function():
    from engine.tensor import Function

    class Broken(Function):
        def forward(self, x):
            return x.sum(keepdims=True)

        def backward(self, g):
            return g  # wrong: shape (1,) instead of the input's

    x = Tensor(randn(3), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"Broken.backward returned a gradient of shape \(1,\) for input 0"):
        Broken.apply(x).sum().backward()


def test_backward_of_non_scalar_needs_a_gradient():
    with pytest.raises(RuntimeError, match="needs a scalar"):
        F.relu(Tensor(randn(3), requires_grad=True)).backward()


def test_gradcheck_catches_a_wrong_backward():
    from engine.gradcheck import GradientCheckError
    from engine.tensor import Function

    class WrongSquare(Function):
        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, g):
            return g * self.x  # missing the factor 2

    with pytest.raises(GradientCheckError, match="differs"):
        gradcheck(WrongSquare.apply, [randn(4)])
