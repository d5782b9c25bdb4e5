"""Weak-to-Strong Decoding (method.md 4.1): the strong model takes over a weak draft where it becomes confident.

Given a prompt and a draft answer written by a small aligned model, the strong model is teacher-forced over
prompt + draft; `p_i` is its probability of draft token i. The switch score `s_i` is the geometric mean of
the last `window` probabilities, and the cut `k` is the first token where `s_i >= threshold` (else the last
draft token). Draft tokens 0..k are kept and the strong model continues from prompt + kept draft (the paper
decodes both draft and continuation greedily; a caller may sample them instead).

Prompt and draft arrive as text: the drafter's vocabulary may differ from the strong model's, so both are
re-tokenised here with the strong tokenizer and every token count is in strong-tokenizer tokens.

`respond` runs the whole method on prompt rows: the aligned weak model's drafts, then the strong model's takeover,
its prompt rendered with its chat template or, for a base model without one, method.md's plain template.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cong.config import DecodingSettings, WsdSettings
from cong.decoding.generate import DecodeParams, decode, left_pad
from cong.errors import CongError
from cong.progress import Eta, log

PLAIN_TEMPLATE = "\n\n[User]\n{query}\n\n[Assistant]\n"
PLAIN_STOP_MARKERS = ("[User]", "[System]", "[Assistant]")
# A decoding and the whole response's budget (kept draft + continuation), by the output field it writes.
Decodings = dict[str, tuple[DecodingSettings, int]]


def window_scores(probs: Sequence[float], window: int) -> list[float]:
    """`s_i`: geometric mean of `probs[i-window+1..i]`, 0 while fewer than `window` tokens are seen.

    The mean is taken over logs so that long windows of small probabilities do not underflow.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    logs = [math.log(p) if p > 0 else -math.inf for p in probs]
    return [0.0 if i + 1 < window else math.exp(sum(logs[i - window + 1 : i + 1]) / window) for i in range(len(logs))]


def switch_point(probs: Sequence[float], window: int, threshold: float) -> int:
    """The cut k: the first i with `s_i >= threshold`, else the last index. Draft tokens 0..k are kept."""
    if not probs:
        raise ValueError("switch_point needs at least one draft token probability")
    scores = window_scores(probs, window)
    return next((i for i, s in enumerate(scores) if s >= threshold), len(scores) - 1)


def split_draft(tokenizer, prompt: str, draft: str, add_special_tokens: bool) -> tuple[list[int], list[int]]:
    """Strong-tokenizer ids of the prompt and of the draft that follows it, tokenised together.

    The draft ids are what the tokenizer makes of prompt + draft after the prompt's own ids; that is only
    well defined when the prompt's ids are a prefix of the whole (method.md asserts it).
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]
    full_ids = tokenizer(prompt + draft, add_special_tokens=add_special_tokens)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise CongError(
            "WSD: the strong tokenizer does not tokenise the prompt alone as a prefix of prompt + draft "
            f"(the draft starting {draft[:40]!r} merges with the end of the prompt {prompt[-40:]!r}), so the "
            "draft tokens are not defined. Use a strong prompt that ends at a token boundary (e.g. a newline)."
        )
    return prompt_ids, full_ids[len(prompt_ids) :]


@torch.inference_mode()
def draft_token_probs(
    model, prompts: list[list[int]], drafts: list[list[int]], *, pad_token_id: int, batch_size: int = 32
) -> list[list[float]]:
    """For each row, the model's probability of each draft token given the prompt and the draft before it.

    One teacher-forced forward per left-padded batch; an empty draft gives an empty list.
    """
    if any(not p for p in prompts):
        raise ValueError("every prompt needs at least one token")
    rows = [p + d for p, d in zip(prompts, drafts, strict=True)]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out: list[list[float]] = [[] for _ in rows]
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        ids, mask = left_pad([rows[i] for i in batch], pad_token_id, model.device)
        # Left padding puts every draft at the end of its row, so the last `keep` positions predict them all
        # and the batch x length x vocab logits of the prompts are never materialised.
        keep = max(len(drafts[i]) for i in batch) + 1
        logits = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(dim=-1) - 1).clamp(min=0),
            logits_to_keep=keep,
        ).logits
        for row, i in enumerate(batch):
            n = len(drafts[i])
            log_probs = logits[row, keep - 1 - n : keep - 1].float().log_softmax(dim=-1)
            targets = torch.tensor(drafts[i], dtype=torch.long, device=log_probs.device)
            out[i] = log_probs.gather(-1, targets[:, None]).squeeze(-1).exp().tolist()
    return out


def cut_at_markers(text: str, markers: Sequence[str]) -> str:
    """`text` up to the first occurrence of any marker (all of it when none occurs)."""
    return text[: min((text.find(m) for m in markers if m in text), default=len(text))]


@dataclass(frozen=True)
class WsdResult:
    """One prompt's outcome; token counts are in strong-tokenizer tokens."""

    draft_tokens: int
    kept_ids: list[int]
    kept_text: str
    response: str


def weak_to_strong(
    model,
    tokenizer,
    prompts: list[str],
    drafts: list[str],
    *,
    window: int,
    threshold: float,
    params: DecodeParams,
    eos_token_ids: list[int],
    add_special_tokens: bool,
    seeds: list[int] | None = None,
    stop_markers: Sequence[str] = (),
    batch_size: int = 32,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[WsdResult]:
    """WSD of rendered strong-model `prompts` given weak `drafts` (text), in input order.

    The continuation is decoded by `params` (greedy as in the paper, or sampled, prompt i drawn from `seeds[i]`),
    whose `max_new_tokens` is the whole response's budget: kept draft + continuation. The response is decoded
    without special tokens, cut at the first of `stop_markers` and stripped. `on_batch` reports the continuation
    batches.
    """
    max_total_tokens = params.max_new_tokens
    if not prompts:
        return []
    pairs = [split_draft(tokenizer, p, d, add_special_tokens) for p, d in zip(prompts, drafts, strict=True)]
    probs = draft_token_probs(
        model,
        [p for p, _ in pairs],
        [d for _, d in pairs],
        pad_token_id=tokenizer.pad_token_id,
        batch_size=batch_size,
    )
    kept = []
    for (_, draft_ids), p in zip(pairs, probs, strict=True):
        cut = switch_point(p, window, threshold) + 1 if p else 0
        # A draft can hold more strong tokens than the whole budget when the vocabularies differ.
        kept.append(draft_ids[: min(cut, max_total_tokens)])
    # One run with the largest budget any row has; each row is then truncated to its own budget, which is exactly
    # what stopping there would have produced (a row's tokens depend on its own history and its own draws only).
    continuations = decode(
        model,
        [p + k for (p, _), k in zip(pairs, kept, strict=True)],
        dataclasses.replace(params, max_new_tokens=max_total_tokens - min(len(k) for k in kept)),
        eos_token_ids=eos_token_ids,
        pad_token_id=tokenizer.pad_token_id,
        seeds=seeds,
        batch_size=batch_size,
        on_batch=on_batch,
    )
    results = []
    for (_, draft_ids), k, c in zip(pairs, kept, continuations, strict=True):
        text = tokenizer.decode(k + c[: max_total_tokens - len(k)], skip_special_tokens=True)
        results.append(
            WsdResult(
                draft_tokens=len(draft_ids),
                kept_ids=k,
                kept_text=tokenizer.decode(k, skip_special_tokens=True),
                response=cut_at_markers(text, stop_markers).strip(),
            )
        )
    return results


def strong_prompts(tokenizer, queries: list[str]) -> tuple[list[str], bool]:
    """The strong model's prompt texts and whether they are plain (not chat-rendered)."""
    if tokenizer.chat_template is None:
        return [PLAIN_TEMPLATE.format(query=q) for q in queries], True
    chats = [[{"role": "user", "content": q}] for q in queries]
    return [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats], False


def weak_drafts(
    weak_aligned: str, rows: list[dict[str, Any]], decodings: Decodings, settings: WsdSettings, stage: str
) -> dict[str, list[str]]:
    """The aligned weak model's drafts under each decoding (at most `draft_max_new_tokens`, nor more than the
    decoding's whole budget), special tokens stripped; the model is freed on return."""
    from cong.decoding.generate import decode
    from cong.decoding.sampler import decode_params, row_seed
    from cong.models import load_model, load_tokenizer, prompt_ids

    tokenizer = load_tokenizer(weak_aligned)
    model = load_model(weak_aligned)
    ids = prompt_ids(tokenizer, [r["prompt"] for r in rows])
    drafts = {}
    for field, (decoding, budget) in decodings.items():
        out = decode(
            model,
            ids,
            decode_params(decoding, min(settings.draft_max_new_tokens, budget)),
            eos_token_ids=[tokenizer.eos_token_id],  # as cong.decoding.sampler.Sampler stops every chat model
            pad_token_id=tokenizer.pad_token_id,
            seeds=[row_seed(decoding.seed, r["id"]) for r in rows],
            batch_size=settings.batch_size,
            on_batch=Eta(stage, f"drafts written ({field})", len(rows)).update,
        )
        drafts[field] = [tokenizer.decode(o, skip_special_tokens=True).strip() for o in out]
    return drafts


def respond(
    weak_aligned: str,
    strong_base: str,
    rows: list[dict[str, Any]],
    settings: WsdSettings,
    decodings: Decodings,
    stage: str,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """WSD responses `{"id", "prompt", <field>...}` to prompt rows, a field per decoding, and metrics on the cuts
    (prefixed by the field for fields other than `response`)."""
    from cong.decoding.sampler import decode_params, row_seed
    from cong.models import eos_ids, load_model, load_plain_tokenizer

    log(stage, f"{len(rows)} prompts: drafting with {weak_aligned}")
    start = time.monotonic()
    drafts = weak_drafts(weak_aligned, rows, decodings, settings, stage)
    draft_seconds = time.monotonic() - start

    tokenizer = load_plain_tokenizer(strong_base)
    model = load_model(strong_base)
    prompts, plain = strong_prompts(tokenizer, [r["prompt"] for r in rows])
    log(stage, f"continuing with {strong_base} ({'plain template' if plain else 'chat template'})")
    out = [{"id": r["id"], "prompt": r["prompt"]} for r in rows]
    metrics: dict[str, float] = {"rows": float(len(rows)), "draft_seconds": draft_seconds}
    for field, (decoding, budget) in decodings.items():
        start = time.monotonic()
        results = weak_to_strong(
            model,
            tokenizer,
            prompts,
            drafts[field],
            window=settings.window,
            threshold=settings.threshold,
            params=decode_params(decoding, budget),
            eos_token_ids=eos_ids(model, tokenizer),
            # Plain text keeps the tokenizer's own special tokens (e.g. a BOS): that is how a base model saw text.
            # A rendered chat already holds every special token its template wants.
            add_special_tokens=plain,
            seeds=[row_seed(decoding.seed, f"{r['id']}/continuation") for r in rows],
            stop_markers=PLAIN_STOP_MARKERS if plain else (),
            batch_size=settings.batch_size,
            on_batch=Eta(stage, f"continuations decoded ({field})", len(rows)).update,
        )
        for row, result in zip(out, results, strict=True):
            row[field] = result.response
        prefix = field.removesuffix("response")
        metrics |= {f"{prefix}{k}": v for k, v in _cut_metrics(results, tokenizer).items()}
        metrics[f"{prefix}strong_seconds"] = time.monotonic() - start
    metrics["decode_seconds"] = draft_seconds + sum(v for k, v in metrics.items() if k.endswith("strong_seconds"))
    return out, metrics


def _cut_metrics(results, tokenizer) -> dict[str, float]:
    drafted = [r for r in results if r.draft_tokens]
    return {
        "empty_drafts": float(len(results) - len(drafted)),
        "mean_draft_tokens": sum(r.draft_tokens for r in results) / len(results),
        "mean_kept_draft_tokens": sum(len(r.kept_ids) for r in results) / len(results),
        # Over rows with a draft: an empty draft has no cut.
        "mean_cut_fraction": sum(len(r.kept_ids) / r.draft_tokens for r in drafted) / len(drafted) if drafted else 0.0,
        "mean_response_tokens": sum(len(tokenizer(r.response, add_special_tokens=False)["input_ids"]) for r in results)
        / len(results),
    }
