"""trainjob: sft or dpo on several nodes, as a Kubeflow TrainJob (cong.cluster.trainjob_run), and the run's exit handler
that deletes the TrainJobs a run may leave."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cong.config import Config, config_from_dict
from cong.errors import stage_step
from cong.stages.dpo import DPO_REFERENCE
from cong.stages.step import StepResult, lineage
from cong.storage.handoff import follow, hand_over, model_dir


@stage_step
def step(
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
    """sft or dpo on several nodes, as a Kubeflow TrainJob (cong.cluster.trainjob_run); `task_config` is the task's
    dsl.TaskConfig, `output` the name and local folder of the trained model."""
    from cong.cluster.trainjob import TaskSettings, job_name
    from cong.cluster.trainjob_run import run_stage

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
    made = lineage(
        cfg,
        stage,
        trainjob=job_name(run_id, stage, method),
        runtime=cfg.trainjob.runtime,
        nodes=metrics["nodes"],
        **trained_with(cfg, stage, method),
    )
    shown_as = method if stage == "sft" else "cong"
    return {"metrics": metrics, "metadata": {output[0]: made | hand_over(cfg, output[1], target, shown_as, run_id)}}


def trained_with(cfg: Config, stage: str, method: str) -> dict[str, Any]:
    """The training settings a stage's lineage records (as sft and dpo record them when training in the pod)."""
    if stage == "sft":
        s = cfg.training_stages().sft_train(method)
        extra = {"method": method, "base_model": cfg.models.strong_base, "epochs": s.epochs}
    else:
        s = cfg.training_stages().dpo.train
        extra = {"beta": s.beta, "reference": DPO_REFERENCE}
    return {**extra, "learning_rate": s.learning_rate, "seed": s.seed}


def delete_trainjobs(run_id: str, keys: list[list[str]]) -> list[str]:
    """The run's exit handler: delete the TrainJobs its training stages may have left (by name)."""
    from cong.cluster.trainjob_run import delete_jobs

    return delete_jobs(run_id, keys)
