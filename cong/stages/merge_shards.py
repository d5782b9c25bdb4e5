"""merge_shards: a sampling stage's dataset from its shards' responses (no GPU), each prompt exactly once, in
prompt order (cong.stages.shards)."""

from __future__ import annotations

from pathlib import Path

from cong.config import config_from_dict
from cong.errors import CongError, stage_step
from cong.inputs.refs import resolve
from cong.stages.shards import FinishedBatches, merge, progress_location
from cong.stages.step import StepResult, sampled_lineage
from cong.vocabulary import SHARDED_STAGES


@stage_step
def step(
    config: dict, stage: str, shards: list[str], shard_inputs: list[dict[str, dict]], responses: str, run_id: str = ""
) -> StepResult:
    """The sampling stage's dataset from its shards' responses (each prompt exactly once, in prompt order).

    Its lineage is the stage's, with the artifacts the shards read (`shard_inputs`, from their metadata) as
    its inputs. The shards' finished batches, kept for a restart, are deleted once the dataset is written.
    """
    cfg = config_from_dict(config)
    if stage not in SHARDED_STAGES:
        raise CongError(f"merge_shards: unknown stage {stage!r}; the sharded stages are {', '.join(SHARDED_STAGES)}.")
    prompts = resolve(cfg.data.train_prompts, cfg)
    metrics = merge(prompts, cfg.data.max_train_prompts, shards, Path(responses), stage)
    if run_id:
        FinishedBatches(progress_location(cfg.storage, run_id, stage)).clear()
    made = sampled_lineage(cfg, stage, metrics["rows"])
    inputs = {name: source for read in shard_inputs for name, source in read.items()}
    if inputs:
        made["inputs"] = inputs
    return {"metrics": metrics, "metadata": {"responses": made}}
