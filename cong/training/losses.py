"""The losses of the WSPO and AuxConf baselines (method.md section 3), as plain torch functions."""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def token_logps(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """log p(labels[:, t+1] | ids[:, :t+1]) for each position: (batch, T, vocab) logits -> (batch, T-1).

    Positions whose label is `ignore_index` get 0 (the caller masks them anyway).
    """
    targets = labels[:, 1:]
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logps.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked.masked_fill(targets == ignore_index, 0.0)


def wspo_loss(
    policy_logps: torch.Tensor,
    strong_ref_logps: torch.Tensor,
    weak_aligned_logps: torch.Tensor,
    weak_base_logps: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Weak-to-Strong Preference Optimization on completion tokens (batch x T log-probs, 0/1 mask).

    L = mean over the batch of (1/|y|) * sum_t [beta * (log pi_theta - log pi_S_ref) - (log pi_r - log pi_ref)]^2,
    where |y| is the number of masked-in tokens of the row, pi_r the aligned and pi_ref the base weak model.
    """
    mask = mask.to(policy_logps.dtype)
    gap = beta * (policy_logps - strong_ref_logps) - (weak_aligned_logps - weak_base_logps)
    per_row = (gap.square() * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return per_row.mean()


def auxconf_loss(
    logits: torch.Tensor, labels: torch.Tensor, coef: float, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Cross-entropy against the soft target (1 - c) * onehot(label) + c * onehot(argmax logits).

    The argmax is the model's own hardened prediction and is a fixed target (no gradient flows through it).
    Per token: -(1 - c) * log p(label) - c * log p(argmax), averaged over the tokens whose label is not
    `ignore_index`. `logits` (..., vocab) are already aligned with `labels` (...); with c = 0 this is
    `F.cross_entropy`.
    """
    logps = torch.log_softmax(logits.float(), dim=-1)
    keep = labels != ignore_index
    weak = logps.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    own = logps.gather(-1, logits.detach().argmax(-1, keepdim=True)).squeeze(-1)
    per_token = -(1 - coef) * weak - coef * own
    return (per_token * keep).sum() / keep.sum().clamp(min=1)


def aux_coef_at(step: int, max_steps: int, aux_coef: float, ramp_fraction: float) -> float:
    """c at a training step: linear from 0 to `aux_coef` over the first `ramp_fraction * max_steps` steps, then flat."""
    ramp_steps = ramp_fraction * max_steps
    if ramp_steps <= 0:
        return aux_coef
    return aux_coef * min(1.0, step / ramp_steps)
