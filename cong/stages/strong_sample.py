"""strong_sample: one sampled response per prompt from a policy model (also weak_sample's weak labels)."""

from __future__ import annotations

from pathlib import Path

from cong.config import SamplingSettings
from cong.data import PROMPT_FIELDS, read_jsonl, write_responses
from cong.decoding.sampler import Sampler
from cong.stages.shards import Shard, response_stats, sample_shard

STAGE = "strong_sample"


def strong_sample(
    model_ref: str,
    prompts_path: str,
    out_path: Path,
    sampling: SamplingSettings,
    max_prompts: int | None = None,
    stage: str = STAGE,
    shard: Shard = Shard(),
) -> dict[str, float]:
    """Only `shard`'s share of the prompts (all of them by default), see cong.stages.shards."""
    rows = read_jsonl(prompts_path, PROMPT_FIELDS, max_prompts)
    out = sample_shard(Sampler(model_ref), rows, sampling, stage, shard)
    write_responses(out_path, out.rows, out.responses)
    return {**response_stats(out.responses), "resumed_batches": float(out.resumed_batches)}
