from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def wspo(
    config: dict,
    weak_base: Input[Model],
    strong_base: Input[Model],
    weak_aligned: Input[Model],
    data: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    model_store: str = "",
):
    """WSPO baseline: the strong model's log-ratio learns to match the weak pair's, token by token.

    Args:
        config: the run's configuration; `stages.wspo` holds beta and trainer settings.
        data: the weak preference pairs (WSPO trains on their chosen responses) or weak samples.
        model: the trained strong model (Hugging Face folder).
        metrics: training loss and steps.
        weak_aligned: the aligned weak model: weak_align's, or the imported `models.weak_aligned`.
        weak_base: the weak base model pi_w (imported: `models.weak_base`).
        strong_base: the strong base model (imported: `models.strong_base`).
        model_store: the KFP workspace or claim holding the run's models (`artifacts.store`); empty: they are artifacts.
    """
    from cong.stages import wspo
    from cong.stages.step import for_task, location, record

    given = {"weak_base": weak_base, "strong_base": strong_base}
    config, run_id = for_task(config, "wspo", metrics, **given)

    aligned = location(weak_aligned)
    result = wspo.step(
        config, data=data.path, weak_aligned=aligned, model=model.path, model_store=model_store, run_id=run_id
    )
    record(result, metrics, inputs={**given, "data": data, "weak_aligned": weak_aligned}, model=model)
