"""Structure search without training: mutations, shape checks, Pareto marking, the error model."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from models.search import (
    FEATURE_NAMES,
    MUTATIONS,
    Limits,
    Proposer,
    SearchError,
    Trial,
    check_base,
    features,
    head_start,
    hypervolume,
    mutate,
    pareto_flags,
    spec_key,
)
from models.spec import build
from models.zoo import get_spec

BASES = {
    "binary_cnn": get_spec("binary_cnn", [1, 28, 28], classes=10),
    "lenet": get_spec("lenet", [1, 28, 28], classes=10),
    "resnet_small": get_spec("resnet_small", [1, 28, 28], classes=10),
    "mlp": get_spec("mlp", [1, 28, 28], classes=2),
    "conv_autoencoder": get_spec("conv_autoencoder", [1, 32, 32]),
}


@pytest.mark.parametrize("name", sorted(BASES))
def test_mutations_build_keep_shapes_and_the_output_layer(name):
    base = check_base(BASES[name])
    head = base.spec["layers"][head_start(base.spec["layers"]) :]
    rng = np.random.default_rng(0)
    seen = collections.Counter()
    for _ in range(120):
        cand = mutate(base, rng, steps=int(rng.integers(1, 4)))
        assert cand is not None
        net = build(cand.spec)  # every candidate builds: shapes were checked without data
        assert net.output_shape == base.net.output_shape
        assert net.input_shape == base.net.input_shape
        assert cand.spec["layers"][-len(head) :] == head  # the output layer and its activation stay
        assert cand.key == spec_key(cand.spec) != base.key
        seen.update(cand.mutations)
    assert len(seen) >= 10, seen


def test_every_mutation_family_happens():
    """Over the bases, each of NNC's mutation kinds is produced (insert/remove, swap, change, repeat, residual)."""
    seen = collections.Counter()
    rng = np.random.default_rng(1)
    separable = get_spec("binary_cnn", [1, 28, 28], classes=10)
    separable["layers"][0:1] = [
        {"type": "DepthwiseConvolution", "kernel": [5, 5]},
        {"type": "Convolution", "outmaps": 16, "kernel": [1, 1]},
    ]
    for spec in [*BASES.values(), separable]:
        base = check_base(spec)
        parent = base
        for _ in range(200):
            cand = mutate(parent, rng, steps=2)
            seen.update(cand.mutations)
            parent = cand if rng.random() < 0.3 else base  # wander, so nets with dropout, residuals etc. appear
    names = set(seen)
    for family in MUTATIONS:
        if family in ("swap", "repeat"):
            continue
        assert family in names, (family, seen)
    assert {"swap_activation", "swap_pooling", "swap_conv_to_depthwise", "swap_depthwise_to_conv"} <= names
    assert {"repeat_block", "remove_block"} <= names


def test_a_base_without_output_layer_or_that_does_not_build_is_refused():
    with pytest.raises(SearchError, match="output layer"):
        check_base({"input": [4], "layers": [{"type": "ReLU"}]})
    with pytest.raises(SearchError, match=r"layers\[0\]"):
        check_base({"input": [1, 4, 4], "layers": [{"type": "Convolution", "outmaps": 2, "kernel": [7, 7]}]})


def test_pareto_marking_follows_nnc_rule():
    errors = [0.10, 0.08, 0.08, 0.20, 0.05, None, 0.30]
    madds = [100, 120, 150, 50, 400, 10, 50]
    usable = [True, True, True, True, True, False, True]
    # 2 is dominated by 1 (same error, heavier); 6 by 3 (same madds, worse); 5 failed
    assert pareto_flags(errors, madds, usable) == [True, True, False, True, True, False, False]


def test_hypervolume_counts_the_dominated_area():
    assert hypervolume([(1, 3), (2, 1)], (4, 4)) == pytest.approx(7.0)
    assert hypervolume([(1, 3), (2, 1), (3, 3.5)], (4, 4)) == pytest.approx(7.0)  # a dominated point adds nothing
    assert hypervolume([(5, 1)], (4, 4)) == 0.0


def test_limits_keep_candidates_inside_the_multiply_add_range():
    base = check_base(BASES["binary_cnn"])
    limit = base.costs.multiply_adds
    proposer = Proposer(base, "random", limits=Limits(madds_max=limit))
    trial = Trial(0, base.key, base.spec, 0.1, limit, "done")
    rng = np.random.default_rng(0)
    taken = {base.key}
    for _ in range(15):
        cand = proposer.propose([trial], rng, taken)
        assert cand.costs.multiply_adds <= limit
        taken.add(cand.key)


def test_unknown_method_or_objective_is_named():
    base = check_base(BASES["mlp"])
    with pytest.raises(SearchError, match="unknown search method 'grid'"):
        Proposer(base, "grid")
    with pytest.raises(SearchError, match="unknown objective 'speed'"):
        Proposer(base, "random", "speed")


def _fake_trials(base, rng, n, error_of):
    trials, parent = [Trial(0, base.key, base.spec, error_of(base.net), base.costs.multiply_adds, "done")], base
    for i in range(1, n):
        cand = mutate(parent, rng, steps=1, parent_id=0)
        trials.append(Trial(i, cand.key, cand.spec, error_of(cand.net), cand.costs.multiply_adds, "done", 0))
    return trials


def test_the_model_based_method_learns_which_networks_pay():
    """Errors that depend on network features (batch norm helps, saturating activations hurt): the
    Gaussian process's picks are better, by that rule, than random picks from the same trials."""
    index = {k: i for i, k in enumerate(FEATURE_NAMES)}

    def error_of(net):
        f = features(net)
        return float(0.12 - 0.03 * min(f[index["batchnorm"]], 2) + 0.02 * f[index["saturating"]])

    base = check_base(BASES["binary_cnn"])
    trials = _fake_trials(base, np.random.default_rng(3), 14, error_of)
    taken = {t.key for t in trials}
    bayes = Proposer(base, "bayes", objective="error", n_initial=4)
    rand = Proposer(base, "random", objective="error")
    picked = {"bayes": [], "random": []}
    for seed in range(8):
        for name, proposer in (("bayes", bayes), ("random", rand)):
            cand = proposer.propose(trials, np.random.default_rng(100 + seed), taken)
            picked[name].append(error_of(cand.net))
    assert np.mean(picked["bayes"]) < np.mean(picked["random"]) - 0.01, picked
