"""cd_sample: one contrastive-decoding response per prompt from the weak pair (method.md section 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cong.config import CdSampleSettings, Config, config_from_dict
from cong.data import PROMPT_FIELDS, read_jsonl, write_responses
from cong.decoding.contrastive import CdParams
from cong.decoding.sampler import Sampler
from cong.errors import stage_step
from cong.inputs.refs import resolve
from cong.progress import log
from cong.stages.shards import Shard, response_stats, sample_shard
from cong.stages.step import StepResult, aligned_weak, sampled_lineage, shard_of

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
    cd = CdParams.of(settings)
    out = sample_shard(sampler, rows, settings.sampling, STAGE, shard, cd)
    write_responses(out_path, out.rows, out.responses)
    return {
        **response_stats(out.responses),
        "alpha": settings.alpha,
        "resumed_batches": float(out.resumed_batches),
        "shared_weights": float(sampler.shared),
    }


def sampled_fields(cfg: Config) -> dict[str, Any]:
    """What the responses' lineage records of the CD settings (cong.stages.step.sampled_lineage); the weak pair and
    the prompts are the inputs it records."""
    s = cfg.stages.cd_sample
    return {
        "alpha": s.alpha,
        "relative_top": s.relative_top,
        "score_form": s.score_form,
    }


@stage_step
def step(
    config: dict, weak_aligned: str, responses: str, shard: int = 0, run_id: str = "", model_store: str = ""
) -> StepResult:
    """Shard `shard` of the CD responses (cong.stages.shards); `merge_shards` makes the stage's dataset."""
    cfg = config_from_dict(config)
    part = shard_of(cfg, "cd_sample", shard, run_id)
    metrics = cd_sample(
        resolve(cfg.models.weak_base, cfg),
        aligned_weak(cfg, weak_aligned, model_store),
        resolve(cfg.data.train_prompts, cfg),
        Path(responses),
        cfg.stages.cd_sample,
        cfg.data.max_train_prompts,
        part,
    )
    made = sampled_lineage(cfg, "cd_sample", metrics["rows"], shard=part.index)
    return {"metrics": metrics, "metadata": {"responses": made}}
