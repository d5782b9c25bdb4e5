"""wsd: Weak-to-Strong Decoding (method.md 4.1), alignment of the strong base model at decoding time.

The aligned weak model drafts the start of each answer with its own chat template; the strong model,
teacher-forced over the draft, takes over from the first point where it is confident in the draft (see
`cong.decoding.wsd`). Nothing is trained here.

The stage has two roles: on the train prompts its responses are the SFT targets of the wsd_sft method, decoded
as `stages.wsd.decoding` says (greedy, as the paper); on the eval prompts they are a method row, decoded as
every row of the table is (`stages.evaluate.sampling`, and greedily), each decoding into its own field.

The strong model's prompt is its tokenizer's chat template when it has one; a base model without one gets
the plain template of method.md, and its continuation is cut at the first turn marker, since a base model
runs on into the next `[User]` turn instead of stopping.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cong.config import DecodingSettings, WsdSettings
from cong.data import PROMPT_FIELDS, read_jsonl, write_jsonl
from cong.decoding.wsd import weak_to_strong
from cong.progress import Eta, log

STAGE = "wsd"
PLAIN_TEMPLATE = "\n\n[User]\n{query}\n\n[Assistant]\n"
PLAIN_STOP_MARKERS = ("[User]", "[System]", "[Assistant]")
# A decoding and the whole response's budget (kept draft + continuation), by the output field it writes.
Decodings = dict[str, tuple[DecodingSettings, int]]


def label_decodings(settings: WsdSettings) -> Decodings:
    """How the stage writes wsd_sft's training labels: `settings.decoding`, `settings.max_total_tokens`."""
    return {"response": (settings.decoding, settings.max_total_tokens)}


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
    from cong.models import decode_params, load_model, load_tokenizer, prompt_ids, row_seed

    tokenizer = load_tokenizer(weak_aligned)
    model = load_model(weak_aligned)
    ids = prompt_ids(tokenizer, [r["prompt"] for r in rows])
    drafts = {}
    for field, (decoding, budget) in decodings.items():
        out = decode(
            model,
            ids,
            decode_params(decoding, min(settings.draft_max_new_tokens, budget)),
            eos_token_ids=[tokenizer.eos_token_id],  # as the pipeline samples every chat model (cong.models.Sampler)
            pad_token_id=tokenizer.pad_token_id,
            seeds=[row_seed(decoding.seed, r["id"]) for r in rows],
            batch_size=settings.batch_size,
            on_batch=Eta(stage, f"drafts written ({field})", len(rows)).update,
        )
        drafts[field] = [tokenizer.decode(o, skip_special_tokens=True).strip() for o in out]
    return drafts


def wsd(
    weak_aligned: str,
    strong_base: str,
    prompts_path: str,
    out_path: Path,
    settings: WsdSettings,
    decodings: Decodings | None = None,
    max_prompts: int | None = None,
    stage: str = STAGE,
) -> dict[str, float]:
    """WSD responses `{"id", "prompt", <field>...}`, one row per prompt with a field per decoding (default: the
    training labels' `response`), and metrics on the cuts (prefixed by the field for fields other than
    `response`)."""
    from cong.models import decode_params, eos_ids, load_model, load_plain_tokenizer, row_seed

    decodings = decodings or label_decodings(settings)
    rows = read_jsonl(prompts_path, PROMPT_FIELDS, max_prompts)
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
    write_jsonl(out_path, out)
    metrics["decode_seconds"] = draft_seconds + sum(v for k, v in metrics.items() if k.endswith("strong_seconds"))
    return metrics


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
