from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def wspo(
    config: dict,
    data: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    weak_aligned: Input[Model] = None,
    run_id: str = "",
    model_store: str = "",
):
    """WSPO baseline: the strong model's log-ratio learns to match the weak pair's, token by token.

    Args:
        config: the run's configuration; `stages.wspo` holds beta and trainer settings.
        data: the weak preference pairs (WSPO trains on their chosen responses) or weak samples.
        model: the trained strong model (Hugging Face folder).
        metrics: training loss and steps.
        weak_aligned: the aligned weak model; when absent, `models.weak_aligned` of the config is used.
        run_id: the KFP run's id, recorded on every output for lineage (the pipeline passes it).
        model_store: the KFP workspace or claim holding the run's models (`artifacts.store`); empty: they are artifacts.
    """
    from cong.stages import wspo
    from cong.stages.step import record

    aligned = weak_aligned.path if weak_aligned is not None else None
    result = wspo.step(
        config, data=data.path, weak_aligned=aligned, model=model.path, model_store=model_store, run_id=run_id
    )
    record(result, metrics, run_id=run_id, inputs={"data": data, "weak_aligned": weak_aligned}, model=model)
