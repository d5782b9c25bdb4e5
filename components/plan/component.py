from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def plan(
    config: dict,
    decided: Output[Artifact],
) -> NamedTuple(
    "Plan",
    [
        ("weak_samples", bool),
        ("weak_sft", bool),
        ("auxconf", bool),
        ("wspo", bool),
        ("icl_refine", bool),
        ("wsd", bool),
        ("wsd_sft", bool),
        ("strong_ceiling", bool),
        ("cong_mode", str),
        ("alpha_sweep", bool),
        ("weak_sample_shards", list),
        ("cd_sample_shards", list),
        ("strong_sample_shards", list),
    ],
):
    """Check that the run's methods fit its models, then switch the DAG's branches on or off.

    Also lists each sampling stage's shard indices, which its dsl.ParallelFor iterates.

    Args:
        config: the run's configuration; `methods` decides the branches and `stages.<stage>.shards` the
            sampling stages' fan-out, so changing them when submitting a compiled pipeline changes what runs.
        decided: all of the above as JSON (its URI tells the task its run and store: cong.storage.runs).
    """
    from collections import namedtuple

    from cong.stages import plan
    from cong.stages.step import record

    result = plan.step(config, decided.path, decided.uri)
    record(result, None, decided=decided)
    return namedtuple("Plan", list(result["switches"]))(**result["switches"])
