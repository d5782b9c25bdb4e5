"""The pipeline's side of `artifacts.store` (the stages' side is cong.storage.handoff).

`workspace`: the pipeline asks KFP for a per-run workspace (`dsl.PipelineConfig(workspace=...)`, KFP >= 2.15)
and passes `dsl.WORKSPACE_PATH_PLACEHOLDER` as `model_store` to every stage that writes or reads a model; the
KFP driver mounts the workspace at /kfp-workspace on exactly the tasks whose parameters name it. `pvc`: those
stages mount the configured claim (kfp-kubernetes `mount_pvc`) and get its mount path as `model_store`.
`artifacts` (the default) changes nothing.
"""

from kfp import dsl, kubernetes

from cong.config import Config
from cong.vocabulary import MODEL_READERS, MODEL_WRITERS


def pipeline_config(cfg: Config) -> dsl.PipelineConfig | None:
    """The run's workspace PVC for `workspace`: size, access mode and storage class from the config. KFP's API
    server fills in what the patch leaves out from its default workspace spec, if it has one; its Argo compiler
    refuses a workspace without an access mode, so the patch always names one."""
    settings = cfg.artifacts
    if settings.store != "workspace":
        return None
    patch = {"accessModes": [settings.access_mode]}
    if settings.storage_class:
        patch["storageClassName"] = settings.storage_class
    return dsl.PipelineConfig(
        workspace=dsl.WorkspaceConfig(
            size=settings.workspace_size, kubernetes=dsl.KubernetesWorkspaceConfig(pvcSpecPatch=patch)
        )
    )


def store_input(cfg: Config) -> dict[str, str]:
    """The `model_store` argument of a model stage: the workspace placeholder, the claim's mount path, or none."""
    store = cfg.artifacts.store
    if store == "workspace":
        return {"model_store": dsl.WORKSPACE_PATH_PLACEHOLDER}
    if store == "pvc":
        return {"model_store": cfg.artifacts.mount_path}
    return {}


def attach(task: dsl.PipelineTask, cfg: Config, stage: str) -> None:
    """A model stage's share of the store: the claim mounted (`pvc`), no cached result for a writer (`workspace`).

    A cached writer would hand a later run a pointer into an earlier run's workspace, which KFP deleted with
    that run; the backend's cache key holds parameters and artifact names, not what a pointer names. A claim
    outlives its runs, so with `pvc` a cached pointer stays valid while its folder is kept.
    """
    settings = cfg.artifacts
    if stage not in MODEL_WRITERS + MODEL_READERS:
        return
    if settings.store == "pvc":
        kubernetes.mount_pvc(task, pvc_name=settings.pvc_name, mount_path=settings.mount_path)
    if settings.store == "workspace" and stage in MODEL_WRITERS:
        task.set_caching_options(False)
