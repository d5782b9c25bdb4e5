"""icl_refine: weak labels refined in context by the strong base model (Somerstep et al., method.md 4.2).

The weak labels are split into consecutive batches of B. In the `refine` variant each prompt is answered
by the strong base model (greedily, as the paper; `decoding` says how) after the other B-1 (question, weak
answer) pairs of its batch (leave-one-out), so the strong model imitates the weak labels' style while its own
knowledge supplies the content. In the `infer_and_respond` variant the strong model first states the batch's
style in one sentence and then answers each question of the batch with that sentence in front of it.

The paper works with base models, so by default (`format: text`) every prompt is plain text (no chat
template), tokenised with the strong model's tokenizer as it tokenises any text. A base model does not stop
after its answer; it goes on with the next `Question:`, so each answer is cut there (see `cut_answer`).
With `format: chat`, for models that only know chats (the testbed's), the in-context pairs become earlier
user/assistant turns of one conversation and the style sentence a system turn (ours; method.md is silent).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cong.config import DecodingSettings, IclRefineSettings, config_from_dict
from cong.data import RESPONSE_FIELDS, read_jsonl, write_responses
from cong.errors import CongError, stage_step
from cong.inputs.refs import resolve
from cong.models import eos_ids, load_plain_tokenizer
from cong.progress import Eta, log
from cong.stages.step import StepResult, lineage

STAGE = "icl_refine"
NEXT_EXAMPLE = "\nQuestion:"
STYLE_INTRO = "Below are questions with answers. All the answers are written in the same style."
STYLE_ASK = "Describe the style of the answers above in one sentence.\nStyle:"


def example(question: str, answer: str) -> str:
    return f"Question: {question}\nAnswer: {answer}"


def query(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def batches(rows: Sequence[dict[str, Any]], batch_size: int) -> list[list[dict[str, Any]]]:
    """Consecutive batches of `batch_size` rows in row order; the last one may be shorter."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [list(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]


def icl_prompts(rows: list[dict[str, Any]], batch_size: int) -> list[str]:
    """One plain-text prompt per row, in row order: the other pairs of its batch, a blank line, its query.

    A row alone in its batch (the last batch, when len(rows) % batch_size == 1) has no context and gets
    the bare query; the stage does not decode it and keeps its weak label instead (see `icl_refine`).
    """
    prompts = []
    for batch in batches(rows, batch_size):
        for i, row in enumerate(batch):
            block = "\n\n".join(example(o["prompt"], o["response"]) for j, o in enumerate(batch) if j != i)
            prompts.append(f"{block}\n\n{query(row['prompt'])}" if block else query(row["prompt"]))
    return prompts


def icl_chats(rows: list[dict[str, Any]], batch_size: int) -> list[list[dict[str, str]]]:
    """`icl_prompts` as conversations: the other pairs of the batch as earlier turns, then the question."""
    chats = []
    for batch in batches(rows, batch_size):
        for i, row in enumerate(batch):
            turns = [
                message
                for j, o in enumerate(batch)
                if j != i
                for message in (
                    {"role": "user", "content": o["prompt"]},
                    {"role": "assistant", "content": o["response"]},
                )
            ]
            chats.append([*turns, {"role": "user", "content": row["prompt"]}])
    return chats


def style_prompt(batch: list[dict[str, Any]]) -> str:
    """Plain-text request for one sentence on the style of the batch's weak answers (infer_and_respond).

    It ends with `Style:` so that a base model's continuation is the sentence itself.
    """
    pairs = "\n\n".join(example(r["prompt"], r["response"]) for r in batch)
    return f"{STYLE_INTRO}\n\n{pairs}\n\n{STYLE_ASK}"


def respond_prompt(style: str, question: str) -> str:
    """The query with the style sentence in front as its instruction; an empty style leaves the bare query."""
    return f"{style}\n\n{query(question)}" if style else query(question)


def cut_answer(text: str) -> str:
    """The generated answer up to where the model starts the next example (`\\nQuestion:`), stripped."""
    return text.split(NEXT_EXAMPLE, 1)[0].strip()


def cut_style(text: str) -> str:
    """The style sentence: the first non-empty line of the continuation (a base model runs on past it)."""
    lines = [line.strip() for line in text.strip().splitlines()]
    return lines[0] if lines else ""


class _Decoder:
    """The strong base model and its tokenizer, answering plain-text prompts by the stage's decoding."""

    def __init__(self, ref: str, decode_batch_size: int, decoding: DecodingSettings):
        from cong.models import load_model

        self.tokenizer = load_plain_tokenizer(ref)
        self.model = load_model(ref)
        self.eos = eos_ids(self.model, self.tokenizer)
        self.decode_batch_size = decode_batch_size
        self.decoding = decoding

    def render(self, chat: list[dict[str, str]]) -> str:
        if self.tokenizer.chat_template is None:
            raise CongError("icl_refine format `chat` needs a strong model with a chat template; use `text`.")
        return self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)

    def __call__(
        self, prompts: list[str], keys: list[str], max_new_tokens: int, what: str, rendered: bool = False
    ) -> list[str]:
        """Answers to plain-text prompts, or to chats already `render`ed (`rendered=True`); prompt i draws from a
        generator seeded by the decoding's seed and `keys[i]` (its row's id), whatever batch it lands in."""
        from cong.decoding.generate import decode
        from cong.decoding.sampler import decode_params, row_seed

        if not prompts:
            return []
        # Plain text keeps the tokenizer's own special tokens (e.g. a BOS): that is how a base model saw text.
        # A rendered chat already holds every special token its template wants.
        ids = [self.tokenizer(p, add_special_tokens=not rendered)["input_ids"] for p in prompts]
        eta = Eta(STAGE, what, len(prompts))
        out = decode(
            self.model,
            ids,
            decode_params(self.decoding, max_new_tokens),
            eos_token_ids=self.eos,
            pad_token_id=self.tokenizer.pad_token_id,
            seeds=[row_seed(self.decoding.seed, key) for key in keys],
            batch_size=self.decode_batch_size,
            on_batch=eta.update,
        )
        return [self.tokenizer.decode(o, skip_special_tokens=True) for o in out]


def icl_refine(
    strong_base: str, weak_labels_path: str, out_path: Path, settings: IclRefineSettings, stage: str = STAGE
) -> dict[str, float]:
    """Refined labels `{"id", "prompt", "response"}` (the original prompt, not the in-context text).

    Two cases keep the weak label so that SFT never trains on an empty target: an empty refinement (the
    model wrote nothing before eos or the next `Question:`), counted as `empty_refinements`; and, in
    the `refine` variant, a row alone in its batch, which has no in-context pairs to refine from, counted as
    `single_rows_kept`. In `infer_and_respond` a single-row batch is refined like any other: one pair is
    enough to state a style.
    """
    rows = read_jsonl(weak_labels_path, RESPONSE_FIELDS)
    groups = batches(rows, settings.batch_size)
    model = _Decoder(strong_base, settings.decode_batch_size, settings.decoding)
    log(stage, f"{len(rows)} weak labels in {len(groups)} batches of up to {settings.batch_size}, {settings.variant}")
    metrics: dict[str, float] = {}
    chat = settings.format == "chat"
    if settings.variant == "refine":
        if chat:
            prompts = [model.render(c) for c in icl_chats(rows, settings.batch_size)]
        else:
            prompts = icl_prompts(rows, settings.batch_size)
        # A single row is alone in its batch only when it is the last one, so its index is len(rows) - 1.
        alone = {len(rows) - 1} if len(groups[-1]) == 1 else set()
        todo = [i for i in range(len(rows)) if i not in alone]
        keys = [rows[i]["id"] for i in todo]
        answers = model([prompts[i] for i in todo], keys, settings.max_new_tokens, "prompts refined", rendered=chat)
        refined = {i: cut_answer(a) for i, a in zip(todo, answers, strict=True)}
        metrics["single_rows_kept"] = float(len(alone))
    else:
        asks = [style_prompt(b) for b in groups]
        if chat:
            asks = [model.render([{"role": "user", "content": a.removesuffix("Style:").strip()}]) for a in asks]
        batch_keys = [f"batch:{b[0]['id']}" for b in groups]
        raw_styles = model(asks, batch_keys, settings.style_max_new_tokens, "batch styles inferred", rendered=chat)
        styles = [cut_style(s) for s in raw_styles]
        if chat:
            respond = [
                model.render(
                    [*([{"role": "system", "content": s}] if s else []), {"role": "user", "content": r["prompt"]}]
                )
                for s, b in zip(styles, groups, strict=True)
                for r in b
            ]
        else:
            respond = [respond_prompt(s, r["prompt"]) for s, b in zip(styles, groups, strict=True) for r in b]
        answers = model(respond, [r["id"] for r in rows], settings.max_new_tokens, "prompts answered", rendered=chat)
        refined = {i: cut_answer(a) for i, a in enumerate(answers)}
        metrics["empty_styles"] = float(sum(not s for s in styles))
        metrics["mean_style_words"] = sum(len(s.split()) for s in styles) / len(styles)
    labels = [refined.get(i) or r["response"] for i, r in enumerate(rows)]
    write_responses(out_path, rows, labels)
    return {
        "rows": float(len(rows)),
        "batches": float(len(groups)),
        "mean_refined_words": sum(len(y.split()) for y in labels) / len(labels),
        "changed_share": sum(y != r["response"] for y, r in zip(labels, rows, strict=True)) / len(rows),
        "empty_refinements": float(sum(not y for y in refined.values())),
        **metrics,
    }


@stage_step
def step(config: dict, data: str, responses: str) -> StepResult:
    cfg = config_from_dict(config)
    s = cfg.stages.icl_refine
    metrics = icl_refine(resolve(cfg.models.strong_base, cfg), data, Path(responses), s)
    return {
        "metrics": metrics,
        "metadata": {
            "responses": lineage(cfg, "icl_refine", rows=metrics["rows"], batch_size=s.batch_size, variant=s.variant)
        },
    }
