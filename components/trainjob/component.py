from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE

# What the task's settings become (cong.cluster.trainjob): its resources are each training node's, not this pod's, and
# so are its node selector, affinity and tolerations (this pod only waits); the environment (the storage
# Secret and ConfigMap) and volumes (a workspace: ReadWriteMany) serve both.
PASSTHROUGHS = [
    dsl.TaskConfigField.RESOURCES,
    dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.ENV, apply_to_task=True),
    dsl.TaskConfigField.KUBERNETES_NODE_SELECTOR,
    dsl.TaskConfigField.KUBERNETES_AFFINITY,
    dsl.TaskConfigField.KUBERNETES_TOLERATIONS,
    dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.KUBERNETES_VOLUMES, apply_to_task=True),
]


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False, task_config_passthroughs=PASSTHROUGHS)
def sft_trainjob(
    config: dict,
    strong_base: Input[Model],
    data: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    task_config: dsl.TaskConfig,
    method: str = "cong_s",
    image: str = BASE_IMAGE,
    model_store: str = "",
):
    """The sft stage on several nodes: a Kubeflow TrainJob trains, this task waits for it and fetches the model.

    Args:
        config: the run's configuration; `resources.sft.nodes` nodes, each with the task's resources.
        data: (prompt, response) rows to imitate; for strong_ceiling, the train prompts (their reference responses).
        model: the fine-tuned strong model (Hugging Face folder).
        metrics: nodes, processes per node and the TrainJob's duration.
        task_config: the task's resources, environment, scheduling and volumes, forwarded to the TrainJob.
        method: which method this model is (cong_s, weak_sft, icl_refine, wsd_sft or strong_ceiling).
        strong_base: the strong base model (imported: `models.strong_base`).
        image: the training nodes' image.
        model_store: the KFP workspace or claim holding the run's models (`artifacts.store`); empty: they are artifacts.
    """
    from cong.stages import trainjob
    from cong.stages.step import for_task, record

    given = {"strong_base": strong_base}
    config, run_id = for_task(config, "sft", metrics, local_copies=False, **given)

    result = trainjob.step(
        config,
        "sft",
        run_id=run_id,
        image=image,
        task_config=task_config,
        inputs={"data": data.path},
        output=("model", model.path),
        method=method,
        model_store=model_store,
    )
    record(result, metrics, inputs={**given, "data": data}, model=model)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False, task_config_passthroughs=PASSTHROUGHS)
def dpo_trainjob(
    config: dict,
    model: Input[Model],
    pairs: Input[Dataset],
    aligned: Output[Model],
    metrics: Output[Metrics],
    task_config: dsl.TaskConfig,
    image: str = BASE_IMAGE,
    model_store: str = "",
):
    """The dpo stage (ConG) on several nodes: a Kubeflow TrainJob trains, this task waits and fetches the model.

    Args:
        config: the run's configuration; `resources.dpo.nodes` nodes, each with the task's resources.
        model: the policy to start from (ConG-S), also the frozen reference.
        pairs: preference pairs.
        aligned: the aligned strong model (Hugging Face folder).
        metrics: nodes, processes per node and the TrainJob's duration.
        task_config: the task's resources, environment, scheduling and volumes, forwarded to the TrainJob.
        image: the training nodes' image.
        model_store: the KFP workspace or claim holding the run's models (`artifacts.store`); empty: they are artifacts.
    """
    from cong.stages import trainjob
    from cong.stages.step import for_task, record

    config, run_id = for_task(config, "dpo", metrics, local_copies=False)

    result = trainjob.step(
        config,
        "dpo",
        run_id=run_id,
        image=image,
        task_config=task_config,
        inputs={"model": model.path, "pairs": pairs.path},
        output=("aligned", aligned.path),
        model_store=model_store,
    )
    record(result, metrics, inputs={"model": model, "pairs": pairs}, aligned=aligned)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def delete_trainjobs(keys: list, run_id: str = ""):
    """The run's exit handler: delete every TrainJob its training stages may have left, whatever happened.

    Args:
        keys: the (stage, method) pairs that may have run as TrainJobs; each names one job.
        run_id: the KFP run's id, the rest of each job's name (this task is never cached: a per-run value is fine).
    """
    from cong.stages import trainjob

    trainjob.delete_trainjobs(run_id, keys)
