from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def alpha_sweep(
    config: dict,
    points: Output[Artifact],
    metrics: Output[Metrics],
    weak_aligned: Input[Model] = None,
    run_id: str = "",
    model_store: str = "",
):
    """The alpha ablation: CD at each alpha on a fixed subset of eval prompts, scored two ways.

    Args:
        config: the run's configuration; `stages.alpha_sweep` holds the alphas and the subset size.
        points: JSON with one point per alpha (explicit and implicit reward, lengths).
        metrics: `alpha_<a>.reward_mean` and `alpha_<a>.implicit_reward`.
        weak_aligned: the aligned weak model; when absent, `models.weak_aligned` of the config is used.
        run_id: the KFP run's id, recorded on every output for lineage (the pipeline passes it).
        model_store: the KFP workspace or claim holding the run's models (`artifacts.store`); empty: they are artifacts.
    """
    from cong.stages import alpha_sweep
    from cong.stages.step import record

    aligned = weak_aligned.path if weak_aligned is not None else None
    result = alpha_sweep.step(config, weak_aligned=aligned, points=points.path, model_store=model_store)
    record(result, metrics, run_id=run_id, inputs={"weak_aligned": weak_aligned}, points=points)
