from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def cd_sample_shard(
    config: dict,
    shard: int,
    weak_base: Input[Model],
    train_prompts: Input[Dataset],
    weak_aligned: Input[Model],
    responses: Output[Dataset],
    metrics: Output[Metrics],
    model_store: str = "",
):
    """One shard of contrastive decoding between the weak model after (expert) and before (amateur)
    alignment, for its share of the training prompts (every `stages.cd_sample.shards`-th length-sorted batch),
    resumable.

    Args:
        config: the run's configuration; `stages.cd_sample` holds alpha, relative_top, sampling and shards.
        shard: this shard's index, from 0.
        responses: this shard's CD responses (JSONL: id, prompt, response); `cd_sample` merges the shards.
        metrics: row count, response lengths, batches found done by an earlier try.
        weak_aligned: the aligned weak model: weak_align's, or the imported `models.weak_aligned`.
        weak_base: the weak base model pi_w (imported: `models.weak_base`).
        train_prompts: the training prompts (imported: `data.train_prompts`).
        model_store: the KFP workspace or claim holding the run's models (`artifacts.store`); empty: they are artifacts.
    """
    from cong.stages import cd_sample
    from cong.stages.step import for_task, location, record

    given = {"weak_base": weak_base, "train_prompts": train_prompts}
    config, run_id = for_task(config, "cd_sample", metrics, **given)

    aligned = location(weak_aligned)
    result = cd_sample.step(
        config, weak_aligned=aligned, responses=responses.path, shard=shard, run_id=run_id, model_store=model_store
    )
    record(result, metrics, inputs={**given, "weak_aligned": weak_aligned}, responses=responses)
