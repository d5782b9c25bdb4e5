"""Statistics of the comparison table: bootstrap intervals, a paired test, and a length-controlled win rate.

Every figure is an `Estimate`: the value, a 95% percentile-bootstrap interval and the number of prompts
behind it. Resampling is seeded, so a run's table is reproducible to the last digit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
SEED = 0


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float  # 95% interval
    high: float
    n: int  # prompts behind the figure

    def fields(self, name: str) -> dict[str, float | int]:
        """The flat results.json fields of metric `name`: the value, `_ci95_low`, `_ci95_high` and `_n`; none when
        no prompt had the metric."""
        if self.n == 0:
            return {}
        return {name: self.value, f"{name}_ci95_low": self.low, f"{name}_ci95_high": self.high, f"{name}_n": self.n}


NOT_APPLICABLE = Estimate(math.nan, math.nan, math.nan, 0)


def bootstrap_mean(values: list[float], resamples: int = RESAMPLES, seed: int = SEED) -> Estimate:
    """The mean and its 95% percentile-bootstrap interval; NaN entries (the metric does not apply) are left out."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return NOT_APPLICABLE
    means = x[np.random.default_rng(seed).integers(0, x.size, (resamples, x.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Estimate(float(x.mean()), float(low), float(high), int(x.size))


def wins(scores: list[float], against: list[float]) -> list[float]:
    """Per prompt: 1 where `scores` beats `against`, 0.5 on a tie, 0 otherwise."""
    return [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores, against, strict=True)]


def win_rate(scores: list[float], against: list[float], resamples: int = RESAMPLES, seed: int = SEED) -> Estimate:
    """Share of prompts where `scores` beats `against` (ties count one half), with its bootstrap interval."""
    return bootstrap_mean(wins(scores, against), resamples, seed)


@dataclass(frozen=True)
class PairedTest:
    difference: Estimate  # mean of a - b over the prompts, with its bootstrap interval
    p_value: float  # two-sided, paired sign-flip permutation test of mean(a - b) = 0


def paired_test(a: list[float], b: list[float], resamples: int = 10000, seed: int = SEED) -> PairedTest:
    """Whether `a` and `b`, scored on the same prompts, differ: under the null each prompt's difference is as
    likely to have either sign, so the observed mean difference is compared with those of random sign flips.
    p = (1 + flips at least as extreme) / (1 + resamples), never 0."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.size == 0:
        return PairedTest(NOT_APPLICABLE, math.nan)
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(resamples, d.size))
    flipped = np.abs((signs * d).mean(axis=1))
    # A relative tolerance, so that a flip equal to the observation up to rounding counts as extreme.
    extreme = int((flipped >= abs(d.mean()) * (1 - 1e-12)).sum())
    return PairedTest(bootstrap_mean(d.tolist(), seed=seed), (1 + extreme) / (1 + resamples))


def length_controlled_win_rate(preferences: list[float], lengths: list[int], base_lengths: list[int]) -> float:
    """AlpacaEval 2's length-controlled win rate against the base, for one method.

    `preferences[i]` is the probability (0, 0.5, 1, or a judge's average over both orders) that the method's
    response to prompt i beats the base's. A logistic model explains it by a method term and the length
    difference, P(win) = sigmoid(theta + phi * tanh(delta_i / std(delta))), delta = length - base length; the
    length-controlled win rate is the win rate at no length difference, sigmoid(theta). Fitted by Newton's
    method on the (soft-label) log loss, with a small ridge penalty on phi so that a judge that always prefers
    the longer answer (separable data) still gives a finite fit.
    """
    y = np.asarray(preferences, dtype=float)
    delta = np.asarray(lengths, dtype=float) - np.asarray(base_lengths, dtype=float)
    spread = delta.std()
    features = np.stack([np.ones_like(delta), np.tanh(delta / spread) if spread > 0 else np.zeros_like(delta)], 1)
    ridge = np.diag([0.0, 0.01])
    weights = np.zeros(2)
    for _ in range(100):
        p = _sigmoid(features @ weights)
        gradient = features.T @ (p - y) + ridge @ weights
        hessian = (features * (p * (1 - p))[:, None]).T @ features + ridge + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(_sigmoid(weights[0]))


def _sigmoid(z):
    """1 / (1 + exp(-z)) without overflow for large |z|."""
    return np.exp(-np.logaddexp(0.0, -z))
