"""Gates: whether a world and a weak pair can test weak-to-strong methods at all, decided before any method runs.

A comparison of methods means something only where transfer is possible and the weak pair carries a signal. Each
gate is a number measured on the world or the weak models, never on a method's output, against a threshold fixed
here before any run:

    capability          the strong base's lead over the weak base in greedy accuracy on the strong-only families
                        (at least 0.25): there is something the weak model cannot teach and a method can erase
    latent_capability   the share of that lead the strong base keeps when made to open in the aligned style (at
                        least 0.8): the aligned style and the strong model's own answers can coexist
    no_shortcut         over the families, the most a constant answer scores above chance (at most 0.05)
    weak_signal         the paired test's p that the aligned weak model beats the weak base on the explicit reward
                        (below 0.05; 1 when it does not beat it)
    implicit_reward     Spearman correlation, over the weak models' samples, of the weak pair's implicit reward with
                        the explicit reward (at least 0.2): contrastive decoding follows a signal that means something
    mild_shift          the aligned weak model's mean per-token KL to the weak base on its own samples, in nats (at
                        most 0.5): a mild alignment, as the paper's DPO at lr 8e-7 is

The first three are the world's (the testbed build measures them); the last three the weak pair's, measured right
after weak alignment, before any method's stage.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from cong.errors import CongError
from cong.evaluation.stats import paired_test

THRESHOLDS = {
    "capability": 0.25,
    "latent_capability": 0.8,
    "no_shortcut": 0.05,
    "weak_signal": 0.05,
    "implicit_reward": 0.2,
    "mild_shift": 0.5,
}
# Gates whose value must stay below their threshold; the others must reach theirs.
_AT_MOST = {"no_shortcut", "mild_shift"}
_BELOW = {"weak_signal"}  # a p-value: strictly below
# Constant answers tried per family, the most common first: past them, an answer is rarer than chance allows.
_CONSTANTS_TRIED = 50


@dataclass(frozen=True)
class Gate:
    name: str
    value: float
    threshold: float
    passed: bool

    def as_dict(self) -> dict:
        return asdict(self)


def gate(name: str, value: float) -> Gate:
    threshold = THRESHOLDS[name]
    if name in _BELOW:
        passed = value < threshold
    elif name in _AT_MOST:
        passed = value <= threshold
    else:
        passed = value >= threshold
    return Gate(name, round(float(value), 6), threshold, bool(passed))


def _mean(values: Iterable[bool | float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def capability(weak_correct: list[bool], strong_correct: list[bool]) -> Gate:
    """Per strong-only prompt, whether each base model's greedy answer is right."""
    return gate("capability", _mean(strong_correct) - _mean(weak_correct))


def latent_capability(weak_correct: list[bool], strong_correct: list[bool], opened_correct: list[bool]) -> Gate:
    """`opened_correct`: the strong base's answers when its response starts with the aligned style's opening."""
    lead = _mean(strong_correct) - _mean(weak_correct)
    kept = (_mean(opened_correct) - _mean(weak_correct)) / lead if lead > 0 else 0.0
    return gate("latent_capability", kept)


def no_shortcut(examples: Iterable[tuple[str, str, str]], answer_counts: dict[str, int], is_correct) -> Gate:
    """`examples`: (family, prompt, answer) triples; `is_correct(prompt, response)` the reward's correctness. Each
    of a family's most common answers is given as the response to every prompt of the family and scored against
    chance, one over the family's number of answers."""
    prompts: dict[str, list[str]] = {}
    answers: dict[str, Counter] = {}
    for family, prompt, answer in examples:
        prompts.setdefault(family, []).append(prompt)
        answers.setdefault(family, Counter())[answer] += 1
    excess = 0.0
    for family, asked in prompts.items():
        common = [answer for answer, _ in answers[family].most_common(_CONSTANTS_TRIED)]
        best = max(_mean(is_correct(p, answer) for p in asked) for answer in common)
        excess = max(excess, best - 1 / answer_counts[family])
    return gate("no_shortcut", excess)


def weak_signal(aligned_rewards: list[float], base_rewards: list[float]) -> Gate:
    """Explicit rewards of the aligned weak model's and the weak base's responses, paired by prompt."""
    test = paired_test(aligned_rewards, base_rewards)
    return gate("weak_signal", test.p_value if test.difference.value > 0 else 1.0)


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation, ties given their average rank; 0 when either side is constant."""
    rx, ry = _ranks(np.asarray(x, dtype=float)), _ranks(np.asarray(y, dtype=float))
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def implicit_reward(implicit: list[float], explicit: list[float]) -> Gate:
    return gate("implicit_reward", spearman(implicit, explicit))


def mild_shift(mean_token_kl: float) -> Gate:
    return gate("mild_shift", mean_token_kl)


def failed(gates: list[dict]) -> list[dict]:
    return [g for g in gates if not g["passed"]]


def check(gates: list[dict], what: str, allowed: bool) -> None:
    """Stop with a message naming every failed gate and its value, unless failed gates are allowed."""
    bad = failed(gates)
    if bad and not allowed:
        named = "; ".join(f"{g['name']} = {g['value']:.4g} (threshold {g['threshold']})" for g in bad)
        raise CongError(
            f"{what} fails {len(bad)} gate(s): {named}. A comparison of methods there cannot answer whether weak "
            "supervision transfers (see cong/evaluation/gates.py). Change the world or the weak pair, or pass "
            "--allow-failed-gates to run anyway (every output is then marked so)."
        )
