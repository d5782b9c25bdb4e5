"""Statistics of the comparison table: bootstrap intervals, a paired test, and a length-controlled win rate;
and of a study over several worlds: a nested bootstrap and Holm's correction for many comparisons.

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


def gap_recovered(
    method: list[float], weak: list[float], ceiling: list[float], resamples: int = RESAMPLES, seed: int = SEED
) -> Estimate:
    """The performance gap recovered (PGR) of weak-to-strong studies: (mean(method) - mean(weak)) / (mean(ceiling) -
    mean(weak)), 0 at the weak teacher, 1 at the strong ceiling; below 0 worse than the teacher, above 1 better than
    the ceiling. The three are scored on the same prompts, so each bootstrap draw resamples prompts jointly for all
    three (a percentile interval of the ratio); a draw with no gap is left out. Prompts where any of the three has
    no score (NaN) are left out; with no gap to recover at all there is no PGR (an estimate of 0 prompts)."""
    x = np.asarray([method, weak, ceiling], dtype=float)
    x = x[:, ~np.isnan(x).any(axis=0)]
    n = x.shape[1]
    if n == 0 or x[2].mean() == x[1].mean():
        return NOT_APPLICABLE
    draws = x[:, np.random.default_rng(seed).integers(0, n, (resamples, n))].mean(axis=2)
    gaps = draws[2] - draws[1]
    ratios = (draws[0] - draws[1])[gaps != 0] / gaps[gaps != 0]
    low, high = np.percentile(ratios, [2.5, 97.5])
    value = (x[0].mean() - x[1].mean()) / (x[2].mean() - x[1].mean())
    return Estimate(float(value), float(low), float(high), n)


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


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni step-down adjusted p-values, in the input order: a study tests many pairs of methods at
    once, and rejecting where the adjusted p is below alpha keeps the chance of any false finding at most alpha,
    with more power than Bonferroni's. The i-th smallest of m p-values (from 0) becomes the running maximum of
    (m - i) * p, capped at 1. NaN entries (no test) stay NaN and do not count in m."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.size, math.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = order.size
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return adjusted.tolist()


@dataclass(frozen=True)
class NestedEstimate:
    value: float  # mean over worlds of the mean over the world's runs of the mean over its prompts
    low: float  # 95% interval
    high: float
    p_value: float  # two-sided bootstrap test of value = 0
    worlds: int
    runs: int  # over all worlds
    prompts: int  # over all worlds, each world's prompts counted once however many runs scored them


def nested_bootstrap(
    differences: list[list[list[float]]], resamples: int = RESAMPLES, seed: int = SEED
) -> NestedEstimate:
    """The mean paired difference a - b of two methods over a study, `differences[world][run][prompt]`, with
    an interval that counts every source of spread: worlds (testbed builds) and runs (training seeds) differ
    more than prompts do, and a bootstrap of the pooled prompts, which treats every score as independent, gives
    an interval far too narrow. Each draw resamples the worlds, then within each drawn world its runs and its
    prompts, all with replacement; a world's runs were scored on the same prompts, so one draw of prompt
    indices serves all its runs, keeping the pairing by prompt across seeds. Worlds count equally whatever
    their prompt counts. p = 2 (1 + draws on the far side of 0) / (1 + resamples), at most 1; 1 at no effect."""
    if not differences:
        raise ValueError("nested_bootstrap: no worlds")
    worlds = []
    for index, runs in enumerate(differences):
        if not runs or not runs[0]:
            raise ValueError(f"nested_bootstrap: world {index} has no runs or no prompts")
        if len({len(run) for run in runs}) > 1:
            raise ValueError(f"nested_bootstrap: the runs of world {index} have different numbers of prompts")
        worlds.append(np.asarray(runs, dtype=float))
    value = float(np.mean([world.mean() for world in worlds]))
    rng = np.random.default_rng(seed)
    # Resampling with replacement is weighting by multinomial counts. `picks[d, w]`: how often draw d drew world
    # w; each time, its runs and prompts are redrawn, so world w is resampled picks[:, w].sum() times.
    picks = rng.multinomial(len(worlds), np.full(len(worlds), 1 / len(worlds)), size=resamples)
    totals = np.zeros(resamples)
    for world, times in zip(worlds, picks.T, strict=True):
        run_count, prompt_count = world.shape
        n = int(times.sum())
        run_weights = rng.multinomial(run_count, np.full(run_count, 1 / run_count), size=n) / run_count
        # Per prompt, the mean over the drawn runs; then one draw of prompts, the same for all of them.
        prompts = rng.integers(0, prompt_count, (n, prompt_count))
        means = np.take_along_axis(run_weights @ world, prompts, axis=1).mean(axis=1)
        totals += np.bincount(np.repeat(np.arange(resamples), times), weights=means, minlength=resamples)
    draws = totals / len(worlds)
    low, high = np.percentile(draws, [2.5, 97.5])
    far = int((draws <= 0).sum()) if value > 0 else int((draws >= 0).sum())
    p_value = 1.0 if value == 0 else min(1.0, 2 * (1 + far) / (1 + resamples))
    runs, prompts = np.sum([world.shape for world in worlds], axis=0).tolist()
    return NestedEstimate(value, float(low), float(high), p_value, len(worlds), runs, prompts)


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
