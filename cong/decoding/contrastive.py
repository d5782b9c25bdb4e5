"""Contrastive-decoding scores between the weak model after (expert, pi_r) and before (amateur, pi_ref)
alignment, method.md section 1:

    F(v) = log pi_r(v) - (1 - alpha) * log pi_ref(v)   for v in V_head, else -inf
    V_head = { v : pi_r(v) >= relative_top * max_w pi_r(w) }

alpha = 0 is pure implicit-reward decoding; alpha = 1 is plain pi_r restricted to V_head.
(In Li et al. 2022 "alpha" names the plausibility threshold; here that is `relative_top`.)

Two forms of the scores (`CdParams.score_form`): `spec` is F above (`cd_scores`); `authors` is what the paper's
released code computes (`authors_cd_scores`, method.md section 1): the amateur's log-probabilities set to -1e-3
outside V_head and normalised again, which adds about (1 - alpha) * log|V| to every head score. Sampling alone
does not see a constant, but the repetition penalty that follows does: it divides positive scores and
multiplies negative ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from cong.config import CdSampleSettings

SCORE_FORMS = ("spec", "authors")
# What the released code's relative-top filter writes into the amateur's log-probabilities outside V_head.
AUTHORS_AMATEUR_OUTSIDE = -1e-3


def check_cd_args(alpha: float, relative_top: float) -> None:
    """Raise ValueError unless alpha is in [0, 1] and relative_top in (0, 1]."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not 0.0 < relative_top <= 1.0:
        raise ValueError(f"relative_top must be in (0, 1], got {relative_top}")


def _check_pair(expert_logits: torch.Tensor, amateur_logits: torch.Tensor, alpha: float, relative_top: float) -> None:
    check_cd_args(alpha, relative_top)
    if expert_logits.shape != amateur_logits.shape:
        raise ValueError(
            f"expert and amateur logits differ in shape: {tuple(expert_logits.shape)} vs "
            f"{tuple(amateur_logits.shape)}; the weak pair must share a vocabulary"
        )


def cd_scores(
    expert_logits: torch.Tensor, amateur_logits: torch.Tensor, alpha: float, relative_top: float
) -> torch.Tensor:
    """Per-token CD scores F (float32, the logits' shape, vocabulary last), -inf outside V_head.

    These are the scores before any repetition penalty, temperature or top-p.
    """
    _check_pair(expert_logits, amateur_logits, alpha, relative_top)
    logp_expert = torch.log_softmax(expert_logits.float(), dim=-1)
    scores = logp_expert
    if alpha < 1.0:  # skipped at alpha = 1 so that a -inf amateur logit cannot turn 0 * -inf into nan
        # logp_expert - (1 - alpha) * logp_amateur, bit for bit, in place: this runs once per decoding step.
        scores = torch.log_softmax(amateur_logits.float(), dim=-1).mul_(alpha - 1.0).add_(logp_expert)
    # pi_r(v) >= relative_top * max pi_r, compared in log space so that tiny probabilities do not underflow.
    cutoff = logp_expert.amax(dim=-1, keepdim=True).add_(math.log(relative_top))
    return scores.masked_fill_(logp_expert < cutoff, float("-inf"))


def authors_cd_scores(
    expert_logits: torch.Tensor, amateur_logits: torch.Tensor, alpha: float, relative_top: float
) -> torch.Tensor:
    """The released code's CD scores (float32, vocabulary last), -inf outside V_head.

    expert = log_softmax(expert logits), -inf outside V_head; amateur = log_softmax(amateur logits), set to
    -1e-3 outside V_head, then log_softmax again; score = expert - (1 - alpha) * amateur.
    """
    _check_pair(expert_logits, amateur_logits, alpha, relative_top)
    logp_expert = torch.log_softmax(expert_logits.float(), dim=-1)
    outside = logp_expert < logp_expert.amax(dim=-1, keepdim=True) + math.log(relative_top)
    amateur = torch.log_softmax(amateur_logits.float(), dim=-1).masked_fill_(outside, AUTHORS_AMATEUR_OUTSIDE)
    scores = logp_expert - (1.0 - alpha) * torch.log_softmax(amateur, dim=-1)
    return scores.masked_fill_(outside, float("-inf"))


@dataclass(frozen=True)
class CdParams:
    """Contrastive decoding's settings, validated: the mixing coefficient, the head's cut and the score form."""

    alpha: float
    relative_top: float
    score_form: str

    @classmethod
    def of(cls, settings: CdSampleSettings, alpha: float | None = None) -> CdParams:
        """The configured CD settings (`stages.cd_sample`, whose defaults are the only ones), at `alpha` if given."""
        return cls(settings.alpha if alpha is None else alpha, settings.relative_top, settings.score_form)

    def __post_init__(self) -> None:
        check_cd_args(self.alpha, self.relative_top)
        if self.score_form not in SCORE_FORMS:
            raise ValueError(f"score_form must be one of {', '.join(SCORE_FORMS)}, got {self.score_form!r}")

    def scores(self, expert_logits: torch.Tensor, amateur_logits: torch.Tensor) -> torch.Tensor:
        """This form's scores, before repetition penalty, temperature and top-p."""
        score = cd_scores if self.score_form == "spec" else authors_cd_scores
        return score(expert_logits, amateur_logits, self.alpha, self.relative_top)
