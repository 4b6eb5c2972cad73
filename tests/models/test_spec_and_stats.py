"""Network specs, the zoo, and NNC-style statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine import Tensor
from models.spec import SpecError, build, load_spec
from models.stats import network_stats, stats_chart, stats_json, stats_table, totals
from models.zoo import ZOO, get_spec, list_models


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_network_builds_and_its_shapes_hold(name):
    net = build(get_spec(name))
    x = np.random.default_rng(0).random((2, *net.input_shape)).astype(np.float32)
    assert net.module(Tensor(x)).shape == (2, *net.output_shape)
    for layer in net.layers:  # each leaf's recorded shape is what its module computes
        assert layer.module.output_shape(layer.in_shape) == layer.out_shape


def test_zoo_registry():
    assert {
        "logistic_regression",
        "mlp",
        "binary_cnn",
        "lenet",
        "resnet_small",
        "dense_autoencoder",
        "conv_autoencoder",
        "conv1d_autoencoder",
        "detector_classifier",
    } <= set(list_models())
    assert "conv1d_autoencoder" in list_models("autoencoder")
    with pytest.raises(KeyError, match="no zoo network 'vgg'"):
        get_spec("vgg")
    with pytest.raises(ValueError, match="must be divisible by 4"):
        build(get_spec("conv_autoencoder", [1, 30, 30]))


def test_spec_from_yaml_text_and_file(tmp_path):
    text = "name: tiny\ninput: [4]\nlayers:\n  - {type: Affine, n_outmaps: 3}\n  - {type: Softmax}\n"
    assert build(text).output_shape == (3,)
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(load_spec(text)))
    assert build(path).name == "tiny"


@pytest.mark.parametrize(
    "spec,message",
    [
        (
            {
                "input": [1, 8, 8],
                "layers": [
                    {"type": "Convolution", "outmaps": 4, "kernel": 3, "name": "c1"},
                    {"type": "Affine", "n_outmaps": 2},
                    {"type": "Convolution", "outmaps": 2, "kernel": 3},
                ],
            },
            r"layers\[2\] \(Convolution\): Convolution needs \(channels, \*spatial\) input, got shape \(2,\)",
        ),
        (
            {"input": [1, 4, 4], "layers": [{"type": "Convolution", "outmaps": 4, "kernel": 5, "name": "c1"}]},
            r"layers\[0\] \(Convolution 'c1'\): kernel \(5, 5\) does not fit input \(4, 4\)",
        ),
        ({"input": [1, 4, 4], "layers": [{"type": "Convolution", "kernel": 3}]}, r"missing parameter 'outmaps'"),
        (
            {"input": [1, 4, 4], "layers": [{"type": "Convolution", "outmaps": 2, "kernel": 3, "padd": 1}]},
            r"layers\[0\] \(Convolution\): unknown parameter 'padd'",
        ),
        (
            {"input": [1, 4, 4], "layers": [{"type": "Convolution", "outmaps": 2, "kernel": "3"}]},
            r"'kernel' has value '3'. Not an integer",
        ),
        ({"input": [1, 4, 4], "layers": [{"type": "Conv2D"}]}, r"unknown layer type 'Conv2D'"),
        (
            {
                "input": [2, 8, 8],
                "layers": [
                    {"type": "Residual", "body": [{"type": "Convolution", "outmaps": 3, "kernel": 3, "pad": 1}]}
                ],
            },
            r"residual body gives \(3, 8, 8\) but the shortcut gives \(2, 8, 8\)",
        ),
        (
            {
                "input": [2, 8, 8],
                "layers": [
                    {"type": "Concat", "branches": [[{"type": "Identity"}], [{"type": "MaxPooling", "kernel": 2}]]}
                ],
            },
            r"disagree outside axis 1",
        ),
        ({"input": [2, 8, 8], "layers": []}, r"layers must be a non-empty list"),
        ({"input": "1x8x8", "layers": [{"type": "ReLU"}]}, r"'input' has value '1x8x8'"),
        ({"input": [4], "layers": [{"type": "ReLU"}], "solver": "adam"}, r"unknown key 'solver'"),
    ],
)
def test_bad_specs_name_the_layer(spec, message):
    with pytest.raises(SpecError, match=message):
        build(spec)


def test_binary_cnn_statistics_match_a_hand_count():
    """NNC's 02_binary_cnn: 1×28×28 → conv 16@5×5 → pool → tanh → conv 8@5×5 → pool → tanh →
    affine 10 → tanh → affine 1 → sigmoid, counted by hand."""
    rows = {r.path: r for r in network_stats(build(get_spec("binary_cnn")), batch_size=64)}
    conv1, conv2, fc1, fc2 = rows["layers[0]"], rows["layers[3]"], rows["layers[6]"], rows["layers[8]"]
    assert conv1.output_shape == (16, 24, 24) and conv1.parameters == 16 * 25 + 16
    assert conv1.multiply_adds == 16 * 24 * 24 * 5 * 5 and conv1.adds == 16 * 24 * 24
    assert rows["layers[1]"].output_shape == (16, 12, 12) and rows["layers[1]"].comparisons == 16 * 12 * 12 * 3
    assert rows["layers[2]"].exps == 16 * 12 * 12
    assert conv2.output_shape == (8, 8, 8) and conv2.parameters == 8 * 16 * 25 + 8
    assert conv2.multiply_adds == 8 * 8 * 8 * 16 * 25
    assert fc1.parameters == 128 * 10 + 10 and fc1.multiply_adds == 1280
    assert fc2.parameters == 11 and fc2.multiply_adds == 10
    assert rows["layers[9]"].exps == 1 and rows["layers[9]"].divisions == 1
    total = totals(list(rows.values()))
    assert total["parameters"] == 4925
    assert total["multiply_adds"] == 230_400 + 204_800 + 1_280 + 10
    assert conv1.activation_bytes == 64 * 16 * 24 * 24 * 4


def test_residual_merge_counts_additions_and_stats_outputs(tmp_path):
    net = build(get_spec("resnet_small"))
    rows = network_stats(net)
    adds = [r for r in rows if r.type == "Add"]
    assert len(adds) == 2 and adds[0].adds == int(np.prod(adds[0].output_shape))
    data = stats_json(net, batch_size=8)
    assert data["total"]["parameters"] == sum(p.size for p in net.module.parameters())
    assert "total" in stats_table(net) and "multiply_adds" in json.dumps(data)
    stats_chart(net, str(tmp_path / "stats.png"))
    assert (tmp_path / "stats.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
