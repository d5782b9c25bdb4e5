"""Multi-node training as a Kubeflow Trainer v2 TrainJob (`trainer.kubeflow.org/v1alpha1`).

A training stage whose resources ask for more than one node does not train in its KFP pod. The pod publishes
the stage's config and inputs to the run's storage, creates a TrainJob that runs the stage's entry
(`python -m cong.stages.launch STAGE ...`, under torchrun or mpirun) on every node, streams the rank-0 trainer's log,
waits for the job's Complete or Failed condition, fetches the model the job published, and deletes the job.
This file builds the manifest; kube.py talks to the Kubernetes API, trainjob_run.py runs a stage that way.

- Name: `cong-<stage>-<method>-<sha256 of run id, stage and method>`, the same in every retry of a KFP task, so
  a retry adopts the job its first attempt created (a job that already failed is replaced) and the pipeline's
  exit handler can delete it by name when the run ends, however it ended.
- Runtimes: the ClusterTrainingRuntimes `torch-distributed` (torchrun on every node, which reads the `PET_*`
  variables the Trainer sets) and `deepspeed-distributed` (OpenMPI: mpirun on the launcher reaches every node
  over SSH; the image then needs OpenMPI, sshd and mpi4py, as the runtime's own image has). The Trainer gives
  the job's image to the launcher only: the node pods keep the runtime's image, so this needs a copy of the
  runtime with this project's image (`trainjob.runtime_ref` names it).
- Forwarded from the KFP task (`dsl.TaskConfig`): resources (per node), environment (the storage Secret and
  ConfigMap by reference), node selector, affinity, tolerations and volumes (with their mounts). From the
  config, as the pipeline sets them on a training pod: the pod labels, a memory-backed `/dev/shm` on multi-GPU
  nodes (KFP does not forward it) and the stage's timeout (the job's activeDeadlineSeconds). A priority class
  cannot be set through a TrainJob (its runtime patches do not have the field): give it with the runtime, or
  with an admission policy keyed on the label `cong/workload=training`.
- Schema: Kubeflow Trainer >= 2.2 (`spec.runtimePatches`; 2.0 and 2.1 named it differently). The tests check
  the manifest against the models of the PyPI package `kubeflow-trainer-api` 2.3.0, generated from the
  Trainer's OpenAPI spec.

The pipeline's service account needs, in the run's namespace (a Role; `NEEDED`):
    - apiGroups: ["trainer.kubeflow.org"], resources: ["trainjobs"], verbs: ["create", "get", "delete"]
    - apiGroups: [""], resources: ["pods"], verbs: ["get", "list"]
    - apiGroups: [""], resources: ["pods/log"], verbs: ["get"]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from cong.containers import WRITABLE

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"
API_VERSION = f"{GROUP}/{VERSION}"
# JobSet names the pods `<job>-<replicated job>-<index>-<index>-<5 chars>`, a DNS label of at most 63
# characters: 40 leaves room for the longest replicated job name, `launcher`.
NAME_MAX = 40
# Every trainer container of both runtimes is named `node` (the rank-0 pod of `node`, or `launcher` for MPI,
# shows the training's progress).
CONTAINER = "node"
PATCH_MANAGER = "cong"
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
RUN_ANNOTATION = "cong/run-id"
# What a TrainJob stage does with the API, as (API group, resource, verbs): manifests/base/role.yaml grants it. It reads
# its own pod for the run's Workflow, which owns the job it creates.
NEEDED = ((GROUP, PLURAL, ("create", "get", "delete")), ("", "pods", ("get", "list")), ("", "pods/log", ("get",)))
RBAC = "; ".join(
    f"apiGroups: {json.dumps([group])}, resources: {json.dumps([resource])}, verbs: {json.dumps(list(verbs))}"
    for group, resource, verbs in NEEDED
)
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
STAGE = "trainjob"


@dataclasses.dataclass(frozen=True)
class Runtime:
    """How a ClusterTrainingRuntime starts the trainer and which of its replicated jobs run it."""

    launcher: tuple[str, ...]  # what comes before `-m cong.stages.launch`
    replicated_jobs: tuple[str, ...]  # the runtime's jobs whose pods the task's settings patch
    log_job: str  # the replicated job whose first pod shows the training's progress
    exports_env: bool  # mpirun must be told which variables to pass to the ranks on other nodes
    # Whether the trainer runs with a read-only root filesystem (writing only to emptyDirs at WRITABLE). MPI's
    # ssh daemon writes its keys and pid files where the runtime's image puts them.
    read_only_root: bool


RUNTIMES = {
    "torch-distributed": Runtime(("torchrun",), ("node",), "node", False, True),
    "deepspeed-distributed": Runtime(
        ("mpirun", "--hostfile", "/etc/mpi/hostfile"), ("launcher", "node"), "launcher", True, False
    ),
}
# The trainer container's privileges: the image's own non-root user, no way to gain more, no capability.
SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def job_name(run_id: str, stage: str, method: str = "") -> str:
    """The TrainJob's name: an RFC 1035 label of at most NAME_MAX characters, fixed by run, stage and method."""
    digest = hashlib.sha256(f"{run_id}\n{stage}\n{method}".encode()).hexdigest()[:10]
    words = re.sub(r"[^a-z0-9]+", "-", "-".join(("cong", stage, method)).lower()).strip("-")
    return f"{words[: NAME_MAX - len(digest) - 1].rstrip('-')}-{digest}"


def trainer_command(runtime: str, arguments: list[str], env_names: list[str]) -> list[str]:
    """The trainer container's command: the runtime's launcher, then the stage's entry module."""
    spec = RUNTIMES[runtime]
    exports = [part for name in env_names for part in ("-x", name)] if spec.exports_env else []
    python = ["python"] if spec.exports_env else []
    return [*spec.launcher, *exports, *python, "-m", "cong.stages.launch", *arguments]


@dataclasses.dataclass(frozen=True)
class TaskSettings:
    """What the KFP task forwards (kfp's dsl.TaskConfig): Kubernetes JSON fragments, each possibly None."""

    resources: dict[str, Any] | None = None
    env: list[dict[str, Any]] | None = None
    node_selector: dict[str, str] | None = None
    affinity: dict[str, Any] | None = None
    tolerations: list[dict[str, Any]] | None = None
    volumes: list[dict[str, Any]] | None = None
    volume_mounts: list[dict[str, Any]] | None = None

    @classmethod
    def of(cls, task_config: Any) -> TaskSettings:
        """From a dsl.TaskConfig (read by attribute, so this module needs no kfp)."""
        return cls(**{f.name: getattr(task_config, f.name, None) or None for f in dataclasses.fields(cls)})


def _unique_env(env: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trainer's env is a map keyed by name: a later entry replaces an earlier one of the same name."""
    return list({item["name"]: item for item in env}.values())


def manifest(
    name: str,
    *,
    namespace: str,
    runtime: str,
    runtime_ref: str | None = None,
    image: str,
    command: list[str],
    nodes: int,
    procs_per_node: int,
    task: TaskSettings,
    labels: dict[str, str],
    annotations: dict[str, str],
    shm: bool,
    shm_size: str | None = None,
    pod_labels: dict[str, str] | None = None,
    deadline_s: int | None = None,
    owner: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The TrainJob object for `runtime` (the ClusterTrainingRuntime `runtime_ref`, by default the runtime's own
    name): the trainer (image, command, nodes, resources, env) and, as a runtime patch, where its pods may run
    (node selector, affinity, tolerations), what they mount and their labels. `deadline_s` bounds its run; `owner`
    (an owner reference: the run's Argo Workflow) makes Kubernetes' garbage collector delete it with its owner."""
    trainer: dict[str, Any] = {
        "image": image,
        "command": command,
        "numNodes": nodes,
        "numProcPerNode": procs_per_node,
    }
    if task.resources:
        trainer["resourcesPerNode"] = task.resources
    if task.env:
        trainer["env"] = _unique_env(task.env)
    pod: dict[str, Any] = {}
    if task.node_selector:
        pod["nodeSelector"] = task.node_selector
    if task.affinity:
        pod["affinity"] = task.affinity
    if task.tolerations:
        pod["tolerations"] = task.tolerations
    volumes, mounts = list(task.volumes or []), list(task.volume_mounts or [])
    if shm:
        # NCCL between the GPUs of one node goes through /dev/shm; a container's default is 64 MiB.
        volumes.append(
            {"name": "dshm", "emptyDir": {"medium": "Memory", **({"sizeLimit": shm_size} if shm_size else {})}}
        )
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    security = dict(SECURITY_CONTEXT)
    if RUNTIMES[runtime].read_only_root:
        security["readOnlyRootFilesystem"] = True
        volumes += [{"name": name, "emptyDir": {}} for name in WRITABLE]
        mounts += [{"name": name, "mountPath": path} for name, path in WRITABLE.items()]
    if volumes:
        pod["volumes"] = volumes
    pod["containers"] = [
        {"name": CONTAINER, "securityContext": security, **({"volumeMounts": mounts} if mounts else {})}
    ]
    spec: dict[str, Any] = {"runtimeRef": {"name": runtime_ref or runtime}, "trainer": trainer}
    if deadline_s:
        spec["activeDeadlineSeconds"] = deadline_s
    template: dict[str, Any] = {"metadata": {"labels": pod_labels}} if pod_labels else {}
    if pod:
        template["spec"] = pod
    if template:
        jobs = [
            {"name": job, "template": {"spec": {"template": template}}} for job in RUNTIMES[runtime].replicated_jobs
        ]
        spec["runtimePatches"] = [
            {"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": jobs}}}}
        ]
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations}
    if owner:
        # Not blockOwnerDeletion: setting it takes the right to update the Workflow's finalizers, which a run's
        # account has no need of otherwise (the API server's OwnerReferencesPermissionEnforcement).
        metadata["ownerReferences"] = [owner]
    return {"apiVersion": API_VERSION, "kind": "TrainJob", "metadata": metadata, "spec": spec}
