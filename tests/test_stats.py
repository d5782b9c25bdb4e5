"""cong.evaluation.stats on data whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cong.evaluation.stats import (
    RESAMPLES,
    bootstrap_mean,
    gap_recovered,
    holm,
    length_controlled_win_rate,
    nested_bootstrap,
    paired_test,
    win_rate,
)


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


def test_gap_recovered_is_zero_at_the_teacher_one_at_the_ceiling_and_linear_between():
    """PGR on paired scores whose means are known: the teacher scores 0.2, the ceiling 0.8 on average."""
    rng = np.random.default_rng(11)
    weak = (rng.random(300) < 0.2).astype(float)
    ceiling = np.clip(weak + (rng.random(300) < 0.75), 0, 1)
    gap = ceiling.mean() - weak.mean()
    halfway = np.where(rng.random(300) < 0.5, weak, ceiling)
    assert gap_recovered(weak.tolist(), weak.tolist(), ceiling.tolist()).value == 0.0
    assert gap_recovered(ceiling.tolist(), weak.tolist(), ceiling.tolist()).value == pytest.approx(1.0)
    estimate = gap_recovered(halfway.tolist(), weak.tolist(), ceiling.tolist())
    assert estimate.value == pytest.approx((halfway.mean() - weak.mean()) / gap) and estimate.n == 300
    assert estimate.low < estimate.value < estimate.high and 0.3 < estimate.value < 0.7
    # Below the teacher is negative; the prompts are resampled jointly, so an identical copy has no spread.
    assert gap_recovered(np.zeros(300).tolist(), weak.tolist(), ceiling.tolist()).value < 0
    assert gap_recovered(ceiling.tolist(), weak.tolist(), ceiling.tolist()).low == pytest.approx(1.0)


def test_gap_recovered_edges():
    nan = float("nan")
    assert gap_recovered([0.5, nan, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]).n == 2, "a prompt any of them lacks"
    assert gap_recovered([0.5, 1.0], [0.0, 0.0], [1.0, 1.0]).value == 0.75
    assert gap_recovered([1.0, 0.0], [0.5, 0.5], [0.5, 0.5]).fields("pgr") == {}, "no gap: no PGR"
    assert gap_recovered([nan], [0.0], [1.0]).n == 0


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


def test_holm_on_a_textbook_example():
    """Sorted, 0.005, 0.01, 0.03, 0.04 become 4 * 0.005, 3 * 0.01, 2 * 0.03 and max(2 * 0.03, 1 * 0.04),
    returned in the input order."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_is_monotone_capped_and_skips_nan():
    # 0.021 alone would stay 0.021; the step-down keeps it at least the 0.04 of the smaller p before it.
    assert holm([0.021, 0.02]) == pytest.approx([0.04, 0.04])
    assert holm([0.6, 0.9, 0.4]) == [1.0, 1.0, 1.0]
    adjusted = holm([0.01, math.nan, 0.04])  # two tests, not three
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)
    assert holm([]) == [] and all(math.isnan(p) for p in holm([math.nan, math.nan]))


def test_nested_bootstrap_interval_spans_the_worlds_not_just_the_prompts():
    """Three worlds whose differences are 0.1, 0.2 and 0.3 on every prompt of every run: the prompts and runs
    say nothing new, the uncertainty is which worlds were built. The nested interval is that of a mean of three
    draws of {0.1, 0.2, 0.3}, inside [0.1, 0.3]; the pooled bootstrap of the 1800 scores, which treats them as
    independent, is more than ten times narrower."""
    differences = [[[effect] * 200 for _ in range(3)] for effect in (0.1, 0.2, 0.3)]
    estimate = nested_bootstrap(differences)
    assert estimate.value == pytest.approx(0.2)
    assert (estimate.worlds, estimate.runs, estimate.prompts) == (3, 9, 600)
    assert 0.1 - 1e-12 <= estimate.low < 0.19 and 0.21 < estimate.high <= 0.3 + 1e-12
    pooled = bootstrap_mean(np.ravel(differences).tolist())
    assert estimate.high - estimate.low > 10 * (pooled.high - pooled.low)


def test_nested_bootstrap_resamples_runs_and_weighs_worlds_equally():
    # One world, two seeds that differ by 1 on every prompt: a draw takes the runs (0, 0), (0, 1), (1, 0) or
    # (1, 1), so a quarter of the draws are 0 and a quarter 1.
    seeds = nested_bootstrap([[[0.0] * 50, [1.0] * 50]])
    assert (seeds.value, seeds.low, seeds.high) == (0.5, 0.0, 1.0)
    # 10 prompts at 1 and 1000 at 0: pooled the mean would be 0.01; each world counts one half.
    assert nested_bootstrap([[[1.0] * 10], [[0.0] * 1000]]).value == pytest.approx(0.5)


def test_nested_bootstrap_p_value():
    rng = np.random.default_rng(8)
    positive = nested_bootstrap([rng.uniform(0.1, 1.0, (3, 50)).tolist() for _ in range(3)])
    assert positive.low > 0 and positive.p_value == pytest.approx(2 / (1 + RESAMPLES))
    negative = nested_bootstrap([(-rng.uniform(0.1, 1.0, (3, 50))).tolist() for _ in range(3)])
    assert negative.high < 0 and negative.p_value == pytest.approx(2 / (1 + RESAMPLES))
    # Noise around 0, with world effects -0.2, 0 and 0.2 that cancel: no effect to find.
    noise = nested_bootstrap([(rng.normal(effect, 1.0, (3, 100))).tolist() for effect in (-0.2, 0.0, 0.2)])
    assert noise.value != 0 and noise.p_value > 0.2 and noise.low < 0 < noise.high
    assert nested_bootstrap([[[1.0, -1.0]], [[-1.0, 1.0]]]).p_value == 1.0


def test_nested_bootstrap_is_seeded():
    differences = [np.random.default_rng(world).normal(0.1, 1.0, (2, 30)).tolist() for world in range(3)]
    assert nested_bootstrap(differences, seed=4) == nested_bootstrap(differences, seed=4)
    assert nested_bootstrap(differences, seed=4) != nested_bootstrap(differences, seed=5)


def test_nested_bootstrap_draws_prompts_once_for_all_runs_of_a_world():
    """Two identical runs: with one draw of prompts for both, every draw is the bootstrap mean of that run and
    the interval is as wide as the single run's; drawn independently per run, each draw would average two
    independent bootstrap means and the interval would be narrower by a factor of sqrt(2)."""
    x = np.random.default_rng(9).normal(0.0, 1.0, 500).tolist()
    single = nested_bootstrap([[x]], resamples=4000)
    twice = nested_bootstrap([[x, x]], resamples=4000)
    assert twice.value == pytest.approx(single.value)
    assert twice.high - twice.low == pytest.approx(single.high - single.low, rel=0.1)
    assert twice.high - twice.low == pytest.approx(
        bootstrap_mean(x, resamples=4000).high - bootstrap_mean(x, resamples=4000).low, rel=0.1
    )


def test_nested_bootstrap_rejects_malformed_input():
    with pytest.raises(ValueError, match="no worlds"):
        nested_bootstrap([])
    with pytest.raises(ValueError, match="world 1 has no runs"):
        nested_bootstrap([[[1.0]], []])
    with pytest.raises(ValueError, match="world 0 has no runs or no prompts"):
        nested_bootstrap([[[], []]])
    with pytest.raises(ValueError, match="runs of world 1 have different numbers of prompts"):
        nested_bootstrap([[[1.0, 2.0]], [[1.0, 2.0], [1.0]]])
