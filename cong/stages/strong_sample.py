"""strong_sample: one sampled response per prompt from a policy model (also weak_sample's weak labels)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cong.config import Config, SamplingSettings, config_from_dict
from cong.data import PROMPT_FIELDS, read_jsonl, write_responses
from cong.decoding.sampler import Sampler
from cong.errors import stage_step
from cong.inputs.refs import resolve
from cong.stages.shards import Shard, response_stats, sample_shard
from cong.stages.step import StepResult, sampled_lineage, shard_of
from cong.storage.handoff import follow

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


def sampled_fields(cfg: Config) -> dict[str, Any]:
    """What the policy samples' lineage records (cong.stages.step.sampled_lineage)."""
    s = cfg.stages.strong_sample
    return {"temperature": s.sampling.temperature, "sample_seed": s.sampling.seed}


@stage_step
def step(
    config: dict, model: str, responses: str, shard: int = 0, run_id: str = "", model_store: str = ""
) -> StepResult:
    """Shard `shard` of the policy's responses (cong.stages.shards); `merge_shards` makes the stage's dataset."""
    cfg = config_from_dict(config)
    part = shard_of(cfg, "strong_sample", shard, run_id)
    metrics = strong_sample(
        follow(model, model_store),
        resolve(cfg.data.train_prompts, cfg),
        Path(responses),
        cfg.stages.strong_sample.sampling,
        cfg.data.max_train_prompts,
        shard=part,
    )
    made = sampled_lineage(cfg, "strong_sample", metrics["rows"], shard=part.index)
    return {"metrics": metrics, "metadata": {"responses": made}}
