"""What each pipeline component calls: config dict + artifact paths in, metrics + lineage metadata out.

Components stay a few lines: they hand their artifact paths to one function here, then `record` writes the
returned metrics and metadata onto their kfp artifacts (duck-typed, so this module needs no kfp).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import cong
from cong.config import Config, config_from_dict
from cong.errors import CongError, stage_step
from cong.evaluation import gates
from cong.refs import resolve
from cong.stages.shards import Shard, progress_location, shard_progress
from cong.storage.handoff import follow, hand_over, model_dir
from cong.training.checkpoints import checkpoint_uri
from cong.training.distributed import train

StepResult = dict[str, Any]
# What dpo's lineage says its reference model is: trl's frozen copy of the policy it starts from (the input `model`).
DPO_REFERENCE = "input model, frozen"


def _rewards(settings, cfg: Config):
    """`settings` (a RewardChoice) with its reward model's reference resolved (a testbed or gguf: reference, an
    s3:// URI, a path or a hub id)."""
    if settings.reward_model is None:
        return settings
    return settings.model_copy(update={"reward_model": resolve(settings.reward_model, cfg)})


def _lineage(cfg: Config, stage: str, **extra: Any) -> dict[str, Any]:
    """What an output records of the step that made it, with the stage's resolved settings (`settings`)."""
    settings = cfg.stage_settings(stage, extra.get("method"))
    return {
        "stage": stage,
        "config": cfg.name,
        "code_version": cong.__version__,
        **{k: v for k, v in extra.items() if v is not None},
        **({"settings": settings} if settings else {}),
    }


def _aligned(cfg: Config, weak_aligned: str | None, model_store: str = "") -> str:
    """The aligned weak model: the weak_align output, or the one the config supplies."""
    return follow(weak_aligned, model_store) if weak_aligned else resolve(cfg.models.weak_aligned, cfg)


@stage_step
def plan(config: dict) -> dict[str, Any]:
    """The prerequisites step: check the run's inputs and its object store (cong.stages.validate), then say which
    branches of the DAG run. Models kept in the store are checked by the stages that load them, not downloaded here."""
    from cong.stages.plan import method_plan
    from cong.stages.shards import shard_items
    from cong.stages.validate import check_run
    from cong.storage.s3 import S3Settings

    cfg = config_from_dict(config)
    stored = [r for r in (cfg.models.weak_base, cfg.models.strong_base, cfg.models.weak_aligned) if r]
    in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ
    check_run(cfg, S3Settings.from_env(), models=not any(r.startswith("s3://") for r in stored), cluster=in_cluster)
    return {**method_plan(cfg), **shard_items(cfg)}


@stage_step
def weak_align(config: dict, pairs: str, weak_aligned: str, model_store: str = "", run_id: str = "") -> StepResult:
    from cong.stages.weak_align import sample_pairs, weak_pair_gates, with_train_metrics

    cfg = config_from_dict(config)
    s = _rewards(cfg.stages.weak_align, cfg)
    target = model_dir(weak_aligned, model_store)
    metrics = sample_pairs(
        resolve(cfg.models.weak_base, cfg),
        resolve(cfg.data.train_prompts, cfg),
        Path(pairs),
        s,
        cfg.data.max_train_prompts,
    )
    checkpoints = checkpoint_uri(cfg.storage, run_id, "weak_align")
    metrics = with_train_metrics(metrics, train(cfg, "weak_align", {"pairs": pairs}, target, checkpoints=checkpoints))
    pair_gates = weak_pair_gates(
        resolve(cfg.models.weak_base, cfg),
        str(target),
        resolve(cfg.data.train_prompts, cfg),
        s,
        cfg.data.max_train_prompts,
    )
    gates.check(pair_gates, "The weak pair", cfg.allow_failed_gates)
    metrics |= {f"gate_{g['name']}": g["value"] for g in pair_gates}
    source = {"base_model": cfg.models.weak_base, "prompts": cfg.data.train_prompts}
    return {
        "metrics": metrics,
        "metadata": {
            "pairs": _lineage(cfg, "weak_align", rows=metrics["pairs"], sample_seeds=s.sample_seeds, **source),
            "weak_aligned": _lineage(
                cfg,
                "weak_align",
                beta=s.train.beta,
                learning_rate=cfg.trained(s.train).learning_rate,
                seed=s.train.seed,
                gates=pair_gates,
                **source,
            )
            | hand_over(cfg, weak_aligned, target, "weak_aligned", run_id),
        },
    }


def _sampled(cfg: Config, stage: str, rows: float, **extra: Any) -> dict[str, Any]:
    """The lineage of a sampling stage's responses (a shard's, or the merged dataset's)."""
    s = getattr(cfg.stages, stage)
    if stage == "cd_sample":
        fields = {
            "alpha": s.alpha,
            "relative_top": s.relative_top,
            "score_form": s.score_form,
            "weak_base": cfg.models.weak_base,
            "weak_aligned": cfg.models.weak_aligned or "weak_align output",
            "prompts": cfg.data.train_prompts,
        }
    elif stage == "weak_sample":
        fields = {"source": s.source, "sample_seed": s.sampling.seed}
    else:
        fields = {"temperature": s.sampling.temperature, "sample_seed": s.sampling.seed}
    if s.sampling.greedy:
        fields["greedy"] = True
    return _lineage(cfg, stage, rows=rows, **fields, shards=s.shards, **extra)


def _shard(cfg: Config, stage: str, shard: int, run_id: str) -> Shard:
    """Shard `shard` of the stage; with a run id its finished batches are kept in the store, for a restart."""
    count = getattr(cfg.stages, stage).shards
    index = int(shard)  # a ParallelFor item is a JSON number: it may come as 1.0
    progress = shard_progress(progress_location(cfg.storage, run_id, stage), index, count) if run_id else None
    return Shard(index, count, progress)


@stage_step
def cd_sample(
    config: dict, weak_aligned: str | None, responses: str, shard: int = 0, run_id: str = "", model_store: str = ""
) -> StepResult:
    """Shard `shard` of the CD responses (cong.stages.shards); `merge_shards` makes the stage's dataset."""
    from cong.stages.cd_sample import cd_sample as run

    cfg = config_from_dict(config)
    part = _shard(cfg, "cd_sample", shard, run_id)
    metrics = run(
        resolve(cfg.models.weak_base, cfg),
        _aligned(cfg, weak_aligned, model_store),
        resolve(cfg.data.train_prompts, cfg),
        Path(responses),
        cfg.stages.cd_sample,
        cfg.data.max_train_prompts,
        part,
    )
    lineage = _sampled(cfg, "cd_sample", metrics["rows"], shard=part.index)
    return {"metrics": metrics, "metadata": {"responses": lineage}}


@stage_step
def weak_sample(
    config: dict, weak_aligned: str | None, responses: str, shard: int = 0, run_id: str = "", model_store: str = ""
) -> StepResult:
    """Shard `shard` of the weak labels (cong.stages.shards); `merge_shards` makes the stage's dataset."""
    from cong.stages.strong_sample import strong_sample as run

    cfg = config_from_dict(config)
    s = cfg.stages.weak_sample
    source = resolve(cfg.models.weak_base, cfg) if s.source == "weak_base" else _aligned(cfg, weak_aligned, model_store)
    part = _shard(cfg, "weak_sample", shard, run_id)
    metrics = run(
        source,
        resolve(cfg.data.train_prompts, cfg),
        Path(responses),
        s.sampling,
        cfg.data.max_train_prompts,
        "weak_sample",
        part,
    )
    lineage = _sampled(cfg, "weak_sample", metrics["rows"], shard=part.index)
    return {"metrics": metrics, "metadata": {"responses": lineage}}


@stage_step
def sft(
    config: dict, data: str, model: str, method: str = "cong_s", model_store: str = "", run_id: str = ""
) -> StepResult:
    """SFT of the strong base model for one method: ConG-S on CD responses, WeakSFT on weak samples, ..."""
    cfg = config_from_dict(config)
    s = cfg.training_stages().sft_train(method)
    target = model_dir(model, model_store)
    metrics = train(cfg, "sft", {"data": data}, target, method, checkpoint_uri(cfg.storage, run_id, f"sft-{method}"))
    return {
        "metrics": metrics,
        "metadata": {
            "model": _lineage(
                cfg,
                "sft",
                method=method,
                base_model=cfg.models.strong_base,
                learning_rate=s.learning_rate,
                epochs=s.epochs,
                seed=s.seed,
                train_rows=metrics["train_rows"],
            )
            | hand_over(cfg, model, target, method, run_id)
        },
    }


@stage_step
def strong_sample(
    config: dict, model: str, responses: str, shard: int = 0, run_id: str = "", model_store: str = ""
) -> StepResult:
    """Shard `shard` of the policy's responses (cong.stages.shards); `merge_shards` makes the stage's dataset."""
    from cong.stages.strong_sample import strong_sample as run

    cfg = config_from_dict(config)
    part = _shard(cfg, "strong_sample", shard, run_id)
    metrics = run(
        follow(model, model_store),
        resolve(cfg.data.train_prompts, cfg),
        Path(responses),
        cfg.stages.strong_sample.sampling,
        cfg.data.max_train_prompts,
        shard=part,
    )
    lineage = _sampled(cfg, "strong_sample", metrics["rows"], shard=part.index)
    return {"metrics": metrics, "metadata": {"responses": lineage}}


@stage_step
def merge_shards(
    config: dict, stage: str, shards: list[str], shard_inputs: list[dict[str, str]], responses: str, run_id: str = ""
) -> StepResult:
    """The sampling stage's dataset from its shards' responses (each prompt exactly once, in prompt order).

    Its lineage is the stage's, with the artifacts the shards read (`shard_inputs`, from their metadata) as
    its inputs. The shards' finished batches, kept for a restart, are deleted once the dataset is written.
    """
    from cong.stages.shards import SHARDED_STAGES, FinishedBatches, merge

    cfg = config_from_dict(config)
    if stage not in SHARDED_STAGES:
        raise CongError(f"merge_shards: unknown stage {stage!r}; the sharded stages are {', '.join(SHARDED_STAGES)}.")
    prompts = resolve(cfg.data.train_prompts, cfg)
    metrics = merge(prompts, cfg.data.max_train_prompts, shards, Path(responses), stage)
    if run_id:
        FinishedBatches(progress_location(cfg.storage, run_id, stage)).clear()
    lineage = _sampled(cfg, stage, metrics["rows"])
    inputs = {name: uri for read in shard_inputs for name, uri in read.items()}
    if inputs:
        lineage["inputs"] = inputs
    return {"metrics": metrics, "metadata": {"responses": lineage}}


@stage_step
def pair(config: dict, chosen: str, rejected: str, pairs: str) -> StepResult:
    from cong.stages.pair import pair as run

    cfg = config_from_dict(config)
    metrics = run(chosen, rejected, Path(pairs))
    return {"metrics": metrics, "metadata": {"pairs": _lineage(cfg, "pair", rows=metrics["pairs"])}}


@stage_step
def dpo(config: dict, model: str, pairs: str, aligned: str, model_store: str = "", run_id: str = "") -> StepResult:
    cfg = config_from_dict(config)
    s = cfg.training_stages().dpo.train
    target = model_dir(aligned, model_store)
    inputs = {"model": follow(model, model_store), "pairs": pairs}
    metrics = train(cfg, "dpo", inputs, target, checkpoints=checkpoint_uri(cfg.storage, run_id, "dpo"))
    return {
        "metrics": metrics,
        "metadata": {
            "aligned": _lineage(
                cfg,
                "dpo",
                beta=s.beta,
                learning_rate=s.learning_rate,
                reference=DPO_REFERENCE,
                seed=s.seed,
                train_rows=metrics["train_rows"],
            )
            | hand_over(cfg, aligned, target, "cong", run_id)
        },
    }


@stage_step
def auxconf(config: dict, data: str, model: str, model_store: str = "", run_id: str = "") -> StepResult:
    cfg = config_from_dict(config)
    s = cfg.training_stages().auxconf
    target = model_dir(model, model_store)
    metrics = train(cfg, "auxconf", {"data": data}, target, checkpoints=checkpoint_uri(cfg.storage, run_id, "auxconf"))
    return {
        "metrics": metrics,
        "metadata": {
            "model": _lineage(
                cfg,
                "auxconf",
                base_model=cfg.models.strong_base,
                aux_coef=s.aux_coef,
                ramp_fraction=s.ramp_fraction,
                learning_rate=s.train.learning_rate,
                train_rows=metrics["train_rows"],
            )
            | hand_over(cfg, model, target, "auxconf", run_id)
        },
    }


@stage_step
def wspo(
    config: dict, data: str, weak_aligned: str | None, model: str, model_store: str = "", run_id: str = ""
) -> StepResult:
    cfg = config_from_dict(config)
    s = cfg.training_stages().wspo
    target = model_dir(model, model_store)
    inputs = {"data": data, "weak_aligned": _aligned(cfg, weak_aligned, model_store)}
    metrics = train(cfg, "wspo", inputs, target, checkpoints=checkpoint_uri(cfg.storage, run_id, "wspo"))
    return {
        "metrics": metrics,
        "metadata": {
            "model": _lineage(
                cfg,
                "wspo",
                base_model=cfg.models.strong_base,
                weak_base=cfg.models.weak_base,
                beta=s.beta,
                learning_rate=s.train.learning_rate,
                train_rows=metrics["train_rows"],
            )
            | hand_over(cfg, model, target, "wspo", run_id)
        },
    }


@stage_step
def icl_refine(config: dict, data: str, responses: str) -> StepResult:
    from cong.stages.icl_refine import icl_refine as run

    cfg = config_from_dict(config)
    s = cfg.stages.icl_refine
    metrics = run(resolve(cfg.models.strong_base, cfg), data, Path(responses), s)
    return {
        "metrics": metrics,
        "metadata": {
            "responses": _lineage(cfg, "icl_refine", rows=metrics["rows"], batch_size=s.batch_size, variant=s.variant)
        },
    }


@stage_step
def wsd(config: dict, weak_aligned: str | None, split: str, responses: str, model_store: str = "") -> StepResult:
    """WSD responses on the eval prompts (a method row) or the train prompts (targets for wsd_sft)."""
    from cong.stages.wsd import wsd as run

    cfg = config_from_dict(config)
    s = cfg.stages.wsd
    prompts, limit = {
        "train": (cfg.data.train_prompts, cfg.data.max_train_prompts),
        "eval": (cfg.data.eval_prompts, cfg.data.max_eval_prompts),
    }[split]
    strong = resolve(cfg.models.strong_base, cfg)
    # The eval split is a row of the table: decoded as every row is, each decoding into its own field.
    decodings = None
    if split == "eval":
        decodings = {f"{p}response": (d, d.max_new_tokens) for p, d in cfg.stages.evaluate.decodings().items()}
    aligned = _aligned(cfg, weak_aligned, model_store)
    metrics = run(aligned, strong, resolve(prompts, cfg), Path(responses), s, decodings, limit)
    return {
        "metrics": metrics,
        "metadata": {
            "responses": _lineage(
                cfg,
                "wsd",
                rows=metrics["rows"],
                split=split,
                prompts=prompts,
                window=s.window,
                threshold=s.threshold,
                strong_model=cfg.models.strong_base,
            )
        },
    }


@stage_step
def alpha_sweep(config: dict, weak_aligned: str | None, points: str, model_store: str = "") -> StepResult:
    from cong.stages.alpha_sweep import alpha_sweep as run

    cfg = config_from_dict(config)
    s = cfg.stages.alpha_sweep
    metrics = run(
        resolve(cfg.models.weak_base, cfg),
        _aligned(cfg, weak_aligned, model_store),
        resolve(cfg.data.eval_prompts, cfg),
        Path(points),
        cfg.stages.cd_sample,
        s,
        _rewards(cfg.stages.evaluate, cfg),
    )
    return {
        "metrics": metrics,
        "metadata": {"points": _lineage(cfg, "alpha_sweep", alphas=s.alphas, prompts=s.prompts)},
    }


def not_selected(method: str, *paths: str) -> StepResult:
    """Empty placeholders for a branch the run's methods leave out (dsl.OneOf needs an output from Else)."""
    for path in paths:
        Path(path).write_text("")
    return {"metrics": {}, "metadata": {"not_selected": method}}


@stage_step
def evaluate(
    config: dict,
    weak_aligned: str | None,
    models: dict[str, str],
    responses_of: dict[str, str],
    alpha_sweep_points: str | None,
    results: str,
    report: str,
    model_store: str = "",
) -> StepResult:
    """`models` and `responses_of` may hold every method's input; the config's `methods` picks the rows."""
    from cong.stages.evaluate import evaluate as run

    cfg = config_from_dict(config)
    aligned = _aligned(cfg, weak_aligned, model_store)
    candidates = {"base": resolve(cfg.models.strong_base, cfg), "weak_aligned": aligned}
    candidates.update({method: follow(path, model_store) for method, path in models.items()})
    chosen = [m for m in cfg.methods if m in candidates or m in responses_of]
    out = run(
        {m: candidates[m] for m in chosen if m in candidates},
        resolve(cfg.models.weak_base, cfg),
        aligned,
        resolve(cfg.data.eval_prompts, cfg),
        Path(results),
        _rewards(cfg.stages.evaluate, cfg),
        cfg.data.max_eval_prompts,
        responses_of={m: responses_of[m] for m in chosen if m in responses_of},
        alpha_sweep_path=alpha_sweep_points if cfg.stages.alpha_sweep.alphas else None,
        downstream=[(task, resolve(task.data, cfg)) for task in cfg.stages.evaluate.downstream],
        wsd_decoder=(resolve(cfg.models.strong_base, cfg), cfg.stages.wsd),
        run_settings=cfg.training_stages().model_dump(mode="json"),
    )
    shutil.copyfile(Path(results) / "report.html", report)
    metrics = {f"{m}.{k}": v for m, row in out["methods"].items() for k, v in row.items()}
    return {
        "metrics": metrics,
        "metadata": {
            "results": _lineage(cfg, "evaluate", eval_prompts=out["eval_prompts"], methods=list(out["methods"])),
            "report": _lineage(cfg, "evaluate"),
        },
    }


def _trained_with(cfg: Config, stage: str, method: str) -> dict[str, Any]:
    """The training settings a stage's lineage records (as sft and dpo record them when training in the pod)."""
    if stage == "sft":
        s = cfg.training_stages().sft_train(method)
        extra = {"method": method, "base_model": cfg.models.strong_base, "epochs": s.epochs}
    else:
        s = cfg.training_stages().dpo.train
        extra = {"beta": s.beta, "reference": DPO_REFERENCE}
    return {**extra, "learning_rate": s.learning_rate, "seed": s.seed}


@stage_step
def trainjob(
    config: dict,
    stage: str,
    *,
    run_id: str,
    image: str,
    task_config: Any,
    inputs: dict[str, str],
    output: tuple[str, str],
    method: str = "",
    model_store: str = "",
) -> StepResult:
    """sft or dpo on several nodes, as a Kubeflow TrainJob (cong.cluster.trainjob); `task_config` is the task's
    dsl.TaskConfig, `output` the name and local folder of the trained model."""
    from cong.cluster.trainjob import TaskSettings, job_name, run_stage

    cfg = config_from_dict(config)
    target = model_dir(output[1], model_store)
    metrics = run_stage(
        cfg,
        stage,
        run_id=run_id,
        image=image,
        task=TaskSettings.of(task_config),
        inputs={key: Path(follow(path, model_store)) for key, path in inputs.items()},
        output=(output[0], target),
        method=method,
    )
    lineage = _lineage(
        cfg,
        stage,
        trainjob=job_name(run_id, stage, method),
        runtime=cfg.trainjob.runtime,
        nodes=metrics["nodes"],
        **_trained_with(cfg, stage, method),
    )
    shown_as = method if stage == "sft" else "cong"
    return {"metrics": metrics, "metadata": {output[0]: lineage | hand_over(cfg, output[1], target, shown_as, run_id)}}


def delete_trainjobs(run_id: str, keys: list[list[str]]) -> list[str]:
    """The run's exit handler: delete the TrainJobs its training stages may have left (by name)."""
    from cong.cluster.trainjob import delete_jobs

    return delete_jobs(run_id, keys)


@stage_step
def promote(
    config: dict, challenger: str, challenger_uri: str, decision: str, run_id: str = "", model_store: str = ""
) -> StepResult:
    """The champion/challenger gate: the challenger becomes the champion only when it wins often enough."""
    from cong.stages.promote import promote as run

    cfg = config_from_dict(config)
    s = cfg.promotion
    out = run(
        follow(challenger, model_store),
        resolve(cfg.data.eval_prompts, cfg),
        Path(decision),
        s,
        _rewards(cfg.stages.evaluate, cfg),
        cfg.champion_uri(),
        _lineage(cfg, "promote", method=s.method, source=challenger_uri, run_id=run_id or None),
        cfg.data.max_eval_prompts,
    )
    reported = (
        "prompts",
        "win_rate",
        "win_rate_ci95_low",
        "win_rate_ci95_high",
        "challenger_reward_mean",
        "champion_reward_mean",
    )
    return {
        "metrics": {"promoted": float(out["promoted"]), "threshold": s.threshold}
        | {k: out[k] for k in reported if k in out},
        "metadata": {
            "decision": _lineage(
                cfg,
                "promote",
                method=s.method,
                promoted=out["promoted"],
                reason=out["reason"],
                threshold=s.threshold,
                win_rate=out.get("win_rate"),
                champion=out.get("champion_uri"),
                previous_champion=(out.get("champion") or {}).get("digest"),
                published=out.get("published", {}).get("digest"),
            )
        },
    }


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
