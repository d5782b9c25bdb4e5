from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def strong_sample(
    config: dict,
    model: Input[Model],
    responses: Output[Dataset],
    metrics: Output[Metrics],
    run_id: str = "",
    model_store: str = "",
):
    """One sampled response per training prompt from a strong policy (the ConG-S model).

    Args:
        config: the run's configuration; `stages.strong_sample.sampling` holds temperature, top-p and seed.
        model: the policy to sample from.
        responses: JSONL rows id, prompt, response.
        metrics: row count and response lengths.
        run_id: the KFP run's id, recorded on every output for lineage (the pipeline passes it).
        model_store: the KFP workspace or claim holding the run's models (`artifacts.store`); empty: they are artifacts.
    """
    from cong import steps

    result = steps.strong_sample(config, model=model.path, responses=responses.path, model_store=model_store)
    steps.record(result, metrics, run_id=run_id, inputs={"model": model}, responses=responses)
