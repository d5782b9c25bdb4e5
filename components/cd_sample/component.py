from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def cd_sample(
    config: dict,
    shards: Input[list[Dataset]],
    responses: Output[Dataset],
    metrics: Output[Metrics],
    run_id: str = "",
):
    """The cd_sample dataset, one contrastive-decoding response per training prompt:
    the cd_sample_shard tasks' responses merged (no GPU).

    Fails, naming the ids, unless every prompt of the stage's prompt set comes from exactly one shard.

    Args:
        config: the run's configuration; `data.train_prompts` is the prompt set the shards must cover.
        shards: every shard's responses (dsl.Collected over the ParallelFor).
        responses: JSONL rows id, prompt, response, in the prompt file's order.
        metrics: row count, response lengths, shard count.
        run_id: the KFP run's id, recorded for lineage; the shards' finished batches kept for this run are deleted.
    """
    from cong import steps

    result = steps.merge_shards(
        config,
        "cd_sample",
        shards=[s.path for s in shards],
        shard_inputs=[dict(s.metadata.get("inputs", {})) for s in shards],
        responses=responses.path,
        run_id=run_id,
    )
    steps.record(result, metrics, run_id=run_id, responses=responses)
