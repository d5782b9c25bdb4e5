"""strong_sample: one sampled response per prompt from a policy model (also weak_sample's weak labels)."""

from __future__ import annotations

from pathlib import Path

from cong.config import SamplingSettings
from cong.data import PROMPT_FIELDS, read_jsonl, write_responses
from cong.models import Sampler

STAGE = "strong_sample"


def strong_sample(
    model_ref: str,
    prompts_path: str,
    out_path: Path,
    sampling: SamplingSettings,
    max_prompts: int | None = None,
    stage: str = STAGE,
) -> dict[str, float]:
    rows = read_jsonl(prompts_path, PROMPT_FIELDS, max_prompts)
    responses = Sampler(model_ref)(rows, sampling, stage)
    write_responses(out_path, rows, responses)
    return {"rows": float(len(rows)), "mean_response_words": sum(len(y.split()) for y in responses) / len(responses)}
