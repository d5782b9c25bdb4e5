from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def lineage(
    config: dict,
    results: Input[Dataset],
    described: Input[Dataset],
    lineage: Output[Artifact],
    metrics: Output[Metrics],
):
    """The run's lineage.json: every output of the run with its metadata and the artifacts it was made from, back to
    the imported inputs; published at `<storage>/runs/<run id>/results/`, where `cong lineage RUN_ID` reads it.

    Args:
        config: the run's configuration; `storage` says where the lineage is published.
        results: evaluate's results (the last stage: the lineage is of a finished run).
        described: the run's inputs as the fetch task described them (reference, URI, digest).
        lineage: a folder with lineage.json.
        metrics: how many artifacts and method rows it holds.
    """
    from cong.stages import lineage as stage
    from cong.stages.step import for_task, record

    config, run_id = for_task(config, "lineage", metrics)
    result = stage.step(config, run_id=run_id, results=results.uri, described=described.path, tree=lineage.path)
    record(result, metrics, inputs={"results": results, "described": described}, lineage=lineage)
