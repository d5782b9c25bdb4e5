from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def pair(
    config: dict,
    chosen: Input[Dataset],
    rejected: Input[Dataset],
    pairs: Output[Dataset],
    metrics: Output[Metrics],
    run_id: str = "",
):
    """Preference pairs joined on prompt id: chosen from one response set, rejected from the other.

    Args:
        config: the run's configuration.
        chosen: responses to prefer (ConG: the CD responses).
        rejected: responses to disprefer (ConG: the ConG-S samples).
        pairs: JSONL rows id, prompt, chosen, rejected.
        metrics: pair counts and drops.
        run_id: the KFP run's id, recorded on every output for lineage (the pipeline passes it).
    """
    from cong.stages import pair
    from cong.stages.step import imported, record

    config = imported(config, "pair")

    result = pair.step(config, chosen=chosen.path, rejected=rejected.path, pairs=pairs.path)
    record(config, result, metrics, run_id=run_id, inputs={"chosen": chosen, "rejected": rejected}, pairs=pairs)
