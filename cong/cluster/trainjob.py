"""Multi-node training as a Kubeflow Trainer v2 TrainJob (`trainer.kubeflow.org/v1alpha1`).

A training stage whose resources ask for more than one node does not train in its KFP pod. The pod publishes
the stage's config and inputs to the run's storage, creates a TrainJob that runs the stage's entry
(`python -m cong.stages.launch STAGE ...`, under torchrun or mpirun) on every node, streams the rank-0 trainer's log,
waits for the job's Complete or Failed condition, fetches the model the job published, and deletes the job.

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

The pipeline's service account needs, in the run's namespace (a Role):
    - apiGroups: ["trainer.kubeflow.org"], resources: ["trainjobs"], verbs: ["create", "get", "delete"]
    - apiGroups: [""], resources: ["pods"], verbs: ["list"]
    - apiGroups: [""], resources: ["pods/log"], verbs: ["get"]
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import re
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cong.config import Config, seconds
from cong.errors import CongError
from cong.progress import log
from cong.training.distributed import launch_args
from cong.vocabulary import SFT_METHODS

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
# What a TrainJob stage does with the API, as (API group, resource, verbs): manifests/base/role.yaml grants it.
NEEDED = ((GROUP, PLURAL, ("create", "get", "delete")), ("", "pods", ("list",)), ("", "pods/log", ("get",)))
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
# What a trainer writes outside its inputs and outputs: temporary files, and caches under the image's HOME.
WRITABLE = {"tmp": "/tmp", "home": "/home/cong"}


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
) -> dict[str, Any]:
    """The TrainJob object for `runtime` (the ClusterTrainingRuntime `runtime_ref`, by default the runtime's own
    name): the trainer (image, command, nodes, resources, env) and, as a runtime patch, where its pods may run
    (node selector, affinity, tolerations), what they mount and their labels. `deadline_s` bounds its run."""
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
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainJob",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": spec,
    }


def _condition(job: dict[str, Any]) -> tuple[str, str] | None:
    """("Complete" | "Failed", "reason: message") once the job has ended, else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            detail = ": ".join(p for p in (condition.get("reason"), condition.get("message")) if p)
            return condition["type"], detail or "no reason given"
    return None


def _pod_summary(pods: list[dict[str, Any]]) -> str:
    """Pods by phase, with why containers wait (e.g. `2 Running, 1 Pending (ImagePullBackOff)`)."""
    counts: collections.Counter[str] = collections.Counter()
    for pod in pods:
        status = pod.get("status") or {}
        states = [(c.get("state") or {}).get("waiting") or {} for c in status.get("containerStatuses") or []]
        reasons = sorted({state["reason"] for state in states if state.get("reason")})
        counts[status.get("phase", "Unknown") + (f" ({', '.join(reasons)})" if reasons else "")] += 1
    return ", ".join(f"{count} {what}" for what, count in sorted(counts.items())) or "none yet"


class Cluster:
    """The Kubernetes API calls a TrainJob needs, with errors turned into messages a user can act on."""

    def __init__(self, api_client: Any, namespace: str, poll_s: float = 10.0):
        from kubernetes import client

        self.api_client, self.namespace, self.poll_s = api_client, namespace, poll_s
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    @classmethod
    def connect(cls, poll_s: float = 10.0) -> Cluster:
        """In a pod: its service account and namespace; elsewhere: the kubeconfig's current context."""
        from kubernetes import client, config

        try:
            config.load_incluster_config()
            namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        except config.ConfigException:
            try:
                config.load_kube_config()
                _, context = config.list_kube_config_contexts()
            except (config.ConfigException, OSError) as exc:
                raise CongError(
                    f"no Kubernetes cluster to run a TrainJob on ({exc}). A training stage with nodes > 1 runs as a "
                    "Kubeflow TrainJob, which needs a cluster: run it with nodes: 1 here."
                ) from None
            namespace = context["context"].get("namespace", "default")
        return cls(client.ApiClient(), namespace, poll_s)

    def prerequisite_problems(self) -> list[str]:
        """What keeps this namespace from running a TrainJob: the TrainJob API missing (Kubeflow Trainer not
        installed), or a verb the service account lacks. Asked of the API server itself (API discovery, and a
        SelfSubjectAccessReview per verb), which every authenticated account may do."""
        from kubernetes import client

        try:
            self.custom.get_api_resources(GROUP, VERSION)
        except Exception as exc:
            return [str(self._error(exc, f"looking up the trainjob API {API_VERSION}"))]
        authorization = client.AuthorizationV1Api(self.api_client)
        denied = []
        for group, resource, verbs in NEEDED:
            name, _, subresource = resource.partition("/")
            for verb in verbs:
                attributes = client.V1ResourceAttributes(
                    group=group, resource=name, subresource=subresource or None, verb=verb, namespace=self.namespace
                )
                review = client.V1SelfSubjectAccessReview(
                    spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)
                )
                doing = f"asking whether this service account may {verb} {resource}"
                answer = self._call(doing, authorization.create_self_subject_access_review, review)
                if not answer.status.allowed:
                    denied.append(f"{verb} {resource}")
        if not denied:
            return []
        return [
            f"the service account may not {', '.join(denied)} in namespace {self.namespace}, which a training stage "
            f"with nodes > 1 needs. Bind it a Role with: {RBAC} (manifests/base/role.yaml)."
        ]

    def _error(self, exc: Exception, doing: str) -> CongError:
        from kubernetes.client.exceptions import ApiException

        host = self.api_client.configuration.host
        if not isinstance(exc, ApiException):
            return CongError(f"{doing}: cannot reach the Kubernetes API at {host} ({type(exc).__name__}: {exc}).")
        try:
            message = json.loads(exc.body).get("message") or exc.reason
        except (TypeError, ValueError):
            message = exc.body or exc.reason
        if exc.status in (401, 403):
            return CongError(
                f"{doing}: the Kubernetes API refused ({exc.status} {exc.reason}: {message}). The pipeline's service "
                f"account needs a Role in namespace {self.namespace} with: {RBAC}."
            )
        if exc.status == 404 and "trainjob" in doing:
            return CongError(
                f"{doing}: {message}. Is Kubeflow Trainer v2 installed (the TrainJob API {API_VERSION})? Install it, "
                "or train this stage on one node (nodes: 1)."
            )
        return CongError(f"{doing}: the Kubernetes API answered {exc.status} {exc.reason}: {message}")

    def _call(self, doing: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise self._error(exc, doing) from None

    def get(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._error(exc, f"reading trainjob {self.namespace}/{name}") from None
        except Exception as exc:
            raise self._error(exc, f"reading trainjob {self.namespace}/{name}") from None

    def create_or_adopt(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create the job; if it exists (a retry of the same task), adopt it, or replace it when it failed."""
        from kubernetes.client.exceptions import ApiException

        name, run_id = body["metadata"]["name"], body["metadata"]["annotations"][RUN_ANNOTATION]
        doing = f"creating trainjob {self.namespace}/{name}"
        try:
            job = self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
            log(STAGE, f"created {name} in {self.namespace}")
            return job
        except ApiException as exc:
            if exc.status != 409:
                raise self._error(exc, doing) from None
        except Exception as exc:
            raise self._error(exc, doing) from None
        existing = self.get(name)
        if existing is None:  # deleted between our create and get: try once more
            return self._call(
                doing, self.custom.create_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, body
            )
        owner = (existing.get("metadata", {}).get("annotations") or {}).get(RUN_ANNOTATION)
        if owner != run_id:
            raise CongError(
                f"a trainjob named {name} already exists in {self.namespace} and belongs to run {owner!r}, not to this "
                f"run ({run_id}). Delete it (kubectl delete trainjob {name} -n {self.namespace}) and retry."
            )
        state = _condition(existing)
        if state and state[0] == "Failed":
            log(STAGE, f"{name} exists from an earlier attempt and failed ({state[1]}); replacing it")
            self.delete(name, wait=True)
            return self._call(
                doing, self.custom.create_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, body
            )
        log(STAGE, f"{name} exists from an earlier attempt of this task; following it")
        return existing

    def delete(self, name: str, wait: bool = False) -> bool:
        """Delete the job and what it made (foreground); False if it was not there. `wait`: until it is gone."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, propagation_policy="Foreground"
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise self._error(exc, f"deleting trainjob {self.namespace}/{name}") from None
        except Exception as exc:
            raise self._error(exc, f"deleting trainjob {self.namespace}/{name}") from None
        log(STAGE, f"deleted {name}")
        while wait and self.get(name) is not None:
            time.sleep(self.poll_s)
        return True

    def pods(self, name: str) -> list[dict[str, Any]]:
        found = self._call(
            f"listing the pods of trainjob {self.namespace}/{name}",
            self.core.list_namespaced_pod,
            self.namespace,
            label_selector=f"{JOBSET_LABEL}={name}",
        )
        return [self.api_client.sanitize_for_serialization(pod) for pod in found.items]

    def wait(self, name: str, runtime: str) -> None:
        """Poll the job until it ends, streaming its rank-0 log meanwhile; a failure is a CongError."""
        followed: set[str] = set()
        streams: list[threading.Thread] = []
        shown = ""
        while True:
            job = self.get(name)
            if job is None:
                raise CongError(f"trainjob {self.namespace}/{name} disappeared while this task waited for it.")
            pods = self.pods(name)
            if (summary := _pod_summary(pods)) != shown:
                log(STAGE, f"{name}: pods {summary}")
                shown = summary
            for pod in pods:
                if self._shows_progress(pod, runtime) and pod["metadata"]["uid"] not in followed:
                    if pod.get("status", {}).get("phase") in ("Running", "Succeeded", "Failed"):
                        followed.add(pod["metadata"]["uid"])
                        thread = threading.Thread(target=self._follow, args=(pod["metadata"]["name"],), daemon=True)
                        thread.start()
                        streams.append(thread)
            state = _condition(job)
            if state is not None:
                for thread in streams:
                    thread.join(timeout=30)
                if state[0] == "Failed":
                    failed = [p["metadata"]["name"] for p in pods if p.get("status", {}).get("phase") == "Failed"]
                    where = (
                        f" Failed pods: {', '.join(failed)} (kubectl logs -n {self.namespace} POD -c {CONTAINER})."
                        if failed
                        else ""
                    )
                    raise CongError(f"trainjob {self.namespace}/{name} failed: {state[1]}.{where}")
                log(STAGE, f"{name} completed: {state[1]}")
                return
            time.sleep(self.poll_s)

    @staticmethod
    def _shows_progress(pod: dict[str, Any], runtime: str) -> bool:
        labels = pod["metadata"].get("labels") or {}
        return labels.get(REPLICATED_JOB_LABEL) == RUNTIMES[runtime].log_job and labels.get(INDEX_LABEL) == "0"

    def _follow(self, pod: str) -> None:
        """Print the pod's log line by line as it comes, until the container ends."""
        try:
            response = self.core.read_namespaced_pod_log(
                pod, self.namespace, container=CONTAINER, follow=True, _preload_content=False
            )
            pending = b""
            for chunk in response.stream(4096):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    log(pod, line.decode(errors="replace"))
            if pending:
                log(pod, pending.decode(errors="replace"))
        except Exception as exc:  # a lost log stream must not fail the training it shows
            log(STAGE, f"stopped following the log of {pod}: {self._error(exc, 'reading its log')}")


def _published(path: Path, uri: str, settings: Any) -> str:
    """`path` published at `uri` (once: a retry finds it there); the reference cong.storage.folders resolves."""
    from cong.storage.folders import find_manifest, publish_path

    if find_manifest(uri, settings) is None:
        return publish_path(path, uri, settings=settings)
    return uri if path.is_dir() else f"{uri}/{path.name}"


def run_stage(
    cfg: Config,
    stage: str,
    *,
    run_id: str,
    image: str,
    task: TaskSettings,
    inputs: dict[str, Path],
    output: tuple[str, Path],
    method: str = "",
    cluster: Cluster | None = None,
    settings: Any = None,
) -> dict[str, float]:
    """Train `stage` as a TrainJob: publish the config and `inputs` under the run's storage prefix, run the job,
    and fetch what it publishes as `output` (name, local folder). Returns the job's shape and duration."""
    from cong.storage.folders import MANIFEST_NAME, NotPublished, fetch_dir
    from cong.storage.s3 import S3Settings

    if not run_id:
        raise CongError(f"{stage}: a TrainJob needs the KFP run id (the pipeline passes it as run_id).")
    settings = settings or S3Settings.from_env()
    cluster = cluster or Cluster.connect()
    resources = cfg.resources_for(stage)
    name = job_name(run_id, stage, method)
    base = cfg.storage.uri("runs", run_id, "trainjob", name)
    with tempfile.TemporaryDirectory(prefix="cong-trainjob-") as staging:
        config_file = Path(staging) / "config.json"
        config_file.write_text(json.dumps(cfg.as_parameter(), sort_keys=True))
        config_uri = _published(config_file, f"{base}/config", settings)
    input_uris = {key: _published(path, f"{base}/inputs/{key}", settings) for key, path in inputs.items()}
    output_key, output_dir = output
    output_uri = f"{base}/outputs/{output_key}"
    arguments = launch_args(stage, config_uri, input_uris, output_uri, method)
    env_names = sorted({item["name"] for item in task.env or []})
    body = manifest(
        name,
        namespace=cluster.namespace,
        runtime=cfg.trainjob.runtime,
        runtime_ref=cfg.trainjob.runtime_ref,
        image=image,
        command=trainer_command(cfg.trainjob.runtime, arguments, env_names),
        nodes=resources.nodes,
        procs_per_node=max(resources.gpus, 1),
        task=task,
        labels={"app.kubernetes.io/managed-by": "cong", "cong/stage": stage},
        annotations={RUN_ANNOTATION: run_id},
        shm=resources.gpus > 1 or resources.shm is not None,
        shm_size=resources.shm,
        # The labels the pipeline gives a training stage's pods (pipelines.pipeline.place), for cluster policy.
        pod_labels={
            "app.kubernetes.io/part-of": "cong",
            "cong/stage": stage,
            "cong/workload": "training",
            **cfg.scheduling.pod_labels,
        },
        deadline_s=seconds(resources.timeout) if resources.timeout else None,
    )
    started = time.monotonic()
    cluster.create_or_adopt(body)
    try:
        cluster.wait(name, cfg.trainjob.runtime)
        try:
            fetch_dir(output_uri, output_dir, settings=settings)
        except NotPublished:
            raise CongError(
                f"trainjob {cluster.namespace}/{name} completed but published nothing at {output_uri}: the stage's "
                "entry (python -m cong.stages.launch) must publish its output there."
            ) from None
        # A published folder carries its manifest; the artifact is the model alone.
        (Path(output_dir) / MANIFEST_NAME).unlink()
    finally:
        cluster.delete(name)
    return {"nodes": resources.nodes, "procs_per_node": max(resources.gpus, 1), "seconds": time.monotonic() - started}


def trainjob_keys(cfg: Config) -> list[list[str]]:
    """The (stage, method) pairs whose training may run as a TrainJob in a run of `cfg`: every SFT method when
    sft has more than one node (the run's methods are a run-time parameter), and dpo."""
    keys = [["sft", method] for method in SFT_METHODS] if cfg.resources_for("sft").nodes > 1 else []
    return keys + ([["dpo", ""]] if cfg.resources_for("dpo").nodes > 1 else [])


def delete_jobs(run_id: str, keys: list[list[str]], cluster: Cluster | None = None) -> list[str]:
    """Delete the TrainJobs of (stage, method) pairs of a run, by name; returns the names that existed."""
    cluster = cluster or Cluster.connect()
    names = [job_name(run_id, *key) for key in keys]
    return [name for name in names if cluster.delete(name)]
