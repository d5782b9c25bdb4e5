from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def fetch(
    config: dict,
    described: Output[Dataset],
    metrics: Output[Metrics],
) -> NamedTuple(
    "Fetched",
    [
        ("weak_base_uri", str),
        ("strong_base_uri", str),
        ("weak_aligned_uri", str),
        ("train_prompts_uri", str),
        ("eval_prompts_uri", str),
    ],
):
    """Copy every input the config names into the run's store, once per content or hub revision, for the importers.

    KFP's importer takes only bucket URIs, and its launcher reads inputs only from the pipeline root's bucket: a hub
    model is copied at the commit its reference stands for now, a hub dataset's prompts likewise, the testbed's models
    and prompts as built, an s3:// input from another bucket as it is (cong.inputs.fetch).

    Args:
        config: the run's configuration; `models` and `data` name the inputs, `storage` the store (unset: the
            pipeline root's).
        described: JSON: per input its reference, the URI its importer registers, the sha256 of its content, the hub
            commit it stood for, and for a model its vocabulary size.
        metrics: how many inputs the run imports.
    """
    from collections import namedtuple

    from cong.stages import fetch
    from cong.stages.step import record

    result = fetch.step(config, described.path, described.uri)
    record(result, metrics, described=described)
    return namedtuple("Fetched", list(result["uris"]))(**result["uris"])
