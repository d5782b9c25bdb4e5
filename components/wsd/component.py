from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def wsd(
    config: dict,
    split: str,
    responses: Output[Dataset],
    metrics: Output[Metrics],
    weak_aligned: Input[Model] = None,
    run_id: str = "",
    model_store: str = "",
):
    """Weak-to-Strong Decoding: the aligned weak model drafts, the strong base model takes over when confident.

    Args:
        config: the run's configuration; `stages.wsd` holds the window, threshold and token budgets.
        split: `eval` for the method's row in the comparison, `train` for the wsd_sft targets.
        responses: one WSD response per prompt (JSONL: id, prompt, response).
        metrics: draft lengths, how often the strong model took over, timing.
        weak_aligned: the aligned weak model (the drafter); when absent, `models.weak_aligned` is used.
        run_id: the KFP run's id, recorded on every output for lineage (the pipeline passes it).
        model_store: the KFP workspace or claim holding the run's models (`artifacts.store`); empty: they are artifacts.
    """
    from cong.stages import wsd
    from cong.stages.step import record

    aligned = weak_aligned.path if weak_aligned is not None else None
    result = wsd.step(config, weak_aligned=aligned, split=split, responses=responses.path, model_store=model_store)
    record(result, metrics, run_id=run_id, inputs={"weak_aligned": weak_aligned}, responses=responses)
