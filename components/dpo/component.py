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
    run_id: str = "",
    model_store: str = "",
):
    """Stage II (ConG): DPO of the policy with its frozen initial copy as the reference model.

    Args:
        config: the run's configuration; `stages.dpo.train` holds beta and the trainer settings.
        model: the policy to start from (ConG-S).
        pairs: preference pairs.
        aligned: the aligned strong model (Hugging Face folder).
        metrics: training loss, reward accuracy and steps.
        run_id: the KFP run's id, recorded on every output for lineage (the pipeline passes it).
        model_store: the KFP workspace or claim holding the run's models (`artifacts.store`); empty: they are artifacts.
    """
    from cong.stages import dpo
    from cong.stages.step import imported, record

    config = imported(config, "dpo")

    result = dpo.step(
        config, model=model.path, pairs=pairs.path, aligned=aligned.path, model_store=model_store, run_id=run_id
    )
    record(config, result, metrics, run_id=run_id, inputs={"model": model, "pairs": pairs}, aligned=aligned)
