"""Training stages on several nodes (`resources.<stage>.nodes` > 1): their tasks run Kubeflow TrainJobs
(components/trainjob, cong.cluster.trainjob), and the run gets an exit handler that deletes those jobs by name, however
the run ended (a TrainJob outlives the KFP task that created it).

kfp accepts a dsl.ExitHandler only at a pipeline's outermost scope, and the training stages sit inside the
methods' dsl.If branches: so the handler wraps the whole DAG, which becomes a pipeline nested under a root that
holds the handler and the cleanup task. A config without multi-node stages compiles exactly as before.
"""
# No `from __future__ import annotations` here: kfp reads the pipeline signature's annotations as types.

from kfp import dsl

from components.trainjob.component import delete_trainjobs
from cong.cluster.trainjob_run import trainjob_keys
from cong.config import Config


def multi_node(cfg: Config, stage: str) -> bool:
    """Whether `stage` trains as a TrainJob (use components.trainjob's component for it)."""
    return cfg.resources_for(stage).nodes > 1


def with_trainjob_cleanup(cfg: Config, pipeline, run_id: str):
    """`pipeline` itself, or, when the config has multi-node stages, `pipeline` inside an exit handler that
    deletes the run's TrainJobs (same name, description, parameter and pipeline config)."""
    keys = trainjob_keys(cfg)
    if not keys:
        return pipeline

    # The run's workspace (artifacts.store, pipelines.handoff) is a setting of the outermost pipeline.
    @dsl.pipeline(name=pipeline.name, description=pipeline.description, pipeline_config=pipeline.pipeline_config)
    def with_cleanup(config: dict = cfg.as_parameter()):
        cleanup = delete_trainjobs(keys=keys, run_id=run_id)
        cleanup.set_display_name("delete trainjobs").set_caching_options(False)
        cleanup.set_cpu_limit("1").set_memory_limit("1Gi")
        with dsl.ExitHandler(cleanup, name="trainjobs"):
            pipeline(config=config)

    return with_cleanup
