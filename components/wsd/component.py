from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def wsd(
    config: dict,
    strong_base: Input[Model],
    train_prompts: Input[Dataset],
    eval_prompts: Input[Dataset],
    weak_aligned: Input[Model],
    split: str,
    responses: Output[Dataset],
    metrics: Output[Metrics],
    model_store: str = "",
):
    """Weak-to-Strong Decoding: the aligned weak model drafts, the strong base model takes over when confident.

    Args:
        config: the run's configuration; `stages.wsd` holds the window, threshold and token budgets.
        split: `eval` for the method's row in the comparison, `train` for the wsd_sft targets.
        responses: one WSD response per prompt (JSONL: id, prompt, response).
        metrics: draft lengths, how often the strong model took over, timing.
        weak_aligned: the aligned weak model: weak_align's, or the imported `models.weak_aligned`.
        strong_base: the strong base model (imported: `models.strong_base`).
        train_prompts: the training prompts (imported: `data.train_prompts`).
        eval_prompts: the held-out prompts (imported: `data.eval_prompts`).
        model_store: the KFP workspace or claim holding the run's models (`artifacts.store`); empty: they are artifacts.
    """
    from cong.stages import wsd
    from cong.stages.step import for_task, location, record

    given = {"strong_base": strong_base, "train_prompts": train_prompts, "eval_prompts": eval_prompts}
    config, run_id = for_task(config, "wsd", metrics, **given)

    aligned = location(weak_aligned)
    result = wsd.step(config, weak_aligned=aligned, split=split, responses=responses.path, model_store=model_store)
    record(result, metrics, inputs={**given, "weak_aligned": weak_aligned}, responses=responses)
