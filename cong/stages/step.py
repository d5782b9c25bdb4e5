"""What every stage's step shares: the config from the component's parameter, lineage, training, records.

A component hands its artifact paths to its stage's `step` (cong/stages/<stage>.py), which returns the metrics and
the metadata of each output; `record` then writes them onto the kfp artifacts (duck-typed, so no kfp is needed
here). A stage is found by its name (cong.vocabulary) as the module of that name in this package.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import cong
from cong.config import Config, StorageSettings
from cong.errors import CongError
from cong.inputs.refs import NOT_IMPORTED, resolve
from cong.stages.shards import Shard, progress_location, shard_progress
from cong.storage.handoff import POINTER_FILE, follow
from cong.storage.runs import run_of
from cong.training import distributed
from cong.vocabulary import INPUT_FIELDS, PIPELINE_NAME, TRAINING_INPUTS

StepResult = dict[str, Any]


def location(artifact: Any, local_copies: bool = True) -> str:
    """What a task loads for an imported artifact: the launcher's (or the workspace's) copy when there is one here
    and `local_copies`, else its URI in the store (fetched and cached by the stage, cong.inputs.refs)."""
    if local_copies and artifact.path and Path(artifact.path).exists():
        return artifact.path
    return artifact.uri


def for_task(config: dict, stage: str, output: Any, local_copies: bool = True, **artifacts: Any) -> tuple[dict, str]:
    """The config a stage runs with in this task, and the id of the run the task belongs to.

    `output` is one of the task's output artifacts: its URI names the run and the pipeline root
    (cong.storage.runs), so no task takes the run's id as a parameter, which would change its cache key every run. In
    the config, `storage` is located (cong.config.StorageSettings.located: the pipeline root's store unless it names a
    bucket); each input in `artifacts` (name -> kfp artifact) is replaced by what it names, and every other input by
    a marker that `cong.inputs.refs.resolve` refuses, naming the stage.

    `local_copies`: False where the config goes to other pods (a TrainJob's), which cannot read this pod's copies.
    """
    run = run_of(output.uri)
    if run is None:
        raise CongError(
            f"{stage}: its output {output.uri} is not where a pipeline run writes (<pipeline root>/{PIPELINE_NAME}/"
            "<run id>/<task>/...): run the stage as a task of the pipeline."
        )
    storage = StorageSettings.model_validate(config.get("storage", {})).located(run.pipeline_root)
    config = {
        **config,
        "models": dict(config["models"]),
        "data": dict(config["data"]),
        "storage": storage.model_dump(mode="json", exclude_none=True),
    }
    for section, field in INPUT_FIELDS:
        if field in artifacts and artifacts[field] is not None:
            config[section][field] = location(artifacts[field], local_copies)
        elif config[section].get(field) is not None:
            config[section][field] = f"{NOT_IMPORTED}{stage}:{field}"
    return config, run.run_id


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


def aligned_weak(cfg: Config, weak_aligned: str, model_store: str = "") -> str:
    """The aligned weak model a task was given (weak_align's output, or the imported `models.weak_aligned`: a folder,
    a pointer into the run's model store, or a reference), as a folder here."""
    return resolve(follow(weak_aligned, model_store), cfg)


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


def record(result: StepResult, metrics: Any, inputs: dict[str, Any] | None = None, **artifacts: Any) -> None:
    """Write a step's metrics onto an Output[Metrics] (`metrics`, None for a task without one) and its metadata onto the
    named output artifacts.

    Besides what the step says of an output (its lineage: stage, settings, code version, ...), each records the
    id of the run that made it, the URI and digest of every input artifact it was made from (what `cong lineage` and
    the Kubeflow UI follow), and its own digest (`output_digest`); the README's "Artifact metadata" lists the keys.
    A copy of each output's metadata is kept beside it, where the run's lineage task finds it (cong.storage.lineage).
    """
    from cong.storage.lineage import record_output

    if metrics is not None:
        for key, value in result["metrics"].items():
            metrics.log_metric(key, float(value))
    sources = {name: source_of(artifact) for name, artifact in (inputs or {}).items() if artifact is not None}
    for name, artifact in artifacts.items():
        artifact.metadata.update(result["metadata"].get(name, {}))
        if sources:
            # Beside what the step itself names (a merged dataset: what its shards read).
            artifact.metadata["inputs"] = {**artifact.metadata.get("inputs", {}), **sources}
        artifact.metadata["digest"] = output_digest(Path(artifact.path))
        run = run_of(artifact.uri)
        if run is not None:
            artifact.metadata["run_id"] = run.run_id
            record_output(artifact.uri, dict(artifact.metadata))


def source_of(artifact: Any) -> dict[str, str]:
    """An input artifact as an output records it: its URI, its digest and the run that made it, where it has them.
    An imported input names no run, and its digest is its copy's in the store (its importer's metadata is constant:
    pipelines.imports); a placeholder of a method the run leaves out has neither."""
    run = run_of(artifact.uri)
    digest = artifact.metadata.get("digest") or (None if run else _stored_digest(artifact.uri))
    return {
        "uri": artifact.uri,
        **({"digest": digest} if digest else {}),
        **({"run_id": run.run_id} if run else {}),
    }


def _stored_digest(uri: str) -> str | None:
    """`sha256:<hex>` of an input's copy in the store, from its manifest; None for a URI of no store."""
    from cong.inputs.fetch import stored_digest
    from cong.storage.s3 import as_s3

    stored = as_s3(uri)
    return None if stored is None else f"sha256:{stored_digest(stored)}"


def output_digest(path: Path) -> str:
    """`sha256:<hex>` of an output: of a file, its sha256; of a folder, the `listing_digest` of its files, and of a
    pointer into the run's model store (cong.storage.handoff), of the folder it names."""
    from cong.storage.folders import folder_digest, sha256_file

    pointer = path / POINTER_FILE
    if pointer.is_file():
        target = Path(json.loads(pointer.read_text())["location"])
        path = target if target.is_dir() else path
    return f"sha256:{sha256_file(path) if path.is_file() else folder_digest(path)}"
