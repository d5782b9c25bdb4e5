"""Summary statistics for the comparison table."""

from __future__ import annotations

import math


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of a normal 95% interval; NaN entries (not applicable) are left out."""
    values = [v for v in values if not math.isnan(v)]
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / max(n - 1, 1)
    return mean, 1.96 * math.sqrt(var / n)


def win_rate(scores: list[float], against: list[float]) -> tuple[float, float]:
    """Share of items where `scores` beats `against` (ties count one half), and its 95% interval half-width."""
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores, against, strict=True)]
    return mean_ci(wins)
