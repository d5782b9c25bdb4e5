from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def weak_align(
    config: dict,
    weak_base: Input[Model],
    train_prompts: Input[Dataset],
    pairs: Output[Dataset],
    weak_aligned: Output[Model],
    metrics: Output[Metrics],
    model_store: str = "",
):
    """Align the weak base model: on-policy samples scored by the reward backend, best vs worst pairs, DPO.

    Args:
        config: the run's validated configuration (`cong validate`), as a dict.
        pairs: preference pairs (JSONL: id, prompt, chosen, rejected, chosen_reward, rejected_reward).
        weak_aligned: the aligned weak model pi_r (Hugging Face folder).
        metrics: pair counts, reward margin, training loss.
        weak_base: the weak base model pi_w (imported: `models.weak_base`).
        train_prompts: the training prompts (imported: `data.train_prompts`).
        model_store: the KFP workspace or claim holding the run's models (`artifacts.store`); empty: they are artifacts.
    """
    from cong.stages import weak_align
    from cong.stages.step import for_task, record

    given = {"weak_base": weak_base, "train_prompts": train_prompts}
    config, run_id = for_task(config, "weak_align", metrics, **given)

    result = weak_align.step(
        config, pairs=pairs.path, weak_aligned=weak_aligned.path, model_store=model_store, run_id=run_id
    )
    record(result, metrics, inputs=given, pairs=pairs, weak_aligned=weak_aligned)
