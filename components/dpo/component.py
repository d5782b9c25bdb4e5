from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def dpo(
    config: dict,
    model: Input[Model],
    pairs: Input[Dataset],
    aligned: Output[Model],
    metrics: Output[Metrics],
    model_store: str = "",
):
    """Stage II (ConG): DPO of the policy with its frozen initial copy as the reference model.

    Args:
        config: the run's configuration; `stages.dpo.train` holds beta and the trainer settings.
        model: the policy to start from (ConG-S).
        pairs: preference pairs.
        aligned: the aligned strong model (Hugging Face folder).
        metrics: training loss, reward accuracy and steps.
        model_store: the KFP workspace or claim holding the run's models (`artifacts.store`); empty: they are artifacts.
    """
    from cong.stages import dpo
    from cong.stages.step import for_task, record

    config, run_id = for_task(config, "dpo", metrics)

    result = dpo.step(
        config, model=model.path, pairs=pairs.path, aligned=aligned.path, model_store=model_store, run_id=run_id
    )
    record(result, metrics, inputs={"model": model, "pairs": pairs}, aligned=aligned)
