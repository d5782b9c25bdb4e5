"""plan: which stages a run needs for its methods (the DAG's branch switches), after the preflight checks.

The pipeline's first task computes the plan from the config at run time, so the method set stays a
pipeline parameter: changing `methods` when submitting a compiled pipeline changes which branches run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cong.config import Config, config_from_dict
from cong.errors import stage_step
from cong.stages.step import StepResult, lineage
from cong.vocabulary import TRAINED_BRANCHES, WEAK_LABEL_METHODS


def method_plan(cfg: Config) -> dict[str, Any]:
    """Branch switches: one per trained baseline, `wsd`, `weak_samples`, `alpha_sweep`, and `cong_mode`.

    `cong_mode` is `cong` (CD -> ConG-S -> ConG), `cong_s` (CD -> ConG-S) or `none`: one CD pass and one
    ConG-S model serve both rows. WSPO trains on the weak preference pairs' chosen responses; when the
    run is given an aligned weak model there are no such pairs, and it trains on the weak samples instead.
    """
    chosen = set(cfg.methods)
    supplied = cfg.models.weak_aligned is not None
    plan: dict[str, Any] = {m: m in chosen for m in (*TRAINED_BRANCHES, "wsd")}
    plan["weak_samples"] = bool(chosen & set(WEAK_LABEL_METHODS)) or ("wspo" in chosen and supplied)
    plan["cong_mode"] = "cong" if "cong" in chosen else "cong_s" if "cong_s" in chosen else "none"
    plan["alpha_sweep"] = bool(cfg.stages.alpha_sweep.alphas)
    return plan


@stage_step
def step(config: dict, decided: str, output_uri: str) -> StepResult:
    """The prerequisites step: check the run's inputs and its object store (cong.stages.validate), that the run may
    write its store, then say which branches of the DAG run (`switches`); the same as JSON in the file `decided`, an
    output whose URI (`output_uri`) names the run and its pipeline root (cong.storage.runs). Models kept in the store
    are checked by the stages that load them, not downloaded here."""
    from cong.stages.shards import shard_items
    from cong.stages.validate import check_run
    from cong.storage.runs import run_of
    from cong.storage.s3 import S3Settings

    run = run_of(output_uri)
    cfg = config_from_dict(config)
    cfg = cfg.model_copy(update={"storage": cfg.storage.located(run.pipeline_root if run else None)})
    stored = [r for r in (cfg.models.weak_base, cfg.models.strong_base, cfg.models.weak_aligned) if r]
    in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ
    probe = cfg.storage.uri("runs", run.run_id, ".cong-write-check") if run else None
    models = not any(r.startswith("s3://") for r in stored)
    check_run(cfg, S3Settings.from_env(), models=models, cluster=in_cluster, probe=probe)
    switches = {**method_plan(cfg), **shard_items(cfg)}
    Path(decided).write_text(json.dumps(switches, indent=1, sort_keys=True) + "\n")
    chosen = {"methods": len(cfg.methods), "store": cfg.storage.uri()}
    return {"switches": switches, "metrics": {}, "metadata": {"decided": lineage(cfg, "plan", **chosen)}}
