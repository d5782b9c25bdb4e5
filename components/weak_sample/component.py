from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def weak_sample(
    config: dict,
    responses: Output[Dataset],
    metrics: Output[Metrics],
    weak_aligned: Input[Model] = None,
    run_id: str = "",
    model_store: str = "",
):
    """Weak labels: one sample per training prompt from the aligned weak model (or the weak base).

    Args:
        config: the run's configuration; `stages.weak_sample` picks the source model and sampling.
        responses: one weak response per training prompt (JSONL: id, prompt, response).
        metrics: row count and response lengths.
        weak_aligned: the aligned weak model; when absent, `models.weak_aligned` of the config is used.
        run_id: the KFP run's id, recorded on every output for lineage (the pipeline passes it).
        model_store: the KFP workspace or claim holding the run's models (`artifacts.store`); empty: they are artifacts.
    """
    from cong import steps

    aligned = weak_aligned.path if weak_aligned is not None else None
    result = steps.weak_sample(config, weak_aligned=aligned, responses=responses.path, model_store=model_store)
    steps.record(result, metrics, run_id=run_id, inputs={"weak_aligned": weak_aligned}, responses=responses)
