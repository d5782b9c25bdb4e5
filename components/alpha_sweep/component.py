from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def alpha_sweep(
    config: dict,
    weak_base: Input[Model],
    eval_prompts: Input[Dataset],
    weak_aligned: Input[Model],
    points: Output[Artifact],
    metrics: Output[Metrics],
    model_store: str = "",
):
    """The alpha ablation: CD at each alpha on a fixed subset of eval prompts, scored two ways.

    Args:
        config: the run's configuration; `stages.alpha_sweep` holds the alphas and the subset size.
        points: JSON with one point per alpha (explicit and implicit reward, lengths).
        metrics: `alpha_<a>.reward_mean` and `alpha_<a>.implicit_reward`.
        weak_aligned: the aligned weak model: weak_align's, or the imported `models.weak_aligned`.
        weak_base: the weak base model pi_w (imported: `models.weak_base`).
        eval_prompts: the held-out prompts (imported: `data.eval_prompts`).
        model_store: the KFP workspace or claim holding the run's models (`artifacts.store`); empty: they are artifacts.
    """
    from cong.stages import alpha_sweep
    from cong.stages.step import for_task, location, record

    given = {"weak_base": weak_base, "eval_prompts": eval_prompts}
    config, run_id = for_task(config, "alpha_sweep", metrics, **given)

    aligned = location(weak_aligned)
    result = alpha_sweep.step(config, weak_aligned=aligned, points=points.path, model_store=model_store)
    record(result, metrics, inputs={**given, "weak_aligned": weak_aligned}, points=points)
