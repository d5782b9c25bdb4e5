from typing import NamedTuple

from kfp import dsl

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def plan(
    config: dict,
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
        ("cong_mode", str),
        ("alpha_sweep", bool),
    ],
):
    """Check that the run's methods fit its models, then switch the DAG's branches on or off.

    Args:
        config: the run's configuration; `methods` decides the branches, so changing it when submitting
            a compiled pipeline changes what runs.
    """
    from collections import namedtuple

    from cong import steps

    switches = steps.plan(config)
    return namedtuple("Plan", list(switches))(**switches)
