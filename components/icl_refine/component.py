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
    run_id: str = "",
):
    """ICL refinement: the strong base model rewrites each weak label with its batch's other pairs in context.

    Args:
        config: the run's configuration; `stages.icl_refine` holds B, the variant and decoding lengths.
        data: weak labels (JSONL: id, prompt, response).
        responses: the refined labels (JSONL: id, prompt, response), SFT targets.
        metrics: how many labels changed, lengths.
        strong_base: the strong base model (imported: `models.strong_base`).
        run_id: the KFP run's id, recorded on every output for lineage (the pipeline passes it).
    """
    from cong.stages import icl_refine
    from cong.stages.step import imported, record

    given = {"strong_base": strong_base}
    config = imported(config, "icl_refine", **given)

    result = icl_refine.step(config, data=data.path, responses=responses.path)
    record(config, result, metrics, run_id=run_id, inputs={**given, "data": data}, responses=responses)
