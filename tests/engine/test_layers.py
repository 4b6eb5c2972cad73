"""Layers: gradients w.r.t. inputs and parameters, shape inference without data, modes, state."""

from __future__ import annotations

import numpy as np
import pytest

from engine import Concat, Residual, Sequential, Tensor, gradcheck_module, no_grad, seed
from engine import layers as L
from engine.initializers import (
    ConstantInitializer,
    NormalInitializer,
    UniformInitializer,
    calc_normal_std_glorot,
    calc_normal_std_he_backward,
    calc_normal_std_he_forward,
    calc_uniform_lim_glorot,
    fan_initializer,
)

RNG = np.random.default_rng(3)


def layer_cases():
    return [
        ("affine", lambda: L.Affine(12, 5), (3, 3, 2, 2)),
        ("affine_nobias", lambda: L.Affine(6, 4, with_bias=False), (2, 6)),
        ("conv2d", lambda: L.Convolution(3, 4, (3, 3), pad=1), (2, 3, 5, 5)),
        (
            "conv2d_stride_dilation",
            lambda: L.Convolution(2, 3, (3, 2), stride=(2, 1), dilation=(1, 2), pad=(1, 1)),
            (2, 2, 7, 6),
        ),
        ("conv2d_group", lambda: L.Convolution(4, 6, (3, 3), group=2, border_mode="same"), (2, 4, 5, 5)),
        ("conv1d", lambda: L.Convolution(3, 2, (3,), pad=1), (2, 3, 8)),
        ("depthwise", lambda: L.DepthwiseConvolution(3, (3, 3), multiplier=2, pad=1), (2, 3, 5, 5)),
        ("deconv", lambda: L.Deconvolution(3, 2, (3, 3), stride=2, pad=1, output_padding=1), (2, 3, 3, 4)),
        ("deconv_group", lambda: L.Deconvolution(4, 2, (2, 2), stride=2, group=2), (2, 4, 3, 3)),
        ("deconv1d", lambda: L.Deconvolution(2, 3, (4,), stride=2, pad=1), (2, 2, 5)),
        ("batchnorm", lambda: L.BatchNormalization(3), (6, 3, 2, 2)),
        ("batchnorm_dense", lambda: L.BatchNormalization(4), (8, 4)),
        ("prelu_shared", lambda: L.PReLU(), (2, 3, 4)),
        ("prelu_channels", lambda: L.PReLU(3), (2, 3, 4)),
        ("residual", lambda: Residual(Sequential(L.Convolution(2, 2, (3, 3), pad=1), L.Tanh())), (2, 2, 4, 4)),
        (
            "residual_projection",
            lambda: Residual(L.Convolution(2, 3, (3, 3), pad=1, stride=2), L.Convolution(2, 3, (1, 1), stride=2)),
            (2, 2, 5, 5),
        ),
        ("concat", lambda: Concat(L.Convolution(2, 3, (1, 1)), L.Convolution(2, 1, (3, 3), pad=1)), (2, 2, 4, 4)),
    ]


@pytest.mark.parametrize("name,make,shape", layer_cases(), ids=[c[0] for c in layer_cases()])
def test_layer_gradients(name, make, shape):
    seed(0)
    layer = make()
    x = RNG.standard_normal(shape)
    if "prelu" in name:
        x = np.where(np.abs(x) < 0.1, 0.2, x)
    gradcheck_module(layer, x)


STATELESS = [
    L.ReLU(),
    L.LeakyReLU(alpha=0.2),
    L.ELU(),
    L.SELU(),
    L.Swish(),
    L.GELU(),
    L.Tanh(),
    L.Sigmoid(),
    L.Softmax(),
    L.LogSoftmax(),
    L.MaxPooling((2, 2)),
    L.AveragePooling((3, 3), (2, 2), pad=1),
    L.SumPooling((2, 2), ignore_border=False),
    L.GlobalAveragePooling(),
    L.Unpooling((2, 2)),
    L.Upsample((2, 2), "bilinear"),
    L.Upsample((2, 3)),
    L.Flatten(),
    L.Reshape((5, 3, 4)),
    L.Dropout(0.3),
    L.MulScalar(value=0.01735),
    L.AddScalar(value=-1.99),
    L.Transpose((2, 0, 1)),
    L.Slice((1, 0, 1), (3, 5, 4), (1, 2, 1)),
]


@pytest.mark.parametrize("layer", STATELESS, ids=lambda m: type(m).__name__)
def test_output_shape_matches_forward(layer):
    x = RNG.standard_normal((2, 3, 5, 4)).astype(np.float32)
    assert layer(Tensor(x)).shape[1:] == layer.output_shape((3, 5, 4))


@pytest.mark.parametrize("name,make,shape", layer_cases(), ids=[c[0] for c in layer_cases()])
def test_parametric_output_shape_matches_forward(name, make, shape):
    layer = make()
    assert layer(Tensor(RNG.standard_normal(shape).astype(np.float32))).shape[1:] == layer.output_shape(shape[1:])


def test_sequential_shape_error_names_the_layer():
    net = Sequential(L.Convolution(1, 4, (3, 3)), L.ReLU(), L.Affine(100, 10))
    assert net.output_shape((1, 7, 7)) == (10,)
    with pytest.raises(ValueError, match=r"layer 2 \(Affine\): Affine expects 100 inputs, got shape \(4, 6, 6\)"):
        net.output_shape((1, 8, 8))
    with pytest.raises(ValueError, match="Convolution expects 1 channels, got 3"):
        net.output_shape((3, 7, 7))
    with pytest.raises(ValueError, match="does not fit"):
        Sequential(L.Convolution(1, 1, (5, 5))).output_shape((1, 3, 3))


def test_residual_and_concat_shape_errors():
    with pytest.raises(ValueError, match="residual branch gives"):
        Residual(L.Convolution(2, 3, (3, 3), pad=1)).output_shape((2, 4, 4))
    assert Concat(L.Convolution(2, 3, (1, 1)), L.Convolution(2, 5, (1, 1))).output_shape((2, 4, 4)) == (8, 4, 4)
    with pytest.raises(ValueError, match="disagree"):
        Concat(L.Convolution(2, 3, (1, 1)), L.Convolution(2, 5, (3, 3))).output_shape((2, 4, 4))


def test_parameters_are_found_by_walking_attributes():
    net = Sequential(L.Convolution(1, 2, (3, 3)), L.BatchNormalization(2), Residual(L.Affine(4, 4)))
    names = [n for n, _ in net.named_parameters()]
    assert names == [
        "layers.0.W",
        "layers.0.b",
        "layers.1.beta",
        "layers.1.gamma",
        "layers.2.body.W",
        "layers.2.body.b",
    ]
    assert [n for n, _ in net.named_buffers()] == ["layers.1.running_mean", "layers.1.running_var"]


def test_train_and_eval_modes_switch_batch_norm_and_dropout():
    net = Sequential(L.BatchNormalization(3), L.Dropout(0.5))
    x = RNG.standard_normal((16, 3)).astype(np.float32) * 4 + 10
    y_train = net(Tensor(x)).data
    assert np.isclose(y_train, 0).mean() > 0.3  # dropout active
    net.eval()
    assert not net.layers[0].training and not net.layers[1].training
    with no_grad():
        y_eval = net(Tensor(x)).data
    running = net.layers[0]
    np.testing.assert_allclose(y_eval, (x - running.running_mean) / np.sqrt(running.running_var + 1e-4), rtol=1e-5)


def test_state_dict_roundtrip_through_npz(tmp_path):
    seed(1)
    net = Sequential(L.Convolution(1, 2, (3, 3)), L.BatchNormalization(2), L.Flatten(), L.Affine(2 * 4 * 4, 3))
    net(Tensor(RNG.standard_normal((4, 1, 6, 6)).astype(np.float32)))  # moves running stats
    net.save(tmp_path / "p.npz")
    seed(2)
    other = Sequential(L.Convolution(1, 2, (3, 3)), L.BatchNormalization(2), L.Flatten(), L.Affine(2 * 4 * 4, 3))
    other.load(tmp_path / "p.npz")
    for (k, a), (_, b) in zip(net.state_dict().items(), other.state_dict().items(), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_load_refuses_mismatches_and_corrupt_files(tmp_path):
    net = Sequential(L.Affine(4, 3))
    with pytest.raises(ValueError, match=r"'layers.0.W' has shape \(5, 3\), the module expects \(4, 3\)"):
        net.load_state_dict({"layers.0.W": np.zeros((5, 3)), "layers.0.b": np.zeros(3)})
    with pytest.raises(KeyError, match=r"missing \['layers.0.b'\]"):
        net.load_state_dict({"layers.0.W": np.zeros((4, 3))})
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read parameters"):
        net.load(bad)


def test_saved_parameters_need_no_pickle(tmp_path):
    net = Sequential(L.Affine(4, 3))
    net.save(tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz", allow_pickle=False) as data:
        assert sorted(data.files) == ["layers.0.W", "layers.0.b"]


def test_seed_makes_initialisation_reproducible():
    seed(42)
    a = L.Convolution(3, 8, (3, 3)).W.data.copy()
    seed(42)
    b = L.Convolution(3, 8, (3, 3)).W.data
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, L.Convolution(3, 8, (3, 3)).W.data)


def test_initializer_scales():
    assert calc_normal_std_glorot(10, 20, (3, 3)) == pytest.approx(np.sqrt(2 / (90 + 20)))
    assert calc_uniform_lim_glorot(10, 20) == pytest.approx(np.sqrt(6 / 30))
    assert calc_normal_std_he_forward(10, 20, (3, 3)) == pytest.approx(np.sqrt(2 / 90))
    assert calc_normal_std_he_backward(10, 20, (3, 3)) == pytest.approx(np.sqrt(2 / 180))
    rng = np.random.default_rng(0)
    w = fan_initializer("he_forward", 64, 32, (3, 3))((20000,), rng)
    assert w.std() == pytest.approx(np.sqrt(2 / 576), rel=0.03)
    u = UniformInitializer(0.5)((20000,), rng)
    assert -0.5 <= u.min() and u.max() <= 0.5
    assert NormalInitializer(2.0)((20000,), rng).std() == pytest.approx(2.0, rel=0.03)
    assert np.all(ConstantInitializer(0.25)((3,), rng) == 0.25)
    with pytest.raises(ValueError, match="initializer 'xavier' is not one of"):
        fan_initializer("xavier", 1, 1)


def test_layer_repr_shows_config():
    text = repr(Sequential(L.Convolution(1, 4, (3, 3), pad=1), L.ReLU()))
    assert "Convolution(1, 4, kernel=(3, 3)" in text and "ReLU()" in text


@pytest.mark.parametrize(
    "layer",
    [L.MulScalar(value=-2.5), L.AddScalar(value=1.5), L.Transpose((1, 2, 0)), L.Slice((0, 1, 1), (2, 4, 5), (1, 2, 1))],
    ids=str,
)
def test_scalar_and_transpose_modules_pass_the_gradient_check(layer):
    gradcheck_module(layer, RNG.standard_normal((2, 3, 4, 5)))
