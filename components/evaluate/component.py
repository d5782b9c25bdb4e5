from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(
    config: dict,
    weak_base: Input[Model],
    strong_base: Input[Model],
    eval_prompts: Input[Dataset],
    weak_aligned: Input[Model],
    strong_ceiling: Input[Model],
    weak_sft: Input[Model],
    auxconf: Input[Model],
    wspo: Input[Model],
    icl_refine: Input[Model],
    wsd_sft: Input[Model],
    cong_s: Input[Model],
    cong: Input[Model],
    wsd: Input[Dataset],
    alpha_sweep: Input[Artifact],
    results: Output[Dataset],
    report: Output[HTML],
    metrics: Output[Metrics],
    model_store: str = "",
):
    """Score every selected method on the held-out prompts; one row per method.

    Inputs of methods the run leaves out are `not_selected` placeholders; the config's `methods` picks
    the rows, so they are never read.

    Args:
        config: the run's configuration; `methods` picks the rows, `stages.evaluate` the sampling and reward.
        strong_ceiling: the strong base fine-tuned on the train prompts' reference responses (the gap's top).
        weak_sft: the WeakSFT model.
        auxconf: the AuxConf model.
        wspo: the WSPO model.
        icl_refine: the model fine-tuned on ICL-refined labels.
        wsd_sft: the model fine-tuned on WSD responses.
        cong_s: the ConG-S model.
        cong: the ConG model.
        wsd: WSD responses on the eval prompts (a decode-time method: no model).
        alpha_sweep: the alpha sweep's points (shown in the report when the sweep ran).
        results: the whole table: a folder with results.json, responses.jsonl and report.html.
        report: the comparison table and plots as HTML (shown inline in the Kubeflow UI).
        metrics: per method, its reward and win rate over the base with their 95% intervals
            (`<method>.reward_mean`, `<method>.win_rate_vs_base_ci95_low`, ...), compared across runs in the UI.
        weak_aligned: the aligned weak model: weak_align's, or the imported `models.weak_aligned`.
        weak_base: the weak base model pi_w (imported: `models.weak_base`).
        strong_base: the strong base model (imported: `models.strong_base`).
        eval_prompts: the held-out prompts (imported: `data.eval_prompts`).
        model_store: the KFP workspace or claim holding the run's models (`artifacts.store`); empty: they are artifacts.
    """
    from cong.stages import evaluate
    from cong.stages.step import for_task, location, record

    given = {"weak_base": weak_base, "strong_base": strong_base, "eval_prompts": eval_prompts}
    config, run_id = for_task(config, "evaluate", metrics, **given)

    models = {"weak_sft": weak_sft, "auxconf": auxconf, "wspo": wspo, "icl_refine": icl_refine}
    models.update({"wsd_sft": wsd_sft, "cong_s": cong_s, "cong": cong, "strong_ceiling": strong_ceiling})
    result = evaluate.step(
        config,
        weak_aligned=location(weak_aligned),
        models={name: artifact.path for name, artifact in models.items()},
        responses_of={"wsd": wsd.path},
        alpha_sweep_points=alpha_sweep.path,
        results=results.path,
        report=report.path,
        model_store=model_store,
    )
    inputs = {**models, "wsd": wsd, "alpha_sweep": alpha_sweep, "weak_aligned": weak_aligned, **given}
    record(result, metrics, inputs=inputs, results=results, report=report)
