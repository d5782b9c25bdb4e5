from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(
    config: dict,
    cong_s: Input[Model],
    cong: Input[Model],
    results: Output[Artifact],
    report: Output[HTML],
    metrics: Output[Metrics],
    weak_aligned: Input[Model] = None,
):
    """Score every method's model on the held-out prompts; one row per method.

    Args:
        config: the run's configuration; `methods` picks the rows, `stages.evaluate` the sampling and reward.
        cong_s: the ConG-S model.
        cong: the ConG model.
        results: folder with results.json, responses.jsonl and report.html.
        report: the comparison table and plot as HTML (shown inline in the Kubeflow UI).
        metrics: `<method>.<metric>` scalars, comparable across runs in the UI.
        weak_aligned: the aligned weak model; when absent, `models.weak_aligned` of the config is used.
    """
    from cong import steps

    aligned = weak_aligned.path if weak_aligned is not None else None
    result = steps.evaluate(
        config, weak_aligned=aligned, cong_s=cong_s.path, cong_model=cong.path, results=results.path, report=report.path
    )
    steps.record(result, metrics, results=results, report=report)
