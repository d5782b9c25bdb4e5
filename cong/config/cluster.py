"""Where and how a run's pods run: storage, artifacts, resources, scheduling onto GPU pools, retries, TrainJobs,
DeepSpeed and promotion."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from cong.config.stages import Strict
from cong.errors import CongError
from cong.vocabulary import LIGHT_STAGES, MODEL_METHODS


class StorageSettings(Strict):
    """Where a run keeps what it adds to the artifacts KFP moves: its fetched inputs (`<store>/inputs/`), each output's
    lineage record, checkpoints, finished sampling batches and results (`<store>/runs/<run id>/`), the champion.

    `bucket` unset: on a cluster, the pipeline root's bucket, under the pipeline root's path (every task reads the
    pipeline root from its output URIs, cong.storage.runs): the one store KFP's launcher and the run's key are known
    to reach, `mlpipeline/private-artifacts/<namespace>/...` on a multi-user Kubeflow. A local run uses the bucket
    `cong` of its object store. The endpoint and credentials come from the environment only."""

    bucket: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$",
        description="the bucket; unset: the pipeline root's on a cluster (under its path), `cong` in a local run",
    )
    prefix: str = Field("", pattern=r"^[A-Za-z0-9._/\-]*$", description="key prefix inside the bucket")
    credentials_secret: str | None = Field(
        "cong-s3-credentials",
        description="on a cluster, the Secret whose AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY every task gets as "
        "environment variables; null for pods that get credentials otherwise (e.g. an IAM role)",
    )
    settings_config_map: str | None = Field(
        "cong-storage",
        description="on a cluster, the ConfigMap whose AWS_ENDPOINT_URL_S3, AWS_REGION and CONG_S3_ADDRESSING every "
        "task gets as environment variables",
    )

    def located(self, pipeline_root: str | None = None) -> StorageSettings:
        """These settings with the bucket named: as given; else the pipeline root's bucket with `prefix` under its
        path (a `s3://` or `minio://` root: the same S3 API); else, without a bucket pipeline root, `cong`."""
        if self.bucket is not None:
            return self
        if pipeline_root is None or "://" not in pipeline_root:
            return self.model_copy(update={"bucket": LOCAL_BUCKET})
        scheme, _, rest = pipeline_root.partition("://")
        if scheme not in ("s3", "minio"):
            raise CongError(
                f"the pipeline root {pipeline_root} is not in an S3-compatible store, where the stages keep what they "
                "add to the run: set storage.bucket to a bucket of one (its endpoint in the ConfigMap that "
                "storage.settings_config_map names)."
            )
        bucket, _, path = rest.partition("/")
        prefix = "/".join(p for p in (path.strip("/"), self.prefix.strip("/")) if p)
        return self.model_copy(update={"bucket": bucket, "prefix": prefix})

    def uri(self, *parts: str) -> str:
        if self.bucket is None:
            raise CongError("storage is not located: call StorageSettings.located with the run's pipeline root first.")
        keys = [self.prefix.strip("/"), *parts]
        return f"s3://{self.bucket}/" + "/".join(k for k in keys if k)


# A local run's bucket in its object store (the embedded one, or --s3-endpoint's).
LOCAL_BUCKET = "cong"


Quantity = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")]
Duration = Annotated[str, Field(pattern=r"^[0-9]+[smhd]$", description="e.g. 90s, 30m, 12h, 2d")]
_LABEL_NAME = r"[A-Za-z0-9]([A-Za-z0-9_.\-]{0,61}[A-Za-z0-9])?"
LabelValue = Annotated[str, Field(pattern=rf"^({_LABEL_NAME})?$")]
# An optional DNS-subdomain prefix, then a name (Kubernetes label keys).
LabelKey = Annotated[str, Field(pattern=rf"^([a-z0-9]([a-z0-9.\-]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$")]


def seconds(duration: str) -> int:
    """`90s`, `30m`, `12h`, `2d` in seconds."""
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[duration[-1]]


class Toleration(Strict):
    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class GpuPool(Strict):
    """Where GPU pods of a pool land: the nodes' labels and the taints the pods tolerate."""

    node_selector: dict[LabelKey, LabelValue] = {}
    tolerations: list[Toleration] = []
    accelerator: str = Field(
        "nvidia.com/gpu", min_length=1, description="the extended resource name the pool's GPUs are counted under"
    )


class Retry(Strict):
    """Backoff of a retried pod (KFP set_retry): training resumes from its last checkpoint, a shard from its batches."""

    count: int = Field(2, ge=0, le=10)
    backoff: Duration = "60s"
    factor: float = Field(2.0, ge=1, le=10)
    max_backoff: Duration = "1h"


class Scheduling(Strict):
    """Cluster placement shared by all stages; per-stage requests are in `resources`."""

    pools: dict[str, GpuPool] = {}
    default_pool: str | None = Field(None, description="the pool of every GPU stage whose resources name none")
    pod_labels: dict[LabelKey, LabelValue] = Field({}, description="added to every pod (cost centre, team, ...)")
    retry: Retry = Retry()


# A storage size exactly as kfp's WorkspaceConfig accepts it, and a DNS-1123 subdomain (Kubernetes object names).
STORAGE_SIZE = r"^(0|[1-9][0-9]*)(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|K|M|G|T|P|E)?$"
K8S_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
KFP_WORKSPACE_MOUNT = "/kfp-workspace"


class ArtifactSettings(Strict):
    """How models pass between stages on a cluster (cong.storage.handoff).

    `artifacts` (the default): each model is its stage's KFP output artifact, uploaded to the pipeline root's
    store and downloaded by each stage that reads it; fine for models that fit. `workspace`: the weights stay in
    the run's KFP workspace (a PVC that KFP >= 2.15 creates for the run and deletes with it) and the artifacts
    hold pointers to them; `pvc`: the same on an existing claim that outlives the run. In both, the model of every
    method the run evaluates is also published to `storage` (runs/<KFP run id>/models/<method>/).
    """

    store: Literal["artifacts", "workspace", "pvc"] = "artifacts"
    workspace_size: str = Field(
        "200Gi",
        pattern=STORAGE_SIZE,
        max_length=32,
        description="workspace: size of the run's PVC (a Kubernetes quantity)",
    )
    storage_class: str | None = Field(
        None,
        pattern=K8S_NAME,
        max_length=253,
        description="workspace: storage class of the run's PVC; unset: the KFP server's default spec or the cluster's",
    )
    access_mode: Literal["ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"] = Field(
        "ReadWriteMany",
        description="workspace: the PVC's access mode; ReadWriteMany lets stages on different nodes mount it, "
        "ReadWriteOnce ties every model stage to one node",
    )
    pvc_name: str | None = Field(
        None,
        pattern=K8S_NAME,
        max_length=253,
        description="pvc: an existing ReadWriteMany PersistentVolumeClaim in the namespace the run executes in",
    )
    mount_path: str = Field(
        "/cong-models", pattern=r"^(/[A-Za-z0-9._\-]+)+$", description="pvc: where model stages mount the claim"
    )

    @model_validator(mode="after")
    def _fits_store(self) -> ArtifactSettings:
        if self.store == "pvc" and self.pvc_name is None:
            raise ValueError(
                "store 'pvc' needs pvc_name, the name of an existing ReadWriteMany PersistentVolumeClaim in the "
                "namespace the run executes in (or use store 'workspace', a claim that KFP creates for each run)"
            )
        if self.pvc_name is not None and self.store != "pvc":
            raise ValueError(f"pvc_name is read only with store 'pvc' (store is {self.store!r}): set both or neither")
        if self.storage_class is not None and self.store != "workspace":
            raise ValueError(
                f"storage_class is the class of the claim KFP creates with store 'workspace' (store is "
                f"{self.store!r}); with 'pvc' the existing claim has its own class"
            )
        if (self.mount_path + "/").startswith(KFP_WORKSPACE_MOUNT + "/"):
            raise ValueError(
                f"mount_path {self.mount_path!r} is inside {KFP_WORKSPACE_MOUNT}, where KFP mounts the run's "
                "workspace (and refuses other volumes); choose another folder, e.g. /cong-models"
            )
        return self


class PromotionSettings(Strict):
    """Champion/challenger gate of scheduled retraining: this run's model of `method` (the challenger) replaces
    the model published at `champion` only when there is none yet, or when it wins at least `threshold` of the
    held-out prompts against it (ties count half); evaluate's sampling settings and reward backend apply."""

    enabled: bool = False
    method: Literal[MODEL_METHODS] = Field("cong", description="the method whose model is the challenger")
    threshold: float = Field(0.55, gt=0, lt=1, description="the challenger's win rate needed to replace the champion")
    prompts: int | None = Field(
        None, ge=1, le=100000, description="compare on the first N eval prompts; default: every eval prompt"
    )
    champion: str | None = Field(
        None,
        pattern=r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/.+",
        description="the champion's folder; default s3://<storage.bucket>/<storage.prefix>/champion/<name>",
    )


class Resources(Strict):
    """One stage's pod: limits, requests (default: equal to the limits, Guaranteed QoS), GPUs and placement."""

    cpu: Quantity = "4"
    memory: Quantity = "32Gi"
    cpu_request: Quantity | None = None
    memory_request: Quantity | None = None
    gpus: int = Field(1, ge=0, le=64)
    pool: str | None = Field(None, description="a key of scheduling.pools (default: scheduling.default_pool)")
    shm: Quantity | None = Field(
        None, description="size of the memory-backed /dev/shm; mounted whenever gpus > 1 (NCCL needs it) or set"
    )
    timeout: Duration | None = None
    retries: int | None = Field(
        None, ge=0, le=10, description="default: scheduling.retry.count on training stages and sampling shards"
    )
    nodes: int = Field(
        1,
        ge=1,
        le=256,
        description="above 1, a training stage runs as a Kubeflow TrainJob on this many nodes, each "
        "with the cpu, memory and gpus above (sft and dpo)",
    )


class TrainJobSettings(Strict):
    """Training stages with `nodes` > 1 run as a Kubeflow Trainer v2 TrainJob (cong.cluster.trainjob)."""

    runtime: Literal["torch-distributed", "deepspeed-distributed"] = Field(
        "torch-distributed",
        description="the Trainer runtime: torchrun on every node, or mpirun from a launcher (DeepSpeed)",
    )
    runtime_ref: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
        description="the ClusterTrainingRuntime to use, when not the one named `runtime`: e.g. a copy of "
        "deepspeed-distributed whose node pods run this project's image (the Trainer sets the image of the "
        "launcher only)",
    )


class DistributedSettings(Strict):
    """Training stages with more than one GPU: one process per GPU under `accelerate launch`, DeepSpeed ZeRO."""

    zero_stage: Literal[2, 3] = Field(3, description="2: shard optimizer state and gradients; 3: weights too")
    offload: Literal["none", "optimizer", "optimizer_and_params"] = Field(
        "none", description="move optimizer state (and, with ZeRO-3, weights) to CPU memory: slower, fits more"
    )
    processes: int | None = Field(
        None, ge=1, le=1024, description="processes per training stage; default: the stage's GPU count"
    )

    @model_validator(mode="after")
    def _params_offload_needs_zero3(self) -> DistributedSettings:
        if self.offload == "optimizer_and_params" and self.zero_stage != 3:
            raise ValueError("offload 'optimizer_and_params' needs zero_stage 3 (ZeRO-2 keeps whole weights per GPU)")
        return self


def default_resources(stage: str) -> dict[str, Any]:
    """The pod a stage gets when the config names none, or under the keys its entry leaves out."""
    light = {"cpu": "1", "memory": "2Gi", "gpus": 0} if stage in LIGHT_STAGES else {}
    return Resources(**light).model_dump()
