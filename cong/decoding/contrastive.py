"""Contrastive-decoding scores between the weak model after (expert, pi_r) and before (amateur, pi_ref)
alignment, method.md section 1:

    F(v) = log pi_r(v) - (1 - alpha) * log pi_ref(v)   for v in V_head, else -inf
    V_head = { v : pi_r(v) >= relative_top * max_w pi_r(w) }

alpha = 0 is pure implicit-reward decoding; alpha = 1 is plain pi_r restricted to V_head.
(In Li et al. 2022 "alpha" names the plausibility threshold; here that is `relative_top`.)
"""

from __future__ import annotations

import math

import torch


def check_cd_args(alpha: float, relative_top: float) -> None:
    """Raise ValueError unless alpha is in [0, 1] and relative_top in (0, 1]."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not 0.0 < relative_top <= 1.0:
        raise ValueError(f"relative_top must be in (0, 1], got {relative_top}")


def cd_scores(
    expert_logits: torch.Tensor, amateur_logits: torch.Tensor, alpha: float, relative_top: float = 0.1
) -> torch.Tensor:
    """Per-token CD scores F (float32, the logits' shape, vocabulary last), -inf outside V_head.

    These are the scores before any repetition penalty, temperature or top-p.
    """
    check_cd_args(alpha, relative_top)
    if expert_logits.shape != amateur_logits.shape:
        raise ValueError(
            f"expert and amateur logits differ in shape: {tuple(expert_logits.shape)} vs "
            f"{tuple(amateur_logits.shape)}; the weak pair must share a vocabulary"
        )
    logp_expert = torch.log_softmax(expert_logits.float(), dim=-1)
    scores = logp_expert
    if alpha < 1.0:  # skipped at alpha = 1 so that a -inf amateur logit cannot turn 0 * -inf into nan
        # logp_expert - (1 - alpha) * logp_amateur, bit for bit, in place: this runs once per decoding step.
        scores = torch.log_softmax(amateur_logits.float(), dim=-1).mul_(alpha - 1.0).add_(logp_expert)
    # pi_r(v) >= relative_top * max pi_r, compared in log space so that tiny probabilities do not underflow.
    cutoff = logp_expert.amax(dim=-1, keepdim=True).add_(math.log(relative_top))
    return scores.masked_fill_(logp_expert < cutoff, float("-inf"))
