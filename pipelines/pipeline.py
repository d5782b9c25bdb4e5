"""The weak-to-strong DAG: every method of the comparison table, branching by the run's `methods`.

    plan -> fetch -> import-<input> (the base models, the prompt sets[, a supplied aligned weak model])
         -> sft (the strong ceiling, on the train prompts' reference responses)
         -> weak_align -> [weak_sample] -> weak_sft | auxconf | wspo | icl_refine -> sft
                       -> wsd (eval rows) | wsd (train) -> sft
                       -> cd_sample -> sft (ConG-S) -> strong_sample -> pair -> dpo (ConG)
                       -> [alpha_sweep]
                                                                    -> evaluate (one row per method) -> lineage
                                                   [promotion.enabled] -> promote (challenger vs champion)

Every stage takes the imported inputs it reads (pipelines/imports.py, cong.vocabulary.STAGE_INPUTS); the last
task, `lineage`, publishes the run's lineage.json (cong.stages.lineage). The UI shows each task by the name the
paper would give it (TASK_TITLES).

`plan` reads the config parameter at run time and switches each branch on or off (dsl.If), so the method
set stays a pipeline parameter. A branch that is off runs `not_selected` instead, which gives dsl.OneOf
the output it needs from the Else side; evaluate reads only the methods the config selects. Shared work
runs once: one weak alignment for all methods, one weak sample set for the weak-label methods, one CD
pass and one ConG-S model for both ConG rows.

Each sampling stage (weak_sample, cd_sample, strong_sample) is a dsl.ParallelFor of `<stage>_shard` tasks,
one GPU pod per shard, over the shard indices the plan lists from `stages.<stage>.shards` (a run-time value
like `methods`, so the fan-out always matches the config the shards read), then a light `<stage>` task (the one
merge_shards component, named after the stage) that merges them into the stage's dataset (cong.stages.shards).
"""
# No `from __future__ import annotations` here: kfp reads the pipeline signature's annotations as types.

from kfp import dsl, kubernetes
from kfp.dsl import tasks_group

from components.alpha_sweep.component import alpha_sweep
from components.auxconf.component import auxconf
from components.cd_sample_shard.component import cd_sample_shard
from components.dpo.component import dpo
from components.evaluate.component import evaluate
from components.fetch.component import fetch
from components.group_done.component import group_done
from components.icl_refine.component import icl_refine
from components.lineage.component import lineage
from components.merge_shards.component import merge_of
from components.not_selected.component import not_selected
from components.pair.component import pair
from components.plan.component import plan
from components.promote.component import promote
from components.sft.component import sft
from components.strong_sample_shard.component import strong_sample_shard
from components.trainjob.component import dpo_trainjob, sft_trainjob
from components.weak_align.component import weak_align
from components.weak_sample_shard.component import weak_sample_shard
from components.wsd.component import wsd
from components.wspo.component import wspo
from cong.config import Config, seconds
from cong.containers import IMAGE_UID
from cong.vocabulary import (
    METHOD_TITLES,
    PIPELINE_NAME,
    RESUMABLE_STAGES,
    STAGE_INPUTS,
    TRAINING_STAGES,
    UNCACHED_STAGES,
)
from pipelines import handoff
from pipelines.imports import import_inputs, importers
from pipelines.trainjob import multi_node, with_trainjob_cleanup

CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
SETTING_KEYS = ("AWS_ENDPOINT_URL_S3", "AWS_REGION", "CONG_S3_ADDRESSING")
# Resolved by KFP at run time (the run's id in the Kubeflow UI). Only the exit handler that deletes a run's TrainJobs
# takes it, never cached: KFP's driver puts the resolved value in the cache key, so a cacheable task given it could
# never hit (backend/src/v2/driver/container.go). Stages read their run from their output URIs (cong.storage.runs).
RUN_ID = dsl.PIPELINE_JOB_ID_PLACEHOLDER
# What the Kubeflow UI's graph calls each stage's task: the paper's steps. `cong lineage RUN_ID` matches the tasks
# the API reports to the compiled spec by these names.
TASK_TITLES = {
    "plan": "plan: check inputs, choose methods",
    "fetch": "fetch the inputs into the store",
    "weak_align": "align the weak model (DPO)",
    "weak_sample": "weak labels",
    "cd_sample": "contrastive decoding",
    "strong_sample": "ConG-S samples",
    "pair": "ConG pairs: CD chosen, ConG-S rejected",
    "dpo": "ConG: DPO of ConG-S",
    "auxconf": "AuxConf",
    "wspo": "WSPO",
    "icl_refine": "ICL refinement of the weak labels",
    "alpha_sweep": "alpha sweep of contrastive decoding",
    "evaluate": "evaluate: the comparison table",
    "promote": "promote: challenger vs champion",
    "lineage": "lineage: every artifact back to the inputs",
}
# What each branch switch of the plan stands for.
SWITCH_TITLES = {**METHOD_TITLES, "weak_samples": "weak labels", "alpha_sweep": "alpha sweep"}
SFT_TITLES = {
    "cong_s": "ConG-S: SFT on CD responses",
    "weak_sft": "WeakSFT: SFT on weak labels",
    "icl_refine": "ICL-Refine: SFT on refined labels",
    "wsd_sft": "WSD-SFT: SFT on WSD responses",
    "strong_ceiling": "Strong ceiling: SFT on reference responses",
}


def place(task: dsl.PipelineTask, cfg: Config, stage: str) -> dsl.PipelineTask:
    """The stage's pod from the config: requests and limits, GPUs on their pool, shared memory for multi-GPU
    work, timeout, retries of the stages that resume (training, sampling shards) and pod labels."""
    r = cfg.resources_for(stage)
    task.set_cpu_request(r.cpu_request or r.cpu).set_cpu_limit(r.cpu)
    task.set_memory_request(r.memory_request or r.memory).set_memory_limit(r.memory)
    pool = cfg.pool_for(stage)
    if r.gpus:
        task.set_accelerator_type(pool.accelerator if pool else "nvidia.com/gpu").set_accelerator_limit(r.gpus)
    if pool:
        for key, value in pool.node_selector.items():
            kubernetes.add_node_selector(task, key, value)
        for t in pool.tolerations:
            kubernetes.add_toleration(task, key=t.key, operator=t.operator, value=t.value, effect=t.effect)
    if r.gpus > 1 or r.shm:
        # Collective communication (NCCL) and DataLoader workers pass tensors through /dev/shm, which a
        # container gets at 64 MiB unless a memory-backed volume replaces it.
        kubernetes.empty_dir_mount(task, "dshm", "/dev/shm", medium="Memory", size_limit=r.shm)
    if r.timeout:
        kubernetes.set_timeout(task, seconds(r.timeout))
    retries = r.retries if r.retries is not None else (cfg.scheduling.retry.count if stage in RESUMABLE_STAGES else 0)
    if retries:
        b = cfg.scheduling.retry
        task.set_retry(retries, backoff_duration=b.backoff, backoff_factor=b.factor, backoff_max_duration=b.max_backoff)
    # `cong/workload` lets cluster policy tell training pods apart: KFP cannot set a pod's priorityClassName, so an
    # admission policy (e.g. Kyverno) that gives `training` pods the class `cong-training` of manifests/ keys on it.
    workload = "training" if stage in TRAINING_STAGES else "gpu" if r.gpus else "light"
    labels = {"app.kubernetes.io/part-of": "cong", "cong/stage": stage, "cong/workload": workload}
    labels.update(cfg.scheduling.pod_labels)
    for key, value in labels.items():
        kubernetes.add_pod_label(task, key, value)
    # The image's own user, never root. KFP's backend adds allowPrivilegeEscalation: false, drops every capability
    # and sets the RuntimeDefault seccomp profile to every container it makes (kfp-kubernetes documents it).
    kubernetes.set_security_context(task, run_as_user=IMAGE_UID, run_as_group=IMAGE_UID, run_as_non_root=True)
    return task


def build_pipeline(cfg: Config, shard_threads: int | None = None):
    """The pipeline function for this config (compile it, or call it under kfp.local).

    `shard_threads`, for local runs, caps the CPU threads of each sampling shard (OMP_NUM_THREADS).
    """
    supplied_aligned = cfg.models.weak_aligned is not None
    store = handoff.store_input(cfg)  # where model stages write and read models, when not as artifacts
    external = importers(cfg)

    def schedule(task: dsl.PipelineTask, stage: str, name: str | None = None) -> dsl.PipelineTask:
        task.set_display_name(name or TASK_TITLES[stage])
        place(task, cfg, stage)
        task.set_caching_options(stage not in UNCACHED_STAGES)
        # Stages load s3:// inputs themselves (cong.storage.folders), so every pod gets the store's settings and the
        # credentials by reference: the compiled YAML names the Secret and its keys, never a value.
        if cfg.storage.credentials_secret:
            kubernetes.use_secret_as_env(task, cfg.storage.credentials_secret, {k: k for k in CREDENTIAL_KEYS})
        if cfg.storage.settings_config_map:
            kubernetes.use_config_map_as_env(task, cfg.storage.settings_config_map, {k: k for k in SETTING_KEYS})
        handoff.attach(task, cfg, stage)
        return task

    def skipped(method: str) -> dsl.PipelineTask:
        # KFP's dsl.OneOf needs an output from every branch; this stand-in says which method the run leaves out. Never
        # cached: a cache hit would leave its branch unfinished (group_done's docstring), and evaluate would fail.
        task = schedule(not_selected(method=method), "plan", f"{SWITCH_TITLES[method]}: not in this run")
        return task.set_caching_options(False)

    def close(group: tasks_group.TasksGroup | str, *after: dsl.PipelineTask) -> dsl.PipelineTask:
        """A group_done task after `after` (by default every task of `group`), so that KFP's backend marks the group
        complete even when its cache answered every other task."""
        name = group if isinstance(group, str) else group.display_name
        tasks = after or [t for t in group.tasks if isinstance(t, dsl.PipelineTask)]
        return schedule(group_done(group=name), "plan", f"{name}: done").set_caching_options(False).after(*tasks)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Weak-to-strong alignment: ConG and the baselines, compared",
        pipeline_config=handoff.pipeline_config(cfg),
    )
    def cong_pipeline(config: dict = cfg.as_parameter()):
        planned = schedule(plan(config=config), "plan")
        switches = planned.outputs
        # After the plan's checks: nothing is copied for a run that cannot start.
        fetched = schedule(fetch(config=config), "fetch").after(planned)
        imports = import_inputs(external, fetched)

        def stage_task(component, stage: str, name: str | None = None, /, **arguments) -> dsl.PipelineTask:
            """`component` given the config, the run's id and the imported inputs `stage` reads
            (cong.vocabulary.STAGE_INPUTS) besides `arguments`, scheduled as `stage`."""
            inputs = {field: imports[field] for field in STAGE_INPUTS[stage]}
            return schedule(component(config=config, **inputs, **arguments), stage, name)

        def branch(switch: str, build, kind: str):
            """`build()`'s output when the plan switches `switch` on, else a placeholder of that kind."""
            with dsl.If(switches[switch] == True, name=SWITCH_TITLES[switch]) as group:  # noqa: E712 (a kfp condition)
                produced = build()
                close(group)
            with dsl.Else(name=f"{SWITCH_TITLES[switch]}: off"):
                placeholder = skipped(switch).outputs[kind]
            return dsl.OneOf(produced, placeholder)

        def sharded(stage: str, shard_component, **arguments) -> dsl.PipelineTask:
            """A shard task of `stage` for each shard index the plan lists for it, then the merge of them all."""
            with dsl.ParallelFor(switches[f"{stage}_shards"], name=f"{TASK_TITLES[stage]}: shards") as index:
                shards = stage_task(shard_component, stage, f"{TASK_TITLES[stage]} (shard)", shard=index, **arguments)
                if shard_threads:
                    shards.set_env_variable("OMP_NUM_THREADS", str(shard_threads))
                # Each iteration is a group of its own for KFP's backend, which must see it complete.
                close(f"{TASK_TITLES[stage]} (shard)", shards)
            return stage_task(
                merge_of(stage),
                "merge_shards",
                TASK_TITLES[stage],
                stage=stage,
                shards=dsl.Collected(shards.outputs["responses"]),
            )

        if supplied_aligned:
            aligned = {"weak_aligned": imports["weak_aligned"]}
        else:
            # After the plan (its outputs name the inputs): a config whose methods do not fit its models fails
            # before any training.
            weak = stage_task(weak_align, "weak_align", **store)
            aligned = {"weak_aligned": weak.outputs["weak_aligned"]}

        def train_sft(data, method: str):
            train = sft_trainjob if multi_node(cfg, "sft") else sft
            return stage_task(train, "sft", SFT_TITLES[method], data=data, method=method, **store).outputs["model"]

        weak_samples = branch(
            "weak_samples",
            lambda: sharded("weak_sample", weak_sample_shard, **aligned, **store).outputs["responses"],
            "data",
        )
        wspo_data = weak_samples if supplied_aligned else weak.outputs["pairs"]
        models = {
            "weak_sft": branch("weak_sft", lambda: train_sft(weak_samples, "weak_sft"), "model"),
            "auxconf": branch(
                "auxconf", lambda: stage_task(auxconf, "auxconf", data=weak_samples, **store).outputs["model"], "model"
            ),
            "wspo": branch(
                "wspo",
                lambda: stage_task(wspo, "wspo", data=wspo_data, **aligned, **store).outputs["model"],
                "model",
            ),
            "icl_refine": branch(
                "icl_refine",
                lambda: train_sft(
                    stage_task(icl_refine, "icl_refine", data=weak_samples).outputs["responses"], "icl_refine"
                ),
                "model",
            ),
            "wsd_sft": branch(
                "wsd_sft",
                lambda: train_sft(
                    stage_task(
                        wsd, "wsd", "WSD responses to the training prompts", split="train", **aligned, **store
                    ).outputs["responses"],
                    "wsd_sft",
                ),
                "model",
            ),
        }
        wsd_rows = branch(
            "wsd",
            lambda: stage_task(wsd, "wsd", "WSD: held-out responses", split="eval", **aligned, **store).outputs[
                "responses"
            ],
            "data",
        )

        def cong_s_model():
            cd = sharded("cd_sample", cd_sample_shard, **aligned, **store)
            return cd, train_sft(cd.outputs["responses"], "cong_s")

        with dsl.If(switches["cong_mode"] == "cong", name="ConG and ConG-S") as group:
            cd, cong_s = cong_s_model()
            strong = sharded("strong_sample", strong_sample_shard, model=cong_s, **store)
            pairs = stage_task(
                pair, "pair", chosen=cd.outputs["responses"], rejected=strong.outputs["responses"]
            ).outputs["pairs"]
            train_dpo = dpo_trainjob if multi_node(cfg, "dpo") else dpo
            cong = stage_task(train_dpo, "dpo", model=cong_s, pairs=pairs, **store).outputs["aligned"]
            close(group)
        with dsl.Elif(switches["cong_mode"] == "cong_s", name="ConG-S only") as group:
            _, cong_s_only = cong_s_model()
            cong_skipped = skipped("cong").outputs["model"]
            close(group)
        with dsl.Else(name="ConG and ConG-S: off"):
            # One after the other: the second to finish completes the group (two at once could each see the other
            # still running).
            neither_cong_s = skipped("cong_s")
            neither_cong = skipped("cong").after(neither_cong_s).outputs["model"]
            neither_cong_s = neither_cong_s.outputs["model"]
        models["cong_s"] = dsl.OneOf(cong_s, cong_s_only, neither_cong_s)
        models["cong"] = dsl.OneOf(cong, cong_skipped, neither_cong)
        # Built last so that the task names of the branches before it stay those of earlier versions.
        models["strong_ceiling"] = branch(
            "strong_ceiling", lambda: train_sft(imports["train_prompts"], "strong_ceiling"), "model"
        )

        sweep = branch(
            "alpha_sweep",
            lambda: stage_task(alpha_sweep, "alpha_sweep", **aligned, **store).outputs["points"],
            "points",
        )
        evaluated = stage_task(evaluate, "evaluate", **models, wsd=wsd_rows, alpha_sweep=sweep, **aligned, **store)
        judge = cfg.stages.evaluate.judge
        if judge is not None:
            # An external judge's answers are not a function of the task's inputs.
            evaluated.set_caching_options(False)
        if judge is not None and judge.secret:
            # The judge's endpoint and key by reference, as the store's credentials; a judge may need no key.
            kubernetes.use_secret_as_env(evaluated, judge.secret, {judge.endpoint_env: judge.endpoint_env})
            kubernetes.use_secret_as_env(evaluated, judge.secret, {judge.api_key_env: judge.api_key_env}, optional=True)
        stage_task(lineage, "lineage", results=evaluated.outputs["results"], described=fetched.outputs["described"])
        if cfg.promotion.enabled:
            # It samples two models as evaluate does: evaluate's resources unless the config gives it its own.
            stage_task(promote, "promote", challenger=models[cfg.promotion.method], **store)

    return with_trainjob_cleanup(cfg, cong_pipeline, RUN_ID)
