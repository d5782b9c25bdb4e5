"""The ConG DAG: weak_align -> cd_sample -> sft -> strong_sample -> pair -> dpo -> evaluate.

The pipeline is built from a validated config: the config becomes the default of the pipeline parameter
`config` (override it when submitting a run), and each stage gets the resources the config gives it.
"""
# No `from __future__ import annotations` here: kfp reads the pipeline signature's annotations as types.

from kfp import dsl

from components.cd_sample.component import cd_sample
from components.dpo.component import dpo
from components.evaluate.component import evaluate
from components.pair.component import pair
from components.sft.component import sft
from components.strong_sample.component import strong_sample
from components.weak_align.component import weak_align
from cong.config import STAGES, Config, Resources

PIPELINE_NAME = "cong"
# Sampling draws with temperature: a cached result would be a stale draw, not the same computation.
SAMPLING_STAGES = {"weak_align", "cd_sample", "strong_sample", "evaluate"}


def _schedule(task: dsl.PipelineTask, stage: str, resources: Resources) -> dsl.PipelineTask:
    task.set_display_name(stage)
    task.set_cpu_limit(resources.cpu).set_memory_limit(resources.memory)
    if resources.gpus:
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(resources.gpus)
    task.set_caching_options(stage not in SAMPLING_STAGES)
    return task


def build_pipeline(cfg: Config):
    """The pipeline function for this config (compile it, or call it under kfp.local)."""
    resources = {stage: cfg.resources.get(stage, Resources()) for stage in STAGES}
    supplied_aligned = cfg.models.weak_aligned is not None

    @dsl.pipeline(name=PIPELINE_NAME, description="Contrastive weak-to-strong alignment (ConG)")
    def cong_pipeline(config: dict = cfg.as_parameter()):
        aligned = {}
        if not supplied_aligned:
            weak = _schedule(weak_align(config=config), "weak_align", resources["weak_align"])
            aligned = {"weak_aligned": weak.outputs["weak_aligned"]}
        cd = _schedule(cd_sample(config=config, **aligned), "cd_sample", resources["cd_sample"])
        cong_s = _schedule(sft(config=config, data=cd.outputs["responses"]), "sft", resources["sft"])
        strong = _schedule(
            strong_sample(config=config, model=cong_s.outputs["model"]), "strong_sample", resources["strong_sample"]
        )
        pairs = _schedule(
            pair(config=config, chosen=cd.outputs["responses"], rejected=strong.outputs["responses"]),
            "pair",
            resources["pair"],
        )
        cong = _schedule(
            dpo(config=config, model=cong_s.outputs["model"], pairs=pairs.outputs["pairs"]), "dpo", resources["dpo"]
        )
        _schedule(
            evaluate(config=config, cong_s=cong_s.outputs["model"], cong=cong.outputs["aligned"], **aligned),
            "evaluate",
            resources["evaluate"],
        )

    return cong_pipeline
