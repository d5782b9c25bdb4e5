from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def icl_refine(
    config: dict,
    strong_base: Input[Model],
    data: Input[Dataset],
    responses: Output[Dataset],
    metrics: Output[Metrics],
):
    """ICL refinement: the strong base model rewrites each weak label with its batch's other pairs in context.

    Args:
        config: the run's configuration; `stages.icl_refine` holds B, the variant and decoding lengths.
        data: weak labels (JSONL: id, prompt, response).
        responses: the refined labels (JSONL: id, prompt, response), SFT targets.
        metrics: how many labels changed, lengths.
        strong_base: the strong base model (imported: `models.strong_base`).
    """
    from cong.stages import icl_refine
    from cong.stages.step import for_task, record

    given = {"strong_base": strong_base}
    config, run_id = for_task(config, "icl_refine", metrics, **given)

    result = icl_refine.step(config, data=data.path, responses=responses.path)
    record(result, metrics, inputs={**given, "data": data}, responses=responses)
