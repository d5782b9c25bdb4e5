"""weak_sample: one weak label per train prompt, sampled from the weak base or the aligned weak model
(`stages.weak_sample.source`), for the methods trained on weak labels; sharded like every sampling stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cong.config import Config, config_from_dict
from cong.errors import stage_step
from cong.inputs.refs import resolve
from cong.stages.step import StepResult, aligned_weak, sampled_lineage, shard_of
from cong.stages.strong_sample import strong_sample


def sampled_fields(cfg: Config) -> dict[str, Any]:
    """What the weak labels' lineage records (cong.stages.step.sampled_lineage)."""
    s = cfg.stages.weak_sample
    return {"source": s.source, "sample_seed": s.sampling.seed}


@stage_step
def step(
    config: dict, weak_aligned: str, responses: str, shard: int = 0, run_id: str = "", model_store: str = ""
) -> StepResult:
    """Shard `shard` of the weak labels (cong.stages.shards); `merge_shards` makes the stage's dataset."""
    cfg = config_from_dict(config)
    s = cfg.stages.weak_sample
    source = (
        resolve(cfg.models.weak_base, cfg) if s.source == "weak_base" else aligned_weak(cfg, weak_aligned, model_store)
    )
    part = shard_of(cfg, "weak_sample", shard, run_id)
    metrics = strong_sample(
        source,
        resolve(cfg.data.train_prompts, cfg),
        Path(responses),
        s.sampling,
        cfg.data.max_train_prompts,
        "weak_sample",
        part,
    )
    made = sampled_lineage(cfg, "weak_sample", metrics["rows"], shard=part.index)
    return {"metrics": metrics, "metadata": {"responses": made}}
