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
):
    """Preference pairs joined on prompt id: chosen from one response set, rejected from the other.

    Args:
        config: the run's configuration.
        chosen: responses to prefer (ConG: the CD responses).
        rejected: responses to disprefer (ConG: the ConG-S samples).
        pairs: JSONL rows id, prompt, chosen, rejected.
        metrics: pair counts and drops.
    """
    from cong.stages import pair
    from cong.stages.step import for_task, record

    config, run_id = for_task(config, "pair", metrics)

    result = pair.step(config, chosen=chosen.path, rejected=rejected.path, pairs=pairs.path)
    record(result, metrics, inputs={"chosen": chosen, "rejected": rejected}, pairs=pairs)
