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


def cd_scores(
    expert_logits: torch.Tensor, amateur_logits: torch.Tensor, alpha: float, relative_top: float = 0.1
) -> torch.Tensor:
    """Per-token CD scores F of the logits' shape (float32), -inf outside V_head; before any penalty,
    temperature or top-p."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not 0.0 < relative_top <= 1.0:
        raise ValueError(f"relative_top must be in (0, 1], got {relative_top}")
    if expert_logits.shape != amateur_logits.shape:
        raise ValueError(
            f"expert and amateur logits differ in shape: {tuple(expert_logits.shape)} vs "
            f"{tuple(amateur_logits.shape)}; the weak pair must share a vocabulary"
        )
    logp_expert = torch.log_softmax(expert_logits.float(), dim=-1)
    logp_amateur = torch.log_softmax(amateur_logits.float(), dim=-1)
    # Compared in log space: pi_r(v) >= relative_top * max pi_r  <=>  log pi_r(v) >= log(relative_top) + max.
    cutoff = logp_expert.max(dim=-1, keepdim=True).values + math.log(relative_top)
    scores = logp_expert - (1.0 - alpha) * logp_amateur
    return scores.masked_fill(logp_expert < cutoff, float("-inf"))
