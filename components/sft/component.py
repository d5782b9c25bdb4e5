from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def sft(
    config: dict,
    strong_base: Input[Model],
    data: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    method: str = "cong_s",
    model_store: str = "",
):
    """Supervised fine-tuning of the strong base model, loss on response tokens only.

    Stage I of ConG (ConG-S, on CD responses), and the SFT step of weak_sft, icl_refine and wsd_sft.

    Args:
        config: the run's configuration; the method's `train` block holds the trainer settings.
        data: (prompt, response) rows to imitate; for strong_ceiling, the train prompts (their reference responses).
        model: the fine-tuned strong model (Hugging Face folder).
        metrics: training loss and steps.
        method: which method this model is (cong_s, weak_sft, icl_refine, wsd_sft or strong_ceiling).
        strong_base: the strong base model (imported: `models.strong_base`).
        model_store: the KFP workspace or claim holding the run's models (`artifacts.store`); empty: they are artifacts.
    """
    from cong.stages import sft
    from cong.stages.step import for_task, location, record

    given = {"strong_base": strong_base}
    config, run_id = for_task(config, "sft", metrics, **given)

    # The strong ceiling's data is an imported artifact: KFP's launcher downloads it to data.path (2.17.0,
    # backend/src/v2/component/launcher_v2.go, downloadArtifacts), kfp.local does not, so read it where it is.
    result = sft.step(
        config, data=location(data), model=model.path, method=method, model_store=model_store, run_id=run_id
    )
    record(result, metrics, inputs={**given, "data": data}, model=model)
