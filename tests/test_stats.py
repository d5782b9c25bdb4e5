"""cong.stats on data whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cong.stats import bootstrap_mean, length_controlled_win_rate, paired_test, win_rate


def test_bootstrap_interval_of_a_normal_sample_matches_the_t_interval():
    """For 400 draws of N(1, 2^2) the percentile bootstrap's 95% interval is within a few percent of the
    textbook interval mean +- 1.96 s / sqrt(n), and it is seeded: the same call gives the same interval."""
    x = np.random.default_rng(3).normal(1.0, 2.0, 400)
    estimate = bootstrap_mean(x.tolist())
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert estimate.value == pytest.approx(x.mean()) and estimate.n == 400
    assert estimate.low == pytest.approx(x.mean() - half, abs=0.05 * half)
    assert estimate.high == pytest.approx(x.mean() + half, abs=0.05 * half)
    assert bootstrap_mean(x.tolist()) == estimate


def test_bootstrap_covers_the_true_mean_about_95_percent_of_the_time():
    """Coverage over 300 samples of 60 Bernoulli(0.3) draws, the shape of a per-prompt win: 0.95 within its noise."""
    rng = np.random.default_rng(5)
    covered = [
        (e.low <= 0.3 <= e.high) for e in (bootstrap_mean((rng.random(60) < 0.3).tolist(), seed=i) for i in range(300))
    ]
    assert 0.90 <= sum(covered) / len(covered) <= 0.99


def test_bootstrap_edges():
    assert bootstrap_mean([2.0, 2.0, 2.0]) == bootstrap_mean([2.0, 2.0, 2.0, float("nan")])
    assert (bootstrap_mean([2.0] * 3).low, bootstrap_mean([2.0] * 3).high) == (2.0, 2.0)
    assert bootstrap_mean([float("nan")]).n == 0 and bootstrap_mean([]).fields("x") == {}
    rate = win_rate([1, 2, 3, 4], [0, 2, 5, 1])  # win, tie, loss, win
    assert (rate.value, rate.n) == (0.625, 4) and 0 <= rate.low <= rate.value <= rate.high <= 1
    assert set(rate.fields("w")) == {"w", "w_ci95_low", "w_ci95_high", "w_n"}


def test_paired_test_tells_a_shift_from_noise():
    rng = np.random.default_rng(7)
    base = rng.normal(0, 1, 50)
    shifted = paired_test((base + 0.5 + rng.normal(0, 0.3, 50)).tolist(), base.tolist())
    assert shifted.p_value < 0.001 and shifted.difference.low > 0
    noise = paired_test((base + rng.normal(0, 0.3, 50)).tolist(), base.tolist())
    assert noise.p_value > 0.05 and noise.difference.low < 0 < noise.difference.high
    assert paired_test([1.0, 2.0], [1.0, 2.0]).p_value == 1.0
    # Five prompts, all better: the 2^5 sign patterns make p = 2/32 exactly; Monte Carlo is within its noise.
    assert paired_test([1.0] * 5, [0.0] * 5).p_value == pytest.approx(2 / 32, abs=0.01)


def _lengths(longer_share: float, n: int = 400, seed: int = 11):
    rng = np.random.default_rng(seed)
    base = rng.integers(20, 60, n)
    sign = np.where(rng.random(n) < longer_share, 1, -1)
    return base + sign * rng.integers(5, 40, n), base


def test_length_controlled_win_rate_removes_a_win_due_to_length_only():
    """The judge's preference depends on the length difference alone (the longer answer is preferred, the more
    so the longer it is) and the method is longer on 80% of the prompts: the raw win rate is well above one
    half, the length-controlled one is one half."""
    lengths, base = _lengths(0.8)
    delta = lengths - base
    preference = 1 / (1 + np.exp(-3 * np.tanh(delta / delta.std())))
    assert preference.mean() > 0.7
    assert length_controlled_win_rate(preference.tolist(), lengths.tolist(), base.tolist()) == pytest.approx(
        0.5, abs=0.01
    )


def test_length_controlled_win_rate_keeps_a_win_not_due_to_length():
    """A method that wins 80% of prompts whatever the lengths (half longer, half shorter) keeps its win rate."""
    lengths, base = _lengths(0.5)
    wins = (np.random.default_rng(2).random(lengths.size) < 0.8).astype(float)
    lc = length_controlled_win_rate(wins.tolist(), lengths.tolist(), base.tolist())
    assert lc == pytest.approx(wins.mean(), abs=0.02)
    assert length_controlled_win_rate([0.5] * 4, [1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(0.5)
    assert length_controlled_win_rate([1.0] * 6, [3, 4, 5, 6, 7, 8], [5] * 6) > 0.99
