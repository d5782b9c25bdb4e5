"""cd_sample: one contrastive-decoding response per prompt from the weak pair (method.md section 1)."""

from __future__ import annotations

from pathlib import Path

from cong.config import CdSampleSettings
from cong.data import PROMPT_FIELDS, read_jsonl, write_responses
from cong.models import Sampler

STAGE = "cd_sample"


def cd_sample(
    weak_base: str,
    weak_aligned: str,
    prompts_path: str,
    out_path: Path,
    settings: CdSampleSettings,
    max_prompts: int | None = None,
) -> dict[str, float]:
    """Expert = the aligned weak model pi_r, amateur = the weak base pi_ref."""
    rows = read_jsonl(prompts_path, PROMPT_FIELDS, max_prompts)
    sampler = Sampler(weak_aligned, amateur_ref=weak_base)
    responses = sampler(rows, settings.sampling, STAGE, alpha=settings.alpha, relative_top=settings.relative_top)
    write_responses(out_path, rows, responses)
    return {
        "rows": float(len(rows)),
        "alpha": settings.alpha,
        "mean_response_words": sum(len(y.split()) for y in responses) / len(responses),
        "empty_responses": float(sum(not y for y in responses)),
    }
