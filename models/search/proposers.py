"""The two ways to pick the next candidate: ``random`` (NNC's) and ``bayes`` (a Gaussian process
over network features, expected improvement against the best comparable trial)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from models.search.features import METHODS, OBJECTIVES, SearchError, costs, features
from models.search.pareto import Trial, parents, reference_error
from models.search.space import Candidate, Limits, mutate, pick
from models.spec import build


class Proposer:
    """Proposes the next candidate from the finished trials (``random`` or ``bayes``)."""

    def __init__(
        self,
        base: Candidate,
        method: str = "random",
        objective: str = "error_and_madds",
        limits: Limits | None = None,
        n_initial: int = 4,
        n_candidates: int = 48,
    ) -> None:
        if method not in METHODS:
            msg = f"unknown search method {method!r}; known: {', '.join(METHODS)}"
            raise SearchError(msg)
        if objective not in OBJECTIVES:
            msg = f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}"
            raise SearchError(msg)
        self.base, self.method, self.objective = base, method, objective
        self.limits = limits or Limits()
        self.n_initial, self.n_candidates = n_initial, n_candidates
        self._candidates: dict[int, Candidate] = {}

    def _candidate_of(self, trial: Trial) -> Candidate:
        if trial.id not in self._candidates:
            net = build(trial.spec)
            self._candidates[trial.id] = Candidate(trial.spec, net, costs(net), trial.parent, trial.mutations)
        return self._candidates[trial.id]

    def _draw(self, trials: Sequence[Trial], rng: np.random.Generator, taken: set[str]) -> Candidate | None:
        pool = parents(trials, self.objective, self.limits)
        for _ in range(20):
            if pool:
                chosen = pick(rng, pool)
                parent, parent_id = self._candidate_of(chosen), chosen.id
            else:  # until a trial has finished, candidates come from the base network (trial 0)
                parent, parent_id = self.base, 0
            steps = 1 if rng.random() < 0.7 else 2
            cand = mutate(parent, rng, steps, parent_id)
            if cand is not None and cand.key not in taken and self.limits.madds_ok(cand.costs.multiply_adds):
                return cand
        return None

    def propose(self, trials: Sequence[Trial], rng: np.random.Generator, taken: set[str]) -> Candidate | None:
        """The next candidate, never one whose key is in ``taken`` (finished or running)."""
        finished = [t for t in trials if t.status != "time_limit"]
        usable = [t for t in finished if t.usable]
        if self.method == "random" or len(usable) < self.n_initial:
            return self._draw(finished, rng, taken)
        pool: list[Candidate] = []
        keys = set(taken)
        for _ in range(self.n_candidates):
            cand = self._draw(finished, rng, keys)
            if cand is not None:
                pool.append(cand)
                keys.add(cand.key)
        if not pool:
            return None
        scores = self.expected_improvement(usable, pool)
        return pool[int(np.argmax(scores))]

    def expected_improvement(self, usable: Sequence[Trial], pool: Sequence[Candidate]) -> np.ndarray:
        from scipy.stats import norm
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        x = np.stack([features(self._candidate_of(t).net) for t in usable])
        y = np.log(np.array([max(t.error, 1e-4) for t in usable]))
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
        # one length scale: with a few dozen trials, per-feature scales overfit (tests/models/test_search.py)
        kernel = ConstantKernel(1.0) * Matern(length_scale=3.0, nu=2.5) + WhiteKernel(0.05)
        gp = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=2, random_state=0)
        with warnings.catch_warnings():  # hyper-parameters at their bounds are normal with few trials
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit((x - mean) / scale, y)
        xc = np.stack([features(c.net) for c in pool])
        mu, sigma = gp.predict((xc - mean) / scale, return_std=True)
        base_error = next((t.error for t in usable if t.parent is None), max(t.error for t in usable))
        ref = np.log(
            np.array(
                [max(reference_error(usable, c.costs.multiply_adds, self.objective, base_error), 1e-4) for c in pool]
            )
        )
        sigma = np.maximum(sigma, 1e-9)
        z = (ref - mu) / sigma
        return (ref - mu) * norm.cdf(z) + sigma * norm.pdf(z)
