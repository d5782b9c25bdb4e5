"""Contrastive decoding the way the paper's released code does it, kept as the yardstick of the fast engine.

`reference_decode`: one prompt at a time, both models with their KV caches, one token per step with a host
round trip (`.item()`) per token. `naive_decode`: Hugging Face `generate` of the expert with a logits
processor that re-runs the amateur over the whole prefix at every step (what a quick port does). Both make
the same choices as `cong.decoding.generate.decode` (same scores, penalty and pick), so under greedy decoding
their tokens must equal the engine's.
"""

from __future__ import annotations

import torch

from cong.decoding.contrastive import CdParams
from cong.decoding.generate import DecodeParams, _pick, apply_repetition_penalty, draws


@torch.inference_mode()
def reference_decode(
    expert,
    amateur,
    prompt: list[int],
    params: DecodeParams,
    eos_token_ids: list[int],
    seed: int,
    cd: CdParams,
) -> list[int]:
    """The generated ids of one prompt, without the prompt and the eos token."""
    device = expert.device
    uniforms = None if params.greedy else draws([seed], params.max_new_tokens, device)
    ids = torch.tensor([prompt], device=device)
    expert_out = expert(input_ids=ids, use_cache=True)
    amateur_out = amateur(input_ids=ids, use_cache=True)
    seen = torch.zeros(1, expert_out.logits.shape[-1], dtype=torch.bool, device=device)
    seen[0, prompt] = True
    out: list[int] = []
    for step in range(params.max_new_tokens):
        scores = cd.scores(expert_out.logits[:, -1].float(), amateur_out.logits[:, -1].float())
        scores = apply_repetition_penalty(scores, seen, params.repetition_penalty)
        token = _pick(scores, params, None if uniforms is None else uniforms[:, step])
        if token.item() in eos_token_ids:
            break
        out.append(token.item())
        seen[0, token] = True
        step = token[:, None]
        expert_out = expert(input_ids=step, past_key_values=expert_out.past_key_values, use_cache=True)
        amateur_out = amateur(input_ids=step, past_key_values=amateur_out.past_key_values, use_cache=True)
    return out


@torch.inference_mode()
def naive_decode(
    expert,
    amateur,
    prompt: list[int],
    max_new_tokens: int,
    pad_token_id: int,
    cd: CdParams,
) -> list[int]:
    """Greedy CD of one prompt through `expert.generate`; exactly `max_new_tokens` tokens (eos suppressed)."""
    from transformers import LogitsProcessor, LogitsProcessorList

    class AmateurOverThePrefix(LogitsProcessor):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            amateur_logits = amateur(input_ids=input_ids).logits[:, -1].float()
            return cd.scores(scores.float(), amateur_logits)

    ids = torch.tensor([prompt], device=expert.device)
    out = expert.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens,
        do_sample=False,
        logits_processor=LogitsProcessorList([AmateurOverThePrefix()]),
        pad_token_id=pad_token_id,
    )
    return out[0, len(prompt) :].tolist()
