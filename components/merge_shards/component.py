import copy

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output
from kfp.dsl.python_component import PythonComponent

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def merge_shards(
    config: dict,
    train_prompts: Input[Dataset],
    stage: str,
    shards: Input[list[Dataset]],
    responses: Output[Dataset],
    metrics: Output[Metrics],
):
    """A sampling stage's dataset (weak_sample, cd_sample or strong_sample), one response per training prompt:
    its shard tasks' responses merged (no GPU).

    Fails, naming the ids, unless every prompt of the stage's prompt set comes from exactly one shard.

    Args:
        config: the run's configuration; `data.train_prompts` is the prompt set the shards must cover.
        stage: the sampling stage whose shards these are.
        shards: every shard's responses (dsl.Collected over the ParallelFor).
        responses: JSONL rows id, prompt, response, in the prompt file's order.
        metrics: row count, response lengths, shard count.
        train_prompts: the training prompts (imported: `data.train_prompts`).
    """
    from cong.stages import merge_shards
    from cong.stages.step import for_task, record

    given = {"train_prompts": train_prompts}
    config, run_id = for_task(config, "merge_shards", metrics, **given)

    result = merge_shards.step(
        config,
        stage,
        shards=[s.path for s in shards],
        shard_inputs=[dict(s.metadata.get("inputs", {})) for s in shards],
        responses=responses.path,
        run_id=run_id,
    )
    record(result, metrics, inputs=given, responses=responses)


def merge_of(stage: str) -> PythonComponent:
    """merge_shards named after the stage it merges: its tasks keep the names `weak-sample`, `cd-sample` and
    `strong-sample` that runs, lineage and the UI have always shown for a sampling stage's dataset."""
    named = copy.deepcopy(merge_shards)
    named.component_spec.name = named.name = stage.replace("_", "-")
    return named
