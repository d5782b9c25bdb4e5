"""What each pipeline component calls: config dict + artifact paths in, metrics + lineage metadata out.

Components stay a few lines: they hand their artifact paths to one function here, then `record` writes the
returned metrics and metadata onto their kfp artifacts (duck-typed, so this module needs no kfp).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import cong
from cong.config import Config, config_from_dict
from cong.refs import resolve

StepResult = dict[str, Any]


def _lineage(cfg: Config, stage: str, **extra: Any) -> dict[str, Any]:
    return {
        "stage": stage,
        "config": cfg.name,
        "code_version": cong.__version__,
        **{k: v for k, v in extra.items() if v is not None},
    }


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


def cd_sample(config: dict, weak_aligned: str | None, responses: str) -> StepResult:
    from cong.stages.cd_sample import cd_sample as run

    cfg = config_from_dict(config)
    s = cfg.stages.cd_sample
    aligned = weak_aligned or resolve(cfg.models.weak_aligned, cfg)
    metrics = run(
        resolve(cfg.models.weak_base, cfg),
        aligned,
        resolve(cfg.data.train_prompts, cfg),
        Path(responses),
        s,
        cfg.data.max_train_prompts,
    )
    return {
        "metrics": metrics,
        "metadata": {
            "responses": _lineage(
                cfg,
                "cd_sample",
                rows=metrics["rows"],
                alpha=s.alpha,
                relative_top=s.relative_top,
                weak_base=cfg.models.weak_base,
                weak_aligned=cfg.models.weak_aligned or "weak_align output",
                prompts=cfg.data.train_prompts,
            )
        },
    }


def sft(config: dict, data: str, model: str) -> StepResult:
    from cong.stages.sft import sft as run

    cfg = config_from_dict(config)
    s = cfg.stages.sft.train
    metrics = run(resolve(cfg.models.strong_base, cfg), data, Path(model), s)
    return {
        "metrics": metrics,
        "metadata": {
            "model": _lineage(
                cfg,
                "sft",
                base_model=cfg.models.strong_base,
                learning_rate=s.learning_rate,
                epochs=s.epochs,
                seed=s.seed,
                train_rows=metrics["train_rows"],
            )
        },
    }


def strong_sample(config: dict, model: str, responses: str) -> StepResult:
    from cong.stages.strong_sample import strong_sample as run

    cfg = config_from_dict(config)
    s = cfg.stages.strong_sample.sampling
    metrics = run(model, resolve(cfg.data.train_prompts, cfg), Path(responses), s, cfg.data.max_train_prompts)
    return {
        "metrics": metrics,
        "metadata": {
            "responses": _lineage(
                cfg, "strong_sample", rows=metrics["rows"], temperature=s.temperature, sample_seed=s.seed
            )
        },
    }


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


def evaluate(
    config: dict, weak_aligned: str | None, cong_s: str, cong_model: str, results: str, report: str
) -> StepResult:
    from cong.stages.evaluate import evaluate as run

    cfg = config_from_dict(config)
    aligned = weak_aligned or resolve(cfg.models.weak_aligned, cfg)
    candidates = {
        "base": resolve(cfg.models.strong_base, cfg),
        "weak_aligned": aligned,
        "cong_s": cong_s,
        "cong": cong_model,
    }
    models = {m: candidates[m] for m in ("base", *cfg.methods) if m in candidates}
    out = run(
        models,
        resolve(cfg.models.weak_base, cfg),
        aligned,
        resolve(cfg.data.eval_prompts, cfg),
        Path(results),
        cfg.stages.evaluate,
        cfg.data.max_eval_prompts,
    )
    shutil.copyfile(Path(results) / "report.html", report)
    metrics = {f"{m}.{k}": v for m, row in out["methods"].items() for k, v in row.items()}
    return {
        "metrics": metrics,
        "metadata": {
            "results": _lineage(cfg, "evaluate", eval_prompts=out["eval_prompts"], methods=list(models)),
            "report": _lineage(cfg, "evaluate"),
        },
    }


def record(result: StepResult, metrics: Any, **artifacts: Any) -> None:
    """Write a step's metrics onto an Output[Metrics] and its metadata onto the named output artifacts."""
    for key, value in result["metrics"].items():
        metrics.log_metric(key, float(value))
    for name, artifact in artifacts.items():
        artifact.metadata.update(result["metadata"].get(name, {}))
