from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def promote(
    config: dict,
    eval_prompts: Input[Dataset],
    challenger: Input[Model],
    decision: Output[Artifact],
    metrics: Output[Metrics],
    model_store: str = "",
):
    """Champion/challenger gate of scheduled retraining: publish the challenger as the current model only when
    it wins often enough against the current one.

    Both models answer the held-out prompts with the evaluate stage's sampling settings; the challenger is
    published to the champion location when there is no champion yet or its win rate (ties count half)
    reaches `promotion.threshold`; otherwise the champion stays and the decision says why.

    Args:
        config: the run's configuration; `promotion` holds the method, threshold, prompt count and champion
            location, `stages.evaluate` the sampling and reward.
        challenger: this run's model of `promotion.method`.
        decision: JSON: promoted or not and why, win rate and its interval, the champion before and after.
        metrics: promoted (1 or 0), win rate, its interval, both models' mean reward, threshold, prompts.
        eval_prompts: the held-out prompts (imported: `data.eval_prompts`).
        model_store: where the run's models are when they do not travel as artifacts (cong.storage.handoff), else empty.
    """
    from cong.stages import promote
    from cong.stages.step import for_task, record

    given = {"eval_prompts": eval_prompts}
    config, run_id = for_task(config, "promote", metrics, **given)

    result = promote.step(
        config,
        challenger=challenger.path,
        challenger_uri=challenger.uri,
        decision=decision.path,
        run_id=run_id,
        model_store=model_store,
    )
    record(result, metrics, inputs={**given, "challenger": challenger}, decision=decision)
