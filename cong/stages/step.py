"""What every stage's step shares: the config from the component's parameter, lineage, training, records.

A component hands its artifact paths to its stage's `step` (cong/stages/<stage>.py), which returns the metrics and
the metadata of each output; `record` then writes them onto the kfp artifacts (duck-typed, so no kfp is needed
here). A stage is found by its name (cong.vocabulary) as the module of that name in this package.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import cong
from cong.config import Config
from cong.errors import CongError
from cong.refs import resolve
from cong.stages.shards import Shard, progress_location, shard_progress
from cong.storage.handoff import follow
from cong.training import distributed
from cong.vocabulary import TRAINING_INPUTS

StepResult = dict[str, Any]


def stage_module(stage: str) -> ModuleType:
    """The module of a stage, cong/stages/<stage>.py."""
    return importlib.import_module(f"{__package__}.{stage}")


def rewards(settings, cfg: Config):
    """`settings` (a RewardChoice) with its reward model's reference resolved (a testbed or gguf: reference, an
    s3:// URI, a path or a hub id)."""
    if settings.reward_model is None:
        return settings
    return settings.model_copy(update={"reward_model": resolve(settings.reward_model, cfg)})


def lineage(cfg: Config, stage: str, **extra: Any) -> dict[str, Any]:
    """What an output records of the step that made it, with the stage's resolved settings (`settings`)."""
    settings = cfg.stage_settings(stage, extra.get("method"))
    return {
        "stage": stage,
        "config": cfg.name,
        "code_version": cong.__version__,
        **{k: v for k, v in extra.items() if v is not None},
        **({"settings": settings} if settings else {}),
    }


def aligned_weak(cfg: Config, weak_aligned: str | None, model_store: str = "") -> str:
    """The aligned weak model: the weak_align output, or the one the config supplies."""
    return follow(weak_aligned, model_store) if weak_aligned else resolve(cfg.models.weak_aligned, cfg)


def sampled_lineage(cfg: Config, stage: str, rows: float, **extra: Any) -> dict[str, Any]:
    """The lineage of a sampling stage's responses (a shard's, or the merged dataset's): the fields its module's
    `sampled_fields` names, then whether it decoded greedily and its shard count."""
    s = getattr(cfg.stages, stage)
    fields = stage_module(stage).sampled_fields(cfg)
    if s.sampling.greedy:
        fields["greedy"] = True
    return lineage(cfg, stage, rows=rows, **fields, shards=s.shards, **extra)


def shard_of(cfg: Config, stage: str, shard: int, run_id: str) -> Shard:
    """Shard `shard` of the stage; with a run id its finished batches are kept in the store, for a restart."""
    count = getattr(cfg.stages, stage).shards
    index = int(shard)  # a ParallelFor item is a JSON number: it may come as 1.0
    progress = shard_progress(progress_location(cfg.storage, run_id, stage), index, count) if run_id else None
    return Shard(index, count, progress)


def _check_training_inputs(stage: str, inputs: dict[str, Any]) -> None:
    if stage not in TRAINING_INPUTS:
        raise CongError(f"{stage!r} is not a training stage; use one of {', '.join(TRAINING_INPUTS)}.")
    required, optional = TRAINING_INPUTS[stage]
    missing, unknown = set(required) - set(inputs), set(inputs) - set(required) - set(optional)
    if missing or unknown:
        raise CongError(
            f"{stage} takes the inputs {', '.join(required + optional)} ({', '.join(optional) or 'none'} optional); "
            f"missing: {', '.join(sorted(missing)) or 'none'}, unknown: {', '.join(sorted(unknown)) or 'none'}."
        )


def run_training(
    cfg: Config,
    stage: str,
    inputs: dict[str, str],
    output: Path,
    method: str = "cong_s",
    deepspeed: dict[str, Any] | None = None,
    checkpoints: str | None = None,
) -> dict[str, float]:
    """Train `stage` (its module's `train`) in this process; with a DeepSpeed config, as one rank of several."""
    _check_training_inputs(stage, inputs)
    refs = {name: resolve(value, cfg) for name, value in inputs.items()}
    return stage_module(stage).train(cfg, refs, Path(output), method, deepspeed, checkpoints)


def train_stage(
    cfg: Config,
    stage: str,
    inputs: dict[str, str],
    output: str | Path,
    method: str = "cong_s",
    checkpoints: str | None = None,
) -> dict[str, float]:
    """Train `stage` on `inputs` into the model folder `output`, in this process or, when the stage has several
    GPUs, in as many processes under DeepSpeed (cong.training.distributed).

    `checkpoints`: an s3:// folder that keeps the checkpoints for a retried pod (cong.training.checkpoints).
    """
    _check_training_inputs(stage, inputs)
    return distributed.train(
        cfg,
        stage,
        inputs,
        output,
        method,
        checkpoints,
        in_process=lambda: run_training(cfg, stage, inputs, Path(output), method, checkpoints=checkpoints),
    )


def record(
    result: StepResult, metrics: Any, run_id: str = "", inputs: dict[str, Any] | None = None, **artifacts: Any
) -> None:
    """Write a step's metrics onto an Output[Metrics] and its metadata onto the named output artifacts.

    Each output also records the run's id, the URIs of the input artifacts it was made from (what
    `cong lineage` follows) and, for a single-file output such as a dataset, its sha256.
    """
    from cong.storage.folders import sha256_file

    for key, value in result["metrics"].items():
        metrics.log_metric(key, float(value))
    sources = {name: artifact.uri for name, artifact in (inputs or {}).items() if artifact is not None}
    for name, artifact in artifacts.items():
        artifact.metadata.update(result["metadata"].get(name, {}))
        if run_id:
            artifact.metadata["run_id"] = run_id
        if sources:
            artifact.metadata["inputs"] = sources
        if Path(artifact.path).is_file():
            artifact.metadata["sha256"] = sha256_file(Path(artifact.path))
