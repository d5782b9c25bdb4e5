from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def lineage(
    config: dict,
    results: Input[Dataset],
    weak_base: Input[Model],
    strong_base: Input[Model],
    train_prompts: Input[Dataset],
    eval_prompts: Input[Dataset],
    lineage: Output[Artifact],
    metrics: Output[Metrics],
    weak_aligned: Input[Model] = None,
):
    """The run's lineage.json: every output of the run with its metadata and the artifacts it was made from, back to
    the imported inputs; published at `<storage>/runs/<run id>/results/`, where `cong lineage RUN_ID` reads it.

    Args:
        config: the run's configuration; `storage` says where the run's lineage records are.
        results: evaluate's results (the last stage: the lineage is of a finished run).
        weak_base: the weak base model (imported: `models.weak_base`).
        strong_base: the strong base model (imported: `models.strong_base`).
        train_prompts: the training prompts (imported: `data.train_prompts`).
        eval_prompts: the held-out prompts (imported: `data.eval_prompts`).
        lineage: a folder with lineage.json.
        metrics: how many artifacts and method rows it holds.
        weak_aligned: the supplied aligned weak model (imported: `models.weak_aligned`), when the config gives one.
    """
    from cong.stages import lineage as stage
    from cong.stages.step import for_task, record

    given = {"weak_base": weak_base, "strong_base": strong_base, "train_prompts": train_prompts}
    given.update({"eval_prompts": eval_prompts, "weak_aligned": weak_aligned})
    config, run_id = for_task(config, "lineage", metrics, **given)
    imports = {name: {"uri": a.uri, "metadata": dict(a.metadata)} for name, a in given.items() if a is not None}
    result = stage.step(config, run_id=run_id, results=results.uri, imports=imports, tree=lineage.path)
    record(result, metrics, inputs={**given, "results": results}, lineage=lineage)
