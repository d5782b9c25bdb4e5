"""Batched generation with KV caches: plain sampling from one model, or contrastive decoding of two.

Prompts are token ids (the caller renders and tokenizes). Batches are left-padded with explicit position
ids; each step feeds only the newest token to each model and reuses its cache. Every prompt has its own
random generator, so its sample does not depend on which batch or batch position it lands in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from cong.decoding.contrastive import cd_scores


@dataclass(frozen=True)
class DecodeParams:
    max_new_tokens: int = 2048
    temperature: float = 0.8
    top_p: float = 0.95
    repetition_penalty: float = 1.0
    greedy: bool = False


def apply_repetition_penalty(scores: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """For tokens already in prompt+response (`seen`): negative scores times `penalty`, positive ones divided."""
    if penalty == 1.0:
        return scores
    penalized = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where(seen, penalized, scores)


def top_p_probs(scores: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Sampling probabilities after temperature and nucleus filtering (at least the top token survives)."""
    probs = torch.softmax(scores / temperature, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
    sorted_probs = sorted_probs.masked_fill(outside, 0.0)
    return torch.zeros_like(probs).scatter(-1, order, sorted_probs)


def _pick(scores: torch.Tensor, params: DecodeParams, generators: list[torch.Generator]) -> torch.Tensor:
    if params.greedy:
        return scores.argmax(dim=-1)
    probs = top_p_probs(scores, params.temperature, params.top_p)
    return torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators, strict=True)])


def _forward(model, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache):
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
    return out.logits[:, -1, :].float(), out.past_key_values


@torch.inference_mode()
def _decode_batch(
    expert,
    amateur,
    prompts: list[list[int]],
    params: DecodeParams,
    eos: torch.Tensor,
    pad: int,
    generators: list[torch.Generator],
    alpha: float,
    relative_top: float,
) -> list[list[int]]:
    device = expert.device
    rows, width = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((rows, width), pad, dtype=torch.long, device=device)
    mask = torch.zeros((rows, width), dtype=torch.long, device=device)
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt) :] = torch.tensor(prompt, device=device)
        mask[i, width - len(prompt) :] = 1
    positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)

    # Prefill both models; from here on each step feeds one token per row.
    expert_logits, expert_cache = _forward(expert, ids, mask, positions, None)
    amateur_logits, amateur_cache = _forward(amateur, ids, mask, positions, None) if amateur else (None, None)
    # Counting, not a boolean scatter, so that padding never marks (or unmarks) a token as seen.
    seen = torch.zeros_like(expert_logits).scatter_add_(1, ids, mask.float()) > 0
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    steps = []
    for step in range(params.max_new_tokens):
        if amateur is None:
            scores = torch.log_softmax(expert_logits, dim=-1)
        else:
            scores = cd_scores(expert_logits, amateur_logits, alpha, relative_top)
        scores = apply_repetition_penalty(scores, seen, params.repetition_penalty)
        token = _pick(scores, params, generators).masked_fill(finished, pad)
        steps.append(token)
        finished |= torch.isin(token, eos)
        if finished.all() or step + 1 == params.max_new_tokens:
            break
        seen.scatter_(1, token[:, None], True)
        mask = torch.cat([mask, torch.ones((rows, 1), dtype=mask.dtype, device=device)], dim=1)
        positions = positions[:, -1:] + 1
        expert_logits, expert_cache = _forward(expert, token[:, None], mask, positions, expert_cache)
        if amateur is not None:
            amateur_logits, amateur_cache = _forward(amateur, token[:, None], mask, positions, amateur_cache)

    out, stops = [], set(eos.tolist())
    for row in torch.stack(steps, dim=1).tolist():
        stop = next((j for j, t in enumerate(row) if t in stops), len(row))
        out.append(row[:stop])
    return out


def decode(
    expert,
    prompts: list[list[int]],
    params: DecodeParams,
    *,
    eos_token_ids: list[int],
    pad_token_id: int,
    seeds: list[int] | None = None,
    amateur=None,
    alpha: float = 0.4,
    relative_top: float = 0.1,
    batch_size: int = 32,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[list[int]]:
    """Generated ids for each prompt, in input order, without the prompt and without the eos token.

    With `amateur=None` this samples from `expert`; otherwise it decodes contrastively (expert = pi_r,
    amateur = pi_ref, which must share the expert's vocabulary).
    """
    seeds = list(range(len(prompts))) if seeds is None else seeds
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    if any(not p for p in prompts):
        raise ValueError("every prompt needs at least one token")
    eos = torch.tensor(eos_token_ids, device=expert.device)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        generators = [torch.Generator(device=expert.device).manual_seed(seeds[i]) for i in batch]
        outputs = _decode_batch(
            expert, amateur, [prompts[i] for i in batch], params, eos, pad_token_id, generators, alpha, relative_top
        )
        for i, output in zip(batch, outputs, strict=True):
            results[i] = output
        if on_batch:
            on_batch(start + len(batch), len(prompts))
    return results
