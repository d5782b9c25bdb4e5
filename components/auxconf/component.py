from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def auxconf(
    config: dict,
    strong_base: Input[Model],
    data: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    model_store: str = "",
):
    """AuxConf baseline: the strong model learns weak labels mixed with its own confident predictions.

    Args:
        config: the run's configuration; `stages.auxconf` holds aux_coef, the ramp and trainer settings.
        data: weak labels (JSONL: id, prompt, response).
        model: the trained strong model (Hugging Face folder).
        metrics: training loss and steps.
        strong_base: the strong base model (imported: `models.strong_base`).
        model_store: the KFP workspace or claim holding the run's models (`artifacts.store`); empty: they are artifacts.
    """
    from cong.stages import auxconf
    from cong.stages.step import for_task, record

    given = {"strong_base": strong_base}
    config, run_id = for_task(config, "auxconf", metrics, **given)

    result = auxconf.step(config, data=data.path, model=model.path, model_store=model_store, run_id=run_id)
    record(result, metrics, inputs={**given, "data": data}, model=model)
