"""cd_sample: one contrastive-decoding response per prompt from the weak pair (method.md section 1)."""

from __future__ import annotations

from pathlib import Path

from cong.config import CdSampleSettings
from cong.data import PROMPT_FIELDS, read_jsonl, write_responses
from cong.decoding.contrastive import CdParams
from cong.decoding.sampler import Sampler
from cong.progress import log
from cong.stages.shards import Shard, response_stats, sample_shard

STAGE = "cd_sample"


def cd_sample(
    weak_base: str,
    weak_aligned: str,
    prompts_path: str,
    out_path: Path,
    settings: CdSampleSettings,
    max_prompts: int | None = None,
    shard: Shard = Shard(),
) -> dict[str, float]:
    """Expert = the aligned weak model pi_r, amateur = the weak base pi_ref; only `shard`'s share of the
    prompts (all of them by default), see cong.stages.shards. When the aligned model keeps its LoRA adapter and
    `settings.shared_weights` is on, one copy of the weak base serves both (cong.decoding.shared_lora)."""
    rows = read_jsonl(prompts_path, PROMPT_FIELDS, max_prompts)
    sampler = Sampler(weak_aligned, amateur_ref=weak_base, shared_weights=settings.shared_weights)
    if sampler.shared:
        log(STAGE, f"shared weights: one copy of {weak_base}, the adapter of {weak_aligned} on the expert's rows")
    cd = CdParams(settings.alpha, settings.relative_top, settings.score_form)
    out = sample_shard(sampler, rows, settings.sampling, STAGE, shard, cd)
    write_responses(out_path, out.rows, out.responses)
    return {
        **response_stats(out.responses),
        "alpha": settings.alpha,
        "resumed_batches": float(out.resumed_batches),
        "shared_weights": float(sampler.shared),
    }
