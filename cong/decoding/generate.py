"""Batched generation with KV caches: plain sampling from one model, or contrastive decoding of two (or of one
shared-weight model standing for both, cong.decoding.shared_lora).

Prompts are token ids (the caller renders and tokenizes). Within a call prompts are sorted by length and
decoded in left-padded batches with explicit position ids; after the prefill each step feeds only the newest
token to each model, whose KV cache writes it into room reserved ahead (cong.decoding.kv_cache). Rows that have
finished leave the batch (and the caches) every CHECK_EVERY steps. Every prompt draws its uniforms for sampling
up front from its own generator, so its sample does not depend on which batch or batch position it lands in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from cong.decoding.contrastive import CdParams
from cong.decoding.kv_cache import ReservedCache

# Positions a batch's KV caches reserve ahead: the whole response when it is shorter, else they grow by as many
# (one copy per growth) while rows that finish early leave the batch.
KV_RESERVE = 256


@dataclass(frozen=True)
class DecodeParams:
    """Sampling settings; `greedy` takes the argmax and ignores temperature and top_p."""

    max_new_tokens: int = 2048
    temperature: float = 0.8
    top_p: float = 0.95
    repetition_penalty: float = 1.0
    greedy: bool = False

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (use greedy=True for argmax), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")


def apply_repetition_penalty(scores: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Where `seen` (token already in prompt+response): negative scores times `penalty`, positive divided.

    -inf stays -inf (times a positive penalty).
    """
    if penalty == 1.0:
        return scores
    penalized = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where(seen, penalized, scores)


# On a CPU, sorting a 32 x 600 batch of probabilities took 1 ms, a third of a decoding step of the testbed's
# models, and `topk` of this many 0.2 ms; CD's head (V_head) and peaked distributions rarely reach past it.
CPU_NUCLEUS_CANDIDATES = 64


def top_p_probs(scores: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Sampling probabilities after temperature and nucleus filtering (the top token always survives).

    The nucleus is the smallest set of most probable tokens whose total probability reaches `top_p`; the
    kept probabilities are not renormalised (the inverse-CDF pick does not need it). On a CPU the most probable
    CPU_NUCLEUS_CANDIDATES tokens are ranked first, and the whole vocabulary only when some row's nucleus may
    reach past them (a GPU sorts at once: the check would be a host round trip per step).
    """
    probs = torch.softmax(scores / temperature, dim=-1)
    ranked, order = _ranked(probs, CPU_NUCLEUS_CANDIDATES if probs.device.type == "cpu" else probs.shape[-1])
    # A token is outside when the tokens ranked above it already reach top_p.
    outside = ranked.cumsum(dim=-1) - ranked >= top_p
    if ranked.shape[-1] < probs.shape[-1] and not outside[:, -1].all():
        ranked, order = _ranked(probs, probs.shape[-1])
        outside = ranked.cumsum(dim=-1) - ranked >= top_p
    return torch.zeros_like(probs).scatter(-1, order, ranked.masked_fill(outside, 0.0))


def _ranked(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` largest probabilities of each row, in descending order, and their token ids."""
    if k >= probs.shape[-1]:
        return probs.sort(dim=-1, descending=True)
    return probs.topk(k, dim=-1)


def draws(seeds: list[int], steps: int, device: torch.device) -> torch.Tensor:
    """Each row's uniform draws in (0, 1] for `steps` steps, from a generator seeded by the row's seed alone, so
    that a row samples the same tokens whichever batch, shard or place in a batch it has."""
    rows = [torch.rand(steps, generator=torch.Generator(device=device).manual_seed(s), device=device) for s in seeds]
    return 1.0 - torch.stack(rows)


def _pick(scores: torch.Tensor, params: DecodeParams, uniforms: torch.Tensor | None) -> torch.Tensor:
    """Next token per row: argmax, or a draw from the row's nucleus by inverse CDF with its uniform in (0, 1].

    One vectorised search for the whole batch (a multinomial call per row, each with its own generator, cost up
    to a third of a decoding step). With u > 0, the first token whose cumulative probability reaches u * total
    has a probability above 0.
    """
    if params.greedy:
        return scores.argmax(dim=-1)
    cdf = top_p_probs(scores, params.temperature, params.top_p).cumsum(dim=-1)
    return (cdf < uniforms[:, None] * cdf[:, -1:]).sum(dim=-1)


def _forward(model, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache):
    """Last-position logits (float32, on `ids`' device) and the updated KV cache."""
    dev = model.device
    out = model(
        input_ids=ids.to(dev),
        attention_mask=mask.to(dev),
        position_ids=positions.to(dev),
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,  # the prefill would otherwise materialise batch x prompt x vocab logits
    )
    return out.logits[:, -1, :].float().to(ids.device), out.past_key_values


def left_pad(prompts: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[i, width - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


class _Models:
    """One decoding step's forward passes: the expert alone, the expert and the amateur, or one shared-weight
    model (cong.decoding.shared_lora) over a doubled batch, expert rows first. Keeps the KV caches."""

    def __init__(self, expert, amateur, shared: bool, reserve: int):
        self.expert, self.amateur, self.shared = expert, amateur, shared
        self.caches = [ReservedCache(m.config, reserve) if m is not None else None for m in (expert, amateur)]

    def __call__(self, ids, mask, positions) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.rows = ids.shape[0]
        if self.shared:
            twice = (torch.cat([t, t]) for t in (ids, mask, positions))  # 5x cheaper than repeat here
            both, self.caches[0] = _forward(self.expert, *twice, self.caches[0])
            return both.chunk(2)
        expert_logits, self.caches[0] = _forward(self.expert, ids, mask, positions, self.caches[0])
        if self.amateur is None:
            return expert_logits, None
        amateur_logits, self.caches[1] = _forward(self.amateur, ids, mask, positions, self.caches[1])
        return expert_logits, amateur_logits

    def keep(self, rows: torch.Tensor) -> None:
        """Drop every batch row but `rows` from the caches."""
        if self.shared:
            rows = torch.cat([rows, rows + self.rows])
        for cache in self.caches:
            if cache is not None:
                cache.batch_select_indices(rows)


# Steps between looks at which rows have finished. A look is a host round trip that stalls a GPU's queue of
# kernels; between looks, finished rows decode on (their tokens are discarded) until the next look drops them.
CHECK_EVERY = 8


@torch.inference_mode()
def _decode_batch(
    models: _Models,
    prompts: list[list[int]],
    params: DecodeParams,
    eos: torch.Tensor,
    pad: int,
    uniforms: torch.Tensor | None,
    cd: CdParams | None,
) -> list[list[int]]:
    """One left-padded batch: prefill, then one token per live row per step until every row has emitted eos."""
    ids, mask = left_pad(prompts, pad, eos.device)
    positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
    expert_logits, amateur_logits = models(ids, mask, positions)
    # Summing the mask (not writing True) so that left padding never marks the pad id as seen.
    seen = torch.zeros_like(expert_logits).scatter_add_(1, ids, mask.float()) > 0
    out = torch.full((len(prompts), params.max_new_tokens), pad, dtype=torch.long, device=ids.device)
    rows = torch.arange(len(prompts), device=ids.device)  # the prompt each live row decodes
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=ids.device)
    for step in range(params.max_new_tokens):
        if amateur_logits is None:
            scores = torch.log_softmax(expert_logits, dim=-1)
        else:
            scores = cd.scores(expert_logits, amateur_logits)
        scores = apply_repetition_penalty(scores, seen, params.repetition_penalty)
        token = _pick(scores, params, None if uniforms is None else uniforms[:, step]).masked_fill(finished, pad)
        out[rows, step] = token
        finished |= torch.isin(token, eos)
        if step + 1 == params.max_new_tokens:
            break
        if step % CHECK_EVERY == CHECK_EVERY - 1 and finished.any():
            if finished.all():
                break
            live = (~finished).nonzero().squeeze(1)
            rows, token, mask, positions, seen = (t[live] for t in (rows, token, mask, positions, seen))
            uniforms = None if uniforms is None else uniforms[live]
            finished = finished[live]
            models.keep(live)
        seen.scatter_(1, token[:, None], True)
        # Finished rows not yet dropped feed pad with mask 1: it only touches their own (discarded) cache rows.
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions = positions[:, -1:] + 1
        expert_logits, amateur_logits = models(token[:, None], mask, positions)

    stops = set(eos.tolist())
    responses = []
    for row in out.tolist():
        end = next((j for j, t in enumerate(row) if t in stops), len(row))
        responses.append(row[:end])
    return responses


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices of the prompts, ordered by length (ties keep input order) and cut into batches of `batch_size`.

    Left padding changes the floats of a row's logits (by about 1e-6 on CPU): a prompt gives bitwise the same
    output only inside the same batch. Sharded sampling (cong.stages.shards) hands out these batches whole, so every
    prompt is decoded in the batch it would have had in one unsplit call.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def decode(
    expert,
    prompts: list[list[int]],
    params: DecodeParams,
    *,
    eos_token_ids: list[int],
    pad_token_id: int,
    seeds: list[int] | None = None,
    amateur=None,
    shared: bool = False,
    cd: CdParams | None = None,
    batch_size: int = 32,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[list[int]]:
    """Generated ids for each prompt, in input order, without the prompt and without the eos token.

    With `amateur=None` this decodes from `expert` alone (scores = its log-probabilities); otherwise it
    decodes contrastively with `cd`'s scores (expert = pi_r, amateur = pi_ref; they must share a vocabulary).
    `shared=True` decodes contrastively from one shared-weight model (`cong.decoding.shared_lora`) as `expert`.
    `seeds[i]` (default i) seeds prompt i's draws. `on_batch(done, total)` is called after each batch.
    """
    seeds = list(range(len(prompts))) if seeds is None else list(seeds)
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if not eos_token_ids:
        raise ValueError("eos_token_ids is empty")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if shared and amateur is not None:
        raise ValueError("a shared-weight model is both expert and amateur: pass no amateur")
    if (amateur is not None or shared) != (cd is not None):
        raise ValueError("contrastive decoding (an amateur, or a shared-weight model) needs CdParams, and only it")
    if params.max_new_tokens == 0:
        return [[] for _ in prompts]
    device = expert.device
    eos = torch.tensor(eos_token_ids, dtype=torch.long, device=device)
    batches = length_batches([len(p) for p in prompts], batch_size)
    results: list[list[int]] = [[] for _ in prompts]
    done = 0
    for batch in batches:
        uniforms = None if params.greedy else draws([seeds[i] for i in batch], params.max_new_tokens, device)
        outputs = _decode_batch(
            _Models(expert, amateur, shared, min(params.max_new_tokens, KV_RESERVE)),
            [prompts[i] for i in batch],
            params,
            eos,
            pad_token_id,
            uniforms,
            cd,
        )
        for i, output in zip(batch, outputs, strict=True):
            results[i] = output
        done += len(batch)
        if on_batch is not None:
            on_batch(done, len(prompts))
    return results
