"""wsd: Weak-to-Strong Decoding (method.md 4.1), alignment of the strong base model at decoding time.

The aligned weak model drafts the start of each answer with its own chat template; the strong model,
teacher-forced over the draft, takes over from the first point where it is confident in the draft (see
`cong.decoding.wsd`, which also renders the strong model's prompt). Nothing is trained here.

The stage has two roles: on the train prompts its responses are the SFT targets of the wsd_sft method, decoded
as `stages.wsd.decoding` says (greedy, as the paper); on the eval prompts they are a method row, decoded as
every row of the table is (`stages.evaluate.sampling`, and greedily), each decoding into its own field.

The strong model's prompt is its tokenizer's chat template when it has one; a base model without one gets
the plain template of method.md, and its continuation is cut at the first turn marker, since a base model
runs on into the next `[User]` turn instead of stopping.
"""

from __future__ import annotations

from pathlib import Path

from cong.config import WsdSettings, config_from_dict
from cong.data import PROMPT_FIELDS, read_jsonl, write_jsonl
from cong.decoding.wsd import Decodings, respond
from cong.errors import stage_step
from cong.inputs.refs import resolve
from cong.stages.step import StepResult, aligned_weak, lineage

STAGE = "wsd"


def label_decodings(settings: WsdSettings) -> Decodings:
    """How the stage writes wsd_sft's training labels: `settings.decoding`, `settings.max_total_tokens`."""
    return {"response": (settings.decoding, settings.max_total_tokens)}


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
    decodings = decodings or label_decodings(settings)
    rows = read_jsonl(prompts_path, PROMPT_FIELDS, max_prompts)
    out, metrics = respond(weak_aligned, strong_base, rows, settings, decodings, stage)
    write_jsonl(out_path, out)
    return metrics


@stage_step
def step(config: dict, weak_aligned: str, split: str, responses: str, model_store: str = "") -> StepResult:
    """WSD responses on the eval prompts (a method row) or the train prompts (targets for wsd_sft)."""
    cfg = config_from_dict(config)
    s = cfg.stages.wsd
    prompts, limit = {
        "train": (cfg.data.train_prompts, cfg.data.max_train_prompts),
        "eval": (cfg.data.eval_prompts, cfg.data.max_eval_prompts),
    }[split]
    strong = resolve(cfg.models.strong_base, cfg)
    # The eval split is a row of the table: decoded as every row is, each decoding into its own field.
    decodings = None
    if split == "eval":
        decodings = {f"{p}response": (d, d.max_new_tokens) for p, d in cfg.stages.evaluate.decodings().items()}
    aligned = aligned_weak(cfg, weak_aligned, model_store)
    metrics = wsd(aligned, strong, resolve(prompts, cfg), Path(responses), s, decodings, limit)
    return {
        "metrics": metrics,
        "metadata": {
            "responses": lineage(
                cfg,
                "wsd",
                rows=metrics["rows"],
                split=split,
                prompts=prompts,
                window=s.window,
                threshold=s.threshold,
                strong_model=cfg.models.strong_base,
            )
        },
    }
