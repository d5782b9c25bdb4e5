"""wsd: Weak-to-Strong Decoding (method.md 4.1), alignment of the strong base model at decoding time.

The aligned weak model drafts the start of each answer greedily with its own chat template; the strong
model, teacher-forced over the draft, takes over greedily from the first point where it is confident in
the draft (see `cong.decoding.wsd`). Nothing is trained here.

The stage has two roles: on the eval prompts its responses are a method row (the WSD baseline), and on
the train prompts they are the SFT targets of the wsd_sft method.

The strong model's prompt is its tokenizer's chat template when it has one; a base model without one gets
the plain template of method.md, and its continuation is cut at the first turn marker, since a base model
runs on into the next `[User]` turn instead of stopping.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cong.config import WsdSettings
from cong.data import PROMPT_FIELDS, read_jsonl, write_responses
from cong.decoding.wsd import weak_to_strong
from cong.progress import Eta, log

STAGE = "wsd"
PLAIN_TEMPLATE = "\n\n[User]\n{query}\n\n[Assistant]\n"
PLAIN_STOP_MARKERS = ("[User]", "[System]", "[Assistant]")


def strong_prompts(tokenizer, queries: list[str]) -> tuple[list[str], bool]:
    """The strong model's prompt texts and whether they are plain (not chat-rendered)."""
    if tokenizer.chat_template is None:
        return [PLAIN_TEMPLATE.format(query=q) for q in queries], True
    chats = [[{"role": "user", "content": q}] for q in queries]
    return [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats], False


def weak_drafts(weak_aligned: str, rows: list[dict[str, Any]], settings: WsdSettings, stage: str) -> list[str]:
    """Greedy answers of the aligned weak model, special tokens stripped; the model is freed on return."""
    from cong.decoding.generate import DecodeParams, decode
    from cong.models import load_model, load_tokenizer, prompt_ids

    tokenizer = load_tokenizer(weak_aligned)
    model = load_model(weak_aligned)
    eta = Eta(stage, "drafts written", len(rows))
    out = decode(
        model,
        prompt_ids(tokenizer, [r["prompt"] for r in rows]),
        DecodeParams(max_new_tokens=settings.draft_max_new_tokens, greedy=True),
        eos_token_ids=[tokenizer.eos_token_id],  # as the pipeline samples every chat model (cong.models.Sampler)
        pad_token_id=tokenizer.pad_token_id,
        seeds=[0] * len(rows),  # greedy: the generators are never drawn from
        batch_size=settings.batch_size,
        on_batch=eta.update,
    )
    return [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in out]


def wsd(
    weak_aligned: str,
    strong_base: str,
    prompts_path: str,
    out_path: Path,
    settings: WsdSettings,
    max_prompts: int | None = None,
    stage: str = STAGE,
) -> dict[str, float]:
    """WSD responses `{"id", "prompt", "response"}`, one per prompt row, and metrics on the cuts."""
    from cong.models import eos_ids, load_model, load_plain_tokenizer

    rows = read_jsonl(prompts_path, PROMPT_FIELDS, max_prompts)
    log(stage, f"{len(rows)} prompts: drafting with {weak_aligned}")
    start = time.monotonic()
    drafts = weak_drafts(weak_aligned, rows, settings, stage)
    draft_seconds = time.monotonic() - start

    tokenizer = load_plain_tokenizer(strong_base)
    model = load_model(strong_base)
    prompts, plain = strong_prompts(tokenizer, [r["prompt"] for r in rows])
    log(stage, f"continuing with {strong_base} ({'plain template' if plain else 'chat template'})")
    start = time.monotonic()
    results = weak_to_strong(
        model,
        tokenizer,
        prompts,
        drafts,
        window=settings.window,
        threshold=settings.threshold,
        max_total_tokens=settings.max_total_tokens,
        eos_token_ids=eos_ids(model, tokenizer),
        # Plain text keeps the tokenizer's own special tokens (e.g. a BOS): that is how a base model saw text.
        # A rendered chat already holds every special token its template wants.
        add_special_tokens=plain,
        stop_markers=PLAIN_STOP_MARKERS if plain else (),
        batch_size=settings.batch_size,
        on_batch=Eta(stage, "continuations decoded", len(rows)).update,
    )
    strong_seconds = time.monotonic() - start

    responses = [r.response for r in results]
    write_responses(out_path, rows, responses)
    drafted = [r for r in results if r.draft_tokens]
    return {
        "rows": float(len(rows)),
        "empty_drafts": float(len(results) - len(drafted)),
        "mean_draft_tokens": sum(r.draft_tokens for r in results) / len(results),
        "mean_kept_draft_tokens": sum(len(r.kept_ids) for r in results) / len(results),
        # Over rows with a draft: an empty draft has no cut.
        "mean_cut_fraction": sum(len(r.kept_ids) / r.draft_tokens for r in drafted) / len(drafted) if drafted else 0.0,
        "mean_response_tokens": sum(len(tokenizer(y, add_special_tokens=False)["input_ids"]) for y in responses)
        / len(responses),
        "draft_seconds": draft_seconds,
        "strong_seconds": strong_seconds,
        "decode_seconds": draft_seconds + strong_seconds,
    }
