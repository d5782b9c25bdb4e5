from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def strong_sample_shard(
    config: dict,
    shard: int,
    train_prompts: Input[Dataset],
    model: Input[Model],
    responses: Output[Dataset],
    metrics: Output[Metrics],
    model_store: str = "",
):
    """One shard of a strong policy's samples (the ConG-S model's), for its share of the training prompts
    (every `stages.strong_sample.shards`-th length-sorted batch), resumable.

    Args:
        config: the run's configuration; `stages.strong_sample` holds sampling (temperature, top-p, seed) and shards.
        shard: this shard's index, from 0.
        model: the policy to sample from.
        responses: this shard's responses (JSONL: id, prompt, response); `strong_sample` merges the shards.
        metrics: row count, response lengths, batches found done by an earlier try.
        train_prompts: the training prompts (imported: `data.train_prompts`).
        model_store: the KFP workspace or claim holding the run's models (`artifacts.store`); empty: they are artifacts.
    """
    from cong.stages import strong_sample
    from cong.stages.step import for_task, record

    given = {"train_prompts": train_prompts}
    config, run_id = for_task(config, "strong_sample", metrics, **given)

    result = strong_sample.step(
        config, model=model.path, responses=responses.path, shard=shard, run_id=run_id, model_store=model_store
    )
    record(result, metrics, inputs={**given, "model": model}, responses=responses)
