"""What each pipeline component calls: config dict + artifact paths in, metrics + lineage metadata out.

Components stay a few lines: they hand their artifact paths to one function here, then `record` writes the
returned metrics and metadata onto their kfp artifacts (duck-typed, so this module needs no kfp).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import cong
from cong.config import Config, TrainSettings, config_from_dict
from cong.errors import CongError
from cong.refs import resolve
from cong.shards import Shard, progress_location, shard_progress

StepResult = dict[str, Any]


def _lineage(cfg: Config, stage: str, **extra: Any) -> dict[str, Any]:
    return {
        "stage": stage,
        "config": cfg.name,
        "code_version": cong.__version__,
        **{k: v for k, v in extra.items() if v is not None},
    }


def _aligned(cfg: Config, weak_aligned: str | None) -> str:
    """The aligned weak model: the weak_align output, or the one the config supplies."""
    return weak_aligned or resolve(cfg.models.weak_aligned, cfg)


def plan(config: dict) -> dict[str, Any]:
    """Check that the methods fit the models, then say which branches of the DAG run."""
    from cong.plan import check_methods, method_plan
    from cong.shards import shard_items

    cfg = config_from_dict(config)
    check_methods(cfg)
    return {**method_plan(cfg), **shard_items(cfg)}


def weak_align(config: dict, pairs: str, weak_aligned: str) -> StepResult:
    from cong.stages.weak_align import weak_align as run

    cfg = config_from_dict(config)
    s = cfg.stages.weak_align
    metrics = run(
        resolve(cfg.models.weak_base, cfg),
        resolve(cfg.data.train_prompts, cfg),
        Path(pairs),
        Path(weak_aligned),
        s,
        cfg.data.max_train_prompts,
    )
    source = {"base_model": cfg.models.weak_base, "prompts": cfg.data.train_prompts}
    return {
        "metrics": metrics,
        "metadata": {
            "pairs": _lineage(cfg, "weak_align", rows=metrics["pairs"], sample_seeds=s.sample_seeds, **source),
            "weak_aligned": _lineage(
                cfg, "weak_align", beta=s.train.beta, learning_rate=s.train.learning_rate, seed=s.train.seed, **source
            ),
        },
    }


def _sampled(cfg: Config, stage: str, rows: float, **extra: Any) -> dict[str, Any]:
    """The lineage of a sampling stage's responses (a shard's, or the merged dataset's)."""
    s = getattr(cfg.stages, stage)
    if stage == "cd_sample":
        fields = {
            "alpha": s.alpha,
            "relative_top": s.relative_top,
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


def cd_sample(config: dict, weak_aligned: str | None, responses: str, shard: int = 0, run_id: str = "") -> StepResult:
    """Shard `shard` of the CD responses (cong.shards); `merge_shards` makes the stage's dataset."""
    from cong.stages.cd_sample import cd_sample as run

    cfg = config_from_dict(config)
    part = _shard(cfg, "cd_sample", shard, run_id)
    metrics = run(
        resolve(cfg.models.weak_base, cfg),
        _aligned(cfg, weak_aligned),
        resolve(cfg.data.train_prompts, cfg),
        Path(responses),
        cfg.stages.cd_sample,
        cfg.data.max_train_prompts,
        part,
    )
    lineage = _sampled(cfg, "cd_sample", metrics["rows"], shard=part.index)
    return {"metrics": metrics, "metadata": {"responses": lineage}}


def weak_sample(config: dict, weak_aligned: str | None, responses: str, shard: int = 0, run_id: str = "") -> StepResult:
    """Shard `shard` of the weak labels (cong.shards); `merge_shards` makes the stage's dataset."""
    from cong.stages.strong_sample import strong_sample as run

    cfg = config_from_dict(config)
    s = cfg.stages.weak_sample
    source = resolve(cfg.models.weak_base, cfg) if s.source == "weak_base" else _aligned(cfg, weak_aligned)
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


def _sft_settings(cfg: Config, method: str) -> TrainSettings:
    stages = cfg.stages
    settings = {
        "cong_s": stages.sft.train,
        "weak_sft": stages.weak_sft.train,
        "icl_refine": stages.icl_refine.train,
        "wsd_sft": stages.wsd.train,
    }
    if method not in settings:
        raise CongError(f"sft: unknown method {method!r}; the SFT stage trains {', '.join(settings)}.")
    return settings[method]


def sft(config: dict, data: str, model: str, method: str = "cong_s") -> StepResult:
    """SFT of the strong base model for one method: ConG-S on CD responses, WeakSFT on weak samples, ..."""
    from cong.stages.sft import sft as run

    cfg = config_from_dict(config)
    s = _sft_settings(cfg, method)
    metrics = run(resolve(cfg.models.strong_base, cfg), data, Path(model), s)
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
        },
    }


def strong_sample(config: dict, model: str, responses: str, shard: int = 0, run_id: str = "") -> StepResult:
    """Shard `shard` of the policy's responses (cong.shards); `merge_shards` makes the stage's dataset."""
    from cong.stages.strong_sample import strong_sample as run

    cfg = config_from_dict(config)
    part = _shard(cfg, "strong_sample", shard, run_id)
    metrics = run(
        model,
        resolve(cfg.data.train_prompts, cfg),
        Path(responses),
        cfg.stages.strong_sample.sampling,
        cfg.data.max_train_prompts,
        shard=part,
    )
    lineage = _sampled(cfg, "strong_sample", metrics["rows"], shard=part.index)
    return {"metrics": metrics, "metadata": {"responses": lineage}}


def merge_shards(
    config: dict, stage: str, shards: list[str], shard_inputs: list[dict[str, str]], responses: str, run_id: str = ""
) -> StepResult:
    """The sampling stage's dataset from its shards' responses (each prompt exactly once, in prompt order).

    Its lineage is the stage's, with the artifacts the shards read (`shard_inputs`, from their metadata) as
    its inputs. The shards' finished batches, kept for a restart, are deleted once the dataset is written.
    """
    from cong.shards import SHARDED_STAGES, FinishedBatches, merge

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


def pair(config: dict, chosen: str, rejected: str, pairs: str) -> StepResult:
    from cong.stages.pair import pair as run

    cfg = config_from_dict(config)
    metrics = run(chosen, rejected, Path(pairs))
    return {"metrics": metrics, "metadata": {"pairs": _lineage(cfg, "pair", rows=metrics["pairs"])}}


def dpo(config: dict, model: str, pairs: str, aligned: str) -> StepResult:
    from cong.stages.dpo import dpo as run

    cfg = config_from_dict(config)
    s = cfg.stages.dpo.train
    metrics = run(model, pairs, Path(aligned), s)
    return {
        "metrics": metrics,
        "metadata": {
            "aligned": _lineage(
                cfg,
                "dpo",
                beta=s.beta,
                learning_rate=s.learning_rate,
                reference="initial policy (frozen)",
                seed=s.seed,
                train_rows=metrics["train_rows"],
            )
        },
    }


def auxconf(config: dict, data: str, model: str) -> StepResult:
    from cong.stages.auxconf import auxconf as run

    cfg = config_from_dict(config)
    s = cfg.stages.auxconf
    metrics = run(resolve(cfg.models.strong_base, cfg), data, Path(model), s)
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
        },
    }


def wspo(config: dict, data: str, weak_aligned: str | None, model: str) -> StepResult:
    from cong.stages.wspo import wspo as run

    cfg = config_from_dict(config)
    s = cfg.stages.wspo
    metrics = run(
        resolve(cfg.models.strong_base, cfg),
        resolve(cfg.models.weak_base, cfg),
        _aligned(cfg, weak_aligned),
        data,
        Path(model),
        s,
    )
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
        },
    }


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


def wsd(config: dict, weak_aligned: str | None, split: str, responses: str) -> StepResult:
    """WSD responses on the eval prompts (a method row) or the train prompts (targets for wsd_sft)."""
    from cong.stages.wsd import wsd as run

    cfg = config_from_dict(config)
    s = cfg.stages.wsd
    prompts, limit = {
        "train": (cfg.data.train_prompts, cfg.data.max_train_prompts),
        "eval": (cfg.data.eval_prompts, cfg.data.max_eval_prompts),
    }[split]
    strong = resolve(cfg.models.strong_base, cfg)
    metrics = run(_aligned(cfg, weak_aligned), strong, resolve(prompts, cfg), Path(responses), s, limit)
    return {
        "metrics": metrics,
        "metadata": {
            "responses": _lineage(
                cfg,
                "wsd",
                rows=metrics["rows"],
                prompts=prompts,
                window=s.window,
                threshold=s.threshold,
                strong_model=cfg.models.strong_base,
            )
        },
    }


def alpha_sweep(config: dict, weak_aligned: str | None, points: str) -> StepResult:
    from cong.stages.alpha_sweep import alpha_sweep as run

    cfg = config_from_dict(config)
    s = cfg.stages.alpha_sweep
    metrics = run(
        resolve(cfg.models.weak_base, cfg),
        _aligned(cfg, weak_aligned),
        resolve(cfg.data.eval_prompts, cfg),
        Path(points),
        cfg.stages.cd_sample,
        s,
        cfg.stages.evaluate.reward_backend,
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


def evaluate(
    config: dict,
    weak_aligned: str | None,
    models: dict[str, str],
    responses_of: dict[str, str],
    alpha_sweep_points: str | None,
    results: str,
    report: str,
) -> StepResult:
    """`models` and `responses_of` may hold every method's input; the config's `methods` picks the rows."""
    from cong.stages.evaluate import evaluate as run

    cfg = config_from_dict(config)
    aligned = _aligned(cfg, weak_aligned)
    candidates = {"base": resolve(cfg.models.strong_base, cfg), "weak_aligned": aligned, **models}
    chosen = [m for m in cfg.methods if m in candidates or m in responses_of]
    out = run(
        {m: candidates[m] for m in chosen if m in candidates},
        resolve(cfg.models.weak_base, cfg),
        aligned,
        resolve(cfg.data.eval_prompts, cfg),
        Path(results),
        cfg.stages.evaluate,
        cfg.data.max_eval_prompts,
        responses_of={m: responses_of[m] for m in chosen if m in responses_of},
        alpha_sweep_path=alpha_sweep_points if cfg.stages.alpha_sweep.alphas else None,
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


def record(
    result: StepResult, metrics: Any, run_id: str = "", inputs: dict[str, Any] | None = None, **artifacts: Any
) -> None:
    """Write a step's metrics onto an Output[Metrics] and its metadata onto the named output artifacts.

    Each output also records the run's id, the URIs of the input artifacts it was made from (what
    `cong lineage` follows) and, for a single-file output such as a dataset, its sha256.
    """
    from cong.storage import sha256_file

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
