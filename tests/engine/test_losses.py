"""Losses: gradient checks, reference formulas, numerical stability at extreme inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from engine import Tensor, gradcheck, losses

RNG = np.random.default_rng(7)


def randn(*shape):
    return RNG.standard_normal(shape)


def probs(*shape):
    return RNG.uniform(0.05, 0.95, shape)


def apart(x, t, gap=0.05):
    """Keep |x - t| away from the kinks at 0 and at delta/epsilon."""
    d = x - t
    return t + np.where(np.abs(d) < gap, gap, d)


@pytest.mark.parametrize("shape", [(4,), (3, 5), (2, 3, 4)])
def test_regression_losses(shape):
    x, t = randn(*shape), randn(*shape)
    x = apart(x, t)
    d = x - t
    np.testing.assert_allclose(losses.squared_error(x, t).data, d**2)
    np.testing.assert_allclose(losses.absolute_error(x, t).data, np.abs(d))
    np.testing.assert_allclose(
        losses.huber_loss(x, t, delta=0.7).data, np.where(np.abs(d) < 0.7, d**2, 0.7 * (2 * np.abs(d) - 0.7))
    )
    np.testing.assert_allclose(losses.epsilon_insensitive_loss(x, t, epsilon=0.3).data, np.maximum(np.abs(d) - 0.3, 0))
    for fn in (losses.squared_error, losses.absolute_error):
        gradcheck(fn, [x, t])
    x2 = t + np.where(np.abs(np.abs(d) - 0.7) < 0.05, d + 0.1, d)
    gradcheck(lambda x, t: losses.huber_loss(x, t, delta=0.7), [x2, t])
    x3 = t + np.where(np.abs(np.abs(d) - 0.3) < 0.05, d + 0.1, d)
    gradcheck(lambda x, t: losses.epsilon_insensitive_loss(x, t, epsilon=0.3), [x3, t])


def test_regression_loss_broadcasts_target():
    gradcheck(losses.squared_error, [randn(3, 4), randn(4)])


def test_binary_cross_entropy():
    p, t = probs(3, 4), RNG.integers(0, 2, (3, 4)).astype(float)
    np.testing.assert_allclose(losses.binary_cross_entropy(p, t).data, -(t * np.log(p) + (1 - t) * np.log(1 - p)))
    gradcheck(losses.binary_cross_entropy, [p, probs(3, 4)])
    # saturated probabilities stay finite
    assert np.isfinite(losses.binary_cross_entropy(np.array([0.0, 1.0]), np.array([1.0, 0.0])).data).all()


def test_sigmoid_cross_entropy_is_stable():
    x, t = randn(3, 4) * 3, probs(3, 4)
    reference = -(t * np.log(special.expit(x)) + (1 - t) * np.log(1 - special.expit(x)))
    np.testing.assert_allclose(losses.sigmoid_cross_entropy(x, t).data, reference, rtol=1e-10)
    gradcheck(losses.sigmoid_cross_entropy, [x, t])
    extreme = losses.sigmoid_cross_entropy(np.array([1000.0, -1000.0]), np.array([0.0, 1.0])).data
    np.testing.assert_allclose(extreme, [1000.0, 1000.0])


@pytest.mark.parametrize("shape,axis", [((5, 3), 1), ((2, 4, 3, 3), 1), ((3, 2, 6), -1)])
def test_softmax_cross_entropy(shape, axis):
    x = randn(*shape)
    label_shape = list(shape)
    label_shape[axis] = 1
    t = RNG.integers(0, shape[axis], label_shape)
    y = losses.softmax_cross_entropy(x, t, axis=axis).data
    expected = -np.take_along_axis(special.log_softmax(x, axis=axis), t, axis=axis)
    np.testing.assert_allclose(y, expected, rtol=1e-10)
    gradcheck(lambda x: losses.softmax_cross_entropy(x, t, axis=axis), [x])


def test_softmax_cross_entropy_accepts_flat_labels_and_large_logits():
    x = np.array([[1000.0, 0.0, -1000.0]])
    assert losses.softmax_cross_entropy(x, np.array([0])).data.item() == pytest.approx(0.0)
    assert np.isfinite(losses.softmax_cross_entropy(x, np.array([2])).data).all()


def test_cross_entropy_refuses_bad_labels():
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 3\)"):
        losses.softmax_cross_entropy(randn(2, 3), np.array([[0], [3]]))
    with pytest.raises(ValueError, match="do not fit scores"):
        losses.softmax_cross_entropy(randn(2, 3), np.zeros((3, 1)))


def test_categorical_cross_entropy():
    p = special.softmax(randn(4, 5), axis=1)
    t = RNG.integers(0, 5, (4, 1))
    np.testing.assert_allclose(losses.categorical_cross_entropy(p, t).data, -np.log(np.take_along_axis(p, t, 1)))
    gradcheck(lambda p: losses.categorical_cross_entropy(p, t), [p])


def test_kl_multinomial():
    p, q = special.softmax(randn(3, 4), axis=1), special.softmax(randn(3, 4), axis=1)
    np.testing.assert_allclose(losses.kl_multinomial(p, q).data[:, 0], special.rel_entr(p, q).sum(axis=1))
    gradcheck(losses.kl_multinomial, [p, q])
    assert losses.kl_multinomial(p, p).data == pytest.approx(np.zeros((3, 1)), abs=1e-12)


def test_ssim_identical_images_is_one_and_gradients_check():
    x = RNG.random((2, 1, 12, 12))
    np.testing.assert_allclose(losses.ssim(x, x).data, 1.0, atol=1e-12)
    y = np.clip(x + 0.1 * randn(2, 1, 12, 12), 0, 1)
    s = losses.ssim(x, y).data
    assert s.shape == x.shape and np.all(s < 1.0 + 1e-9) and s.mean() < 0.99
    gradcheck(lambda a, b: losses.ssim_loss(a, b, window=5), [x[:1, :, :8, :8], y[:1, :, :8, :8]], atol=1e-4)


def test_ssim_matches_a_direct_window_computation():
    x, y = RNG.random((1, 1, 15, 15)), RNG.random((1, 1, 15, 15))
    w = losses.gaussian_window(11, 1.5)
    i, j = 7, 7  # centre pixel: the full window lies inside the image
    px, py = x[0, 0, i - 5 : i + 6, j - 5 : j + 6], y[0, 0, i - 5 : i + 6, j - 5 : j + 6]
    mx, my = (w * px).sum(), (w * py).sum()
    vx, vy = (w * px * px).sum() - mx**2, (w * py * py).sum() - my**2
    cov = (w * px * py).sum() - mx * my
    c1, c2 = 0.01**2, 0.03**2
    expected = (2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert losses.ssim(x, y).data[0, 0, i, j] == pytest.approx(expected, rel=1e-10)


def test_loss_gradient_reaches_tensor():
    x = Tensor(randn(3, 2), requires_grad=True)
    losses.squared_error(x, np.zeros((3, 2))).mean().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data / 6)
