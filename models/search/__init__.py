"""Structure search: mutate network specs, learn which candidates pay, mark the Pareto front.

This module holds the search itself and nothing about datasets or processes: the proposal of
candidate specs (NNC's mutation policy), shape checks without data, the model-based selection and
NNC's Pareto marking. ``appliance.workflows.search`` runs the trials.

Mutations work on the *body* of a network: every top-level layer before the output layer (the last
Affine / Convolution / Deconvolution whose output is the network's) and inside residual bodies. The
output layer and what follows it are never touched, and a candidate must keep the base's input and
output shapes. A candidate whose shapes do not fit is refused by :func:`models.spec.build` before
any training.

Two ways to pick the next candidate from the finished trials:

- ``random``: NNC's default. Mutate a parent drawn from the Pareto front (or the best networks when
  the objective is error alone) once or twice.
- ``bayes``: draw many such candidates, predict each one's validation error with a Gaussian process
  over network features (counts of each layer family, log multiply-adds, parameters, widths, depth
  and resolution), and train the one with the largest expected improvement. Multiply-adds are
  known exactly before training, so only the error is predicted; the improvement is measured
  against the best error of the finished trials that are at most as heavy as the candidate, so a
  lighter network at the same error counts as progress when the objective includes multiply-adds.
"""

from models.search.features import (
    FEATURE_NAMES,
    METHODS,
    OBJECTIVES,
    SearchError,
    costs,
    features,
    head_start,
    spec_key,
)
from models.search.pareto import Trial, hypervolume, parents, pareto_flags, reference_error
from models.search.proposers import Proposer
from models.search.space import MUTATIONS, Candidate, Limits, check_base, mutate

__all__ = [
    "FEATURE_NAMES",
    "METHODS",
    "MUTATIONS",
    "OBJECTIVES",
    "Candidate",
    "Limits",
    "Proposer",
    "SearchError",
    "Trial",
    "check_base",
    "costs",
    "features",
    "head_start",
    "hypervolume",
    "mutate",
    "pareto_flags",
    "parents",
    "reference_error",
    "spec_key",
]
