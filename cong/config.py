"""One typed, validated configuration per run.

A run is described by one YAML file. It may start from a shipped preset (`extends: tiny`) and override
any key. Defaults are the paper's (method.md section 2); the `tiny` preset scales the learning rates and
lengths to the testbed's small models, which learn nothing at 7B-model learning rates.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import annotated_types
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from cong.errors import CongError

PRESET_PACKAGE = "cong.presets"
STAGES = (
    "plan",
    "weak_align",
    "weak_sample",
    "cd_sample",
    "sft",
    "strong_sample",
    "pair",
    "dpo",
    "auxconf",
    "wspo",
    "icl_refine",
    "wsd",
    "alpha_sweep",
    "evaluate",
    "promote",
    "merge_shards",
)
# Rows of the comparison table, in the order the report shows them. `weak_aligned` is the weak teacher.
METHODS = ("base", "weak_aligned", "weak_sft", "auxconf", "wspo", "icl_refine", "wsd", "wsd_sft", "cong_s", "cong")
MethodName = Literal[(*METHODS, "all")]
# Methods whose row is a trained strong model: the ones a champion/challenger gate can promote.
MODEL_METHODS = ("weak_sft", "auxconf", "wspo", "icl_refine", "wsd_sft", "cong_s", "cong")
# Methods whose loss compares weak and strong log-probabilities token by token.
SHARED_VOCAB_METHODS = ("wspo",)
# Stages that can train on more than one node (as a Kubeflow TrainJob, cong.cluster.trainjob).
MULTI_NODE_STAGES = ("sft", "dpo")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSettings(Strict):
    r: int = Field(16, ge=1, le=1024)
    alpha: int = Field(32, ge=1, le=4096)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class TrainSettings(Strict):
    """What every training stage shares (trl SFTConfig / DPOConfig fields)."""

    learning_rate: float = Field(gt=0, le=1)
    epochs: float = Field(1.0, gt=0, le=100)
    per_device_batch_size: int = Field(2, ge=1, le=4096)
    gradient_accumulation_steps: int = Field(8, ge=1, le=4096)
    max_length: int = Field(2048, ge=8, le=131072)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0, le=1)
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 on a GPU that has it, fp32 otherwise (bf16 is 12x slower on CPU)"
    )
    lora: LoraSettings | None = None
    seed: int = Field(0, ge=0, description="trainer seed (data order, dropout, LoRA init)")


TrainSettingsT = TypeVar("TrainSettingsT", bound=TrainSettings)


class DpoSettings(TrainSettings):
    beta: float = Field(0.1, gt=0, le=100)
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"


class DecodingSettings(Strict):
    """How a stage picks tokens: sampled (the paper's T 0.8, top-p 0.95) or greedy (argmax)."""

    temperature: float = Field(0.8, gt=0, le=10)
    top_p: float = Field(0.95, gt=0, le=1)
    repetition_penalty: float = Field(1.0, ge=1, le=10)
    seed: int = Field(0, ge=0)
    greedy: bool = Field(False, description="argmax decoding: temperature, top_p and seed go unused")


class SamplingSettings(DecodingSettings):
    """A decoding, with the response budget and the batch it decodes in."""

    max_new_tokens: int = Field(2048, ge=1, le=32768)
    batch_size: int = Field(32, ge=1, le=4096)


# Sampling stages split their prompts over this many pods (dsl.ParallelFor), each a share of whole batches
# (cong.stages.shards), then merge them; 1 keeps one pod.
ShardCount = Annotated[int, Field(ge=1, le=1024, description="pods that sample the stage's prompts in parallel")]


RewardBackendName = Literal["testbed", "reward_model", "implicit", "implicit_sum"]


class RewardChoice(Strict):
    """Which reward scores responses (cong.evaluation.rewards): the testbed's programmatic reward, a Hugging Face
    sequence-classification reward model, or the implicit reward under the weak pair (per token or summed)."""

    reward_backend: RewardBackendName = "testbed"
    reward_model: str | None = Field(
        None, description="reward_model backend: a sequence-classification reward model (hub id, path or s3:// URI)"
    )
    reward_batch_size: int = Field(8, ge=1, le=1024)

    @model_validator(mode="after")
    def _model_named(self) -> RewardChoice:
        if (self.reward_backend == "reward_model") != (self.reward_model is not None):
            raise ValueError(
                "reward_model names the reward model of reward_backend: reward_model, and only of it; "
                f"got reward_backend {self.reward_backend!r} with reward_model {self.reward_model!r}"
            )
        return self


class WeakAlignSettings(RewardChoice):
    sample_seeds: list[int] = Field([13, 21, 42, 79, 100], min_length=2)
    sampling: SamplingSettings = SamplingSettings()
    train: DpoSettings = DpoSettings(learning_rate=8e-7, beta=0.1)

    @field_validator("reward_backend")
    @classmethod
    def _explicit(cls, name: str) -> str:
        if name.startswith("implicit"):
            raise ValueError(
                "weak_align ranks the weak base's samples to align it, and the implicit reward needs the aligned "
                "weak model it makes. Use testbed or reward_model."
            )
        return name

    @field_validator("sampling")
    @classmethod
    def _drawn(cls, sampling: SamplingSettings) -> SamplingSettings:
        if sampling.greedy:
            raise ValueError(
                "weak_align pairs the best of several samples per prompt against the worst; greedy "
                "decoding gives one answer per prompt. Set greedy: false."
            )
        return sampling


class WeakSampleSettings(Strict):
    """Weak labels for WeakSFT, AuxConf and ICL refinement: one sample per train prompt from a weak model."""

    source: Literal["weak_aligned", "weak_base"] = Field(
        "weak_aligned", description="pi_r (default) or pi_ref; the paper leaves this open (method.md section 3)"
    )
    sampling: SamplingSettings = SamplingSettings(seed=1)
    shards: ShardCount = 1


class CdSampleSettings(Strict):
    alpha: float = Field(0.4, ge=0, le=1)
    relative_top: float = Field(0.1, gt=0, le=1)
    score_form: Literal["spec", "authors"] = Field(
        "spec",
        description="spec: F of method.md; authors: the released code's scores, F plus about (1 - alpha) * log|V| "
        "on the head, on which the repetition penalty acts far more strongly (method.md section 1)",
    )
    sampling: SamplingSettings = SamplingSettings(repetition_penalty=1.2, seed=0)
    shards: ShardCount = 1
    shared_weights: bool = Field(
        True,
        description="when the aligned weak model carries its LoRA adapter (weak_align.train.lora), decode from one "
        "copy of the weak base, the adapter on for the expert's rows and off for the amateur's",
    )


class SftSettings(Strict):
    train: TrainSettings = TrainSettings(learning_rate=1e-5, epochs=2)


class StrongSampleSettings(Strict):
    sampling: SamplingSettings = SamplingSettings(seed=50)
    shards: ShardCount = 1


class DpoStageSettings(Strict):
    train: DpoSettings = DpoSettings(learning_rate=6e-7, beta=0.5)


class WeakSftSettings(Strict):
    train: TrainSettings = TrainSettings(learning_rate=1e-5, epochs=1)


class AuxConfSettings(Strict):
    """Burns et al.'s auxiliary confidence loss adapted to generation (ours; method.md section 3)."""

    aux_coef: float = Field(0.5, ge=0, le=1, description="final weight c of the strong model's own argmax")
    ramp_fraction: float = Field(0.1, ge=0, le=1, description="share of steps over which c ramps up from 0")
    train: TrainSettings = TrainSettings(learning_rate=1e-5, epochs=1)


class WspoSettings(Strict):
    beta: float = Field(0.1, gt=0, le=100)
    train: TrainSettings = TrainSettings(learning_rate=1e-5, epochs=1)


class IclRefineSettings(Strict):
    """Somerstep et al.: weak labels refined in context by the strong base model, then SFT (method.md 4.2)."""

    batch_size: int = Field(5, ge=2, le=64, description="B: each prompt sees the other B-1 pairs of its batch")
    variant: Literal["refine", "infer_and_respond"] = "refine"
    format: Literal["text", "chat"] = Field(
        "text", description="text: plain `Question:/Answer:` completion (paper, base models); chat: pairs as turns"
    )
    max_new_tokens: int = Field(2048, ge=1, le=32768)
    style_max_new_tokens: int = Field(64, ge=1, le=4096, description="infer_and_respond: the style sentence")
    decode_batch_size: int = Field(32, ge=1, le=4096)
    decoding: DecodingSettings = Field(
        DecodingSettings(greedy=True), description="how the strong model writes the refined labels (paper: greedy)"
    )
    train: TrainSettings = TrainSettings(learning_rate=1e-5, epochs=1)


class WsdSettings(Strict):
    """Weak-to-Strong Decoding (method.md 4.1); `train` is the SFT of the wsd_sft method on WSD responses.

    `decoding` and `max_total_tokens` are how WSD writes wsd_sft's training labels on the train prompts. The WSD
    row of the comparison is decoded as every row is: `stages.evaluate.sampling` (and greedily), with evaluate's
    `max_new_tokens` as its total budget."""

    window: int = Field(6, ge=1, le=1024)
    threshold: float = Field(0.8, gt=0, le=1)
    draft_max_new_tokens: int = Field(512, ge=1, le=32768)
    max_total_tokens: int = Field(2048, ge=1, le=32768, description="kept draft + strong continuation")
    batch_size: int = Field(32, ge=1, le=4096)
    decoding: DecodingSettings = Field(
        DecodingSettings(greedy=True), description="draft and continuation of the training labels (paper: greedy)"
    )
    train: TrainSettings = TrainSettings(learning_rate=1e-5, epochs=1)


class AlphaSweepSettings(Strict):
    """CD at each alpha on the first `prompts` eval prompts (decoding settings from `cd_sample`)."""

    alphas: list[Annotated[float, Field(ge=0, le=1)]] = []
    prompts: int = Field(32, ge=1, le=100000)


class JudgeSettings(Strict):
    """A pairwise LLM judge behind an OpenAI-compatible endpoint (cong.evaluation.judge); the endpoint's base URL
    and API key come from the environment variables named here (on a cluster, from a Secret)."""

    model: str = Field(description="the model name the endpoint serves")
    endpoint_env: str = "CONG_JUDGE_ENDPOINT"
    api_key_env: str = "CONG_JUDGE_API_KEY"
    secret: str | None = Field(
        "cong-judge",
        description="on a cluster, the Secret whose keys endpoint_env and api_key_env (optional) become the evaluate "
        "pod's environment variables of those names; null when the pod's environment has them otherwise",
    )
    max_tokens: int = Field(4, ge=1, le=64)


class DownstreamTask(Strict):
    """A held-out task set for the alignment tax (cong.evaluation.downstream): JSONL rows `{"id", "prompt", "answer"}`
    (or `testbed:eval`, whose rows carry answers), answered greedily and scored by `match`."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    data: str = Field(min_length=1)
    match: Literal["exact", "whole_word"] = Field(
        "exact",
        description="exact: the response, normalised (case, spacing, final punctuation), equals the answer; "
        "whole_word: the answer appears in the response as a whole word or phrase",
    )
    max_prompts: int | None = Field(None, ge=1)
    max_new_tokens: int = Field(64, ge=1, le=4096)


class EvaluateSettings(RewardChoice):
    """Every row is decoded twice on the held-out prompts: by `sampling` (the primary figures, `<metric>`; the
    paper's sampled setting) and greedily (`greedy_<metric>`)."""

    sampling: SamplingSettings = SamplingSettings(seed=7)
    judge: JudgeSettings | None = None
    downstream: list[DownstreamTask] = []
    lm_eval_tasks: list[str] = Field(
        [], description="lm-evaluation-harness tasks, run when the `lm-eval` extra is installed (skipped otherwise)"
    )
    lm_eval_limit: int | None = Field(None, ge=1, description="examples per lm-eval task (default: all)")

    def decodings(self) -> dict[str, SamplingSettings]:
        """Every row's two decodings by the prefix of their metrics: "" (primary, `sampling`) and "greedy_"."""
        return {"": self.sampling, "greedy_": self.sampling.model_copy(update={"greedy": True})}

    @field_validator("downstream")
    @classmethod
    def _distinct(cls, tasks: list[DownstreamTask]) -> list[DownstreamTask]:
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"downstream task names must differ; got {names}")
        return tasks


class StageSettings(Strict):
    weak_align: WeakAlignSettings = WeakAlignSettings()
    weak_sample: WeakSampleSettings = WeakSampleSettings()
    cd_sample: CdSampleSettings = CdSampleSettings()
    sft: SftSettings = SftSettings()
    strong_sample: StrongSampleSettings = StrongSampleSettings()
    dpo: DpoStageSettings = DpoStageSettings()
    weak_sft: WeakSftSettings = WeakSftSettings()
    auxconf: AuxConfSettings = AuxConfSettings()
    wspo: WspoSettings = WspoSettings()
    icl_refine: IclRefineSettings = IclRefineSettings()
    wsd: WsdSettings = WsdSettings()
    alpha_sweep: AlphaSweepSettings = AlphaSweepSettings()
    evaluate: EvaluateSettings = EvaluateSettings()

    def sft_train(self, method: str) -> TrainSettings:
        """The trainer settings of the sft stage for one method (ConG-S, WeakSFT, ICL refinement, WSD-SFT)."""
        settings = {
            "cong_s": self.sft.train,
            "weak_sft": self.weak_sft.train,
            "icl_refine": self.icl_refine.train,
            "wsd_sft": self.wsd.train,
        }
        if method not in settings:
            raise CongError(f"sft: unknown method {method!r}; the SFT stage trains {', '.join(settings)}.")
        return settings[method]


class ModelSettings(Strict):
    """Model references: a local directory, a Hugging Face id, or `testbed:weak` / `testbed:strong`."""

    weak_base: str = Field(min_length=1)
    weak_aligned: str | None = Field(None, description="supply an aligned weak model to skip weak_align")
    strong_base: str = Field(min_length=1)


class DataSettings(Strict):
    """Prompt sets: a JSONL file with `{"id": ..., "prompt": ...}` rows, or `testbed:train` / `testbed:eval`."""

    train_prompts: str = Field(min_length=1)
    eval_prompts: str = Field(min_length=1)
    max_train_prompts: int | None = Field(None, ge=1)
    max_eval_prompts: int | None = Field(None, ge=1)


class TestbedSettings(Strict):
    """The synthetic world of the embedded default (cong.testbed). Cached by a hash of these values."""

    seed: int = Field(0, ge=0)
    n_train_prompts: int = Field(256, ge=8, le=100000)
    n_eval_prompts: int = Field(128, ge=8, le=100000)
    n_pretrain_docs: int = Field(6000, ge=100, le=1000000)
    strong_only_share: float = Field(
        0.3, ge=0, lt=1, description="share of prompts from the families only the strong model learns (sort, reverse)"
    )
    aligned_fraction: float = Field(0.15, gt=0, lt=1, description="share of the aligned style in pretraining")
    multi_turn_fraction: float = Field(
        0.3, ge=0, le=1, description="share of pretraining chats with 2 to max_turns turns in one style"
    )
    max_turns: int = Field(4, ge=2, le=16)
    vocab_size: int = Field(600, ge=300, le=8192)
    weak_hidden: int = Field(48, ge=8, le=4096)
    weak_layers: int = Field(1, ge=1, le=64)
    strong_hidden: int = Field(128, ge=8, le=4096)
    strong_layers: int = Field(4, ge=1, le=64)
    pretrain_steps: int = Field(1500, ge=1, le=100000)
    pretrain_batch_size: int = Field(16, ge=1, le=4096, description="packed rows per pretraining step")
    pretrain_context: int = Field(128, ge=16, le=8192, description="tokens per packed row (whole chats)")
    pretrain_learning_rate: float = Field(3e-3, gt=0, le=1)
    instruct_steps: int = Field(
        300, ge=0, le=100000, description="chat SFT of the weak model after pretraining (its Instruct version)"
    )
    instruct_aligned_fraction: float = Field(0.4, ge=0, le=1, description="share of the aligned style in its chats")
    instruct_learning_rate: float = Field(1e-3, gt=0, le=1)


class StorageSettings(Strict):
    """Where a local run imports its inputs (s3://<bucket>/<prefix>/inputs/) and publishes what it made
    (s3://<bucket>/<prefix>/runs/<run id>/). The endpoint and credentials come from the environment only."""

    bucket: str = Field("cong", pattern=r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
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

    def uri(self, *parts: str) -> str:
        keys = [self.prefix.strip("/"), *parts]
        return f"s3://{self.bucket}/" + "/".join(k for k in keys if k)


Quantity = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")]
Duration = Annotated[str, Field(pattern=r"^[0-9]+[smhd]$", description="e.g. 90s, 30m, 12h, 2d")]
_LABEL_NAME = r"[A-Za-z0-9]([A-Za-z0-9_.\-]{0,61}[A-Za-z0-9])?"
LabelValue = Annotated[str, Field(pattern=rf"^({_LABEL_NAME})?$")]
# An optional DNS-subdomain prefix, then a name (Kubernetes label keys).
LabelKey = Annotated[str, Field(pattern=rf"^([a-z0-9]([a-z0-9.\-]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$")]
TRAINING_STAGES = ("weak_align", "sft", "dpo", "auxconf", "wspo")
# Stages whose pods are retried by default: training resumes from its last checkpoint (cong.training.checkpoints), a
# sampling shard from its finished batches (cong.stages.shards).
RESUMABLE_STAGES = (*TRAINING_STAGES, "weak_sample", "cd_sample", "strong_sample")


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


class Config(Strict):
    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    models: ModelSettings
    data: DataSettings
    testbed: TestbedSettings = TestbedSettings()
    stages: StageSettings = StageSettings()
    methods: list[MethodName] = Field(
        ["all"], min_length=1, validate_default=True, description="table rows; `all` selects every method"
    )
    resources: dict[Literal[STAGES], Resources] = {}
    scheduling: Scheduling = Scheduling()
    storage: StorageSettings = StorageSettings()
    trainjob: TrainJobSettings = TrainJobSettings()
    artifacts: ArtifactSettings = ArtifactSettings()
    distributed: DistributedSettings = DistributedSettings()
    pipeline_root: str | None = Field(None, description="KFP pipeline root (local folder or s3:// URI)")
    promotion: PromotionSettings = PromotionSettings()
    learning_rate_scale: float = Field(
        1.0,
        gt=0,
        le=1e6,
        description="the one learning-rate rule: every training stage trains at its stated learning rate (the "
        "paper's, by default) times this factor, so that models far smaller than the paper's keep its ratios",
    )
    allow_failed_gates: bool = Field(
        False, description="run on a world or weak pair that fails a gate (cong.evaluation.gates); every output says so"
    )

    @model_validator(mode="after")
    def _check_nodes(self) -> Config:
        for stage, r in self.resources.items():
            if r.nodes > 1 and stage not in MULTI_NODE_STAGES:
                # Raised with the field's own location, so the message names resources.<stage>.nodes.
                message = (
                    f"only {' and '.join(MULTI_NODE_STAGES)} train on more than one node (as a Kubeflow TrainJob); "
                    "set nodes: 1 here"
                )
                detail = InitErrorDetails(
                    type=PydanticCustomError("nodes", message), loc=("resources", stage, "nodes"), input=r.nodes
                )
                raise ValidationError.from_exception_data("Config", [detail])
        return self

    @field_validator("methods")
    @classmethod
    def _expand_methods(cls, methods: list[str]) -> list[str]:
        chosen = set(METHODS) if "all" in methods else set(methods)
        return [m for m in METHODS if m in chosen]

    @model_validator(mode="after")
    def _pools_exist(self) -> Config:
        named = {"scheduling.default_pool": self.scheduling.default_pool}
        named.update({f"resources.{stage}.pool": r.pool for stage, r in self.resources.items()})
        for field, pool in named.items():
            if pool is not None and pool not in self.scheduling.pools:
                known = ", ".join(sorted(self.scheduling.pools)) or "none defined"
                raise ValueError(f"{field} names GPU pool '{pool}', which scheduling.pools does not define ({known})")
        return self

    def pool_for(self, stage: str) -> GpuPool | None:
        """The GPU pool a stage's pods go to; None for a stage without GPUs or a config without pools."""
        r = self.resources_for(stage)
        name = r.pool or self.scheduling.default_pool
        return self.scheduling.pools[name] if r.gpus and name else None

    @field_validator("promotion")
    @classmethod
    def _challenger_in_methods(cls, promotion: PromotionSettings, info: ValidationInfo) -> PromotionSettings:
        methods = info.data.get("methods")  # absent when `methods` itself is invalid
        if promotion.enabled and methods is not None and promotion.method not in methods:
            raise ValueError(
                f"promotion.method {promotion.method!r} is not among the run's methods ({', '.join(methods)}): "
                "add it to `methods`, or promote one of them"
            )
        return promotion

    def champion_uri(self) -> str:
        """Where the promoted model lives: `promotion.champion`, or one folder per config under the run storage."""
        return self.promotion.champion or self.storage.uri("champion", self.name)

    def resources_for(self, stage: str) -> Resources:
        """The stage's resources from the config, else its default (`default_resources`)."""
        if stage in self.resources:
            return self.resources[stage]
        if stage == "promote":
            return self.resources_for("evaluate")
        return Resources.model_validate(default_resources(stage))

    def stage_settings(self, stage: str, method: str | None = None) -> dict[str, Any]:
        """The resolved settings a stage runs with, as its outputs' lineage records them (empty for a stage with
        none): sft's are the trainer settings of its method, merge_shards' those of the stage it merges, and
        alpha_sweep decodes with cd_sample's."""
        stages = self.training_stages()
        if stage == "sft":
            chosen: Any = {"train": stages.sft_train(method or "cong_s")}
        elif stage == "alpha_sweep":
            chosen = {**dict(stages.alpha_sweep), "cd_sample": stages.cd_sample}
        elif stage == "promote":
            chosen = self.promotion
        elif stage in StageSettings.model_fields:
            chosen = getattr(stages, stage)
        else:
            return {}
        return _json(chosen)

    def trained(self, train: TrainSettingsT) -> TrainSettingsT:
        """`train` as a trainer uses it: its learning rate times learning_rate_scale."""
        return train.model_copy(update={"learning_rate": train.learning_rate * self.learning_rate_scale})

    def training_stages(self) -> StageSettings:
        """The stage settings with every `train` as trainers use it (`trained`)."""
        update = {}
        for name in StageSettings.model_fields:
            stage = getattr(self.stages, name)
            if isinstance(getattr(stage, "train", None), TrainSettings):
                update[name] = stage.model_copy(update={"train": self.trained(stage.train)})
        return self.stages.model_copy(update=update)

    def as_parameter(self) -> dict[str, Any]:
        """The config as a pipeline parameter value (protobuf structs have no null, so unset keys go)."""
        return self.model_dump(mode="json", exclude_none=True)

    def uses_testbed(self) -> bool:
        refs = [self.models.weak_base, self.models.strong_base, self.data.train_prompts, self.data.eval_prompts]
        return any(ref.startswith("testbed:") for ref in refs)


def _json(value: Any) -> Any:
    """Settings as plain JSON values, unset (None) keys left out."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items() if v is not None}
    return value


def preset_names() -> list[str]:
    files = resources.files(PRESET_PACKAGE).iterdir()
    return sorted(f.name.removesuffix(".yaml") for f in files if f.name.endswith(".yaml"))


@functools.cache
def _preset_yaml(name: str) -> Any:
    """A preset file as parsed (read once per process; callers get copies)."""
    return yaml.safe_load(resources.files(PRESET_PACKAGE).joinpath(f"{name}.yaml").read_text())


def _preset_dict(name: str) -> dict[str, Any]:
    if name not in preset_names():
        raise CongError(f"unknown preset '{name}'. Available presets: {', '.join(preset_names())}.")
    return _with_parent(copy.deepcopy(_preset_yaml(name)), f"preset {name}")


# Stages that never touch a model: one core and no GPU unless the config says otherwise.
LIGHT_STAGES = ("plan", "pair", "merge_shards")


def default_resources(stage: str) -> dict[str, Any]:
    """The pod a stage gets when the config names none, or under the keys its entry leaves out."""
    light = {"cpu": "1", "memory": "2Gi", "gpus": 0} if stage in LIGHT_STAGES else {}
    return Resources(**light).model_dump()


def defaults() -> dict[str, Any]:
    """Every setting's default, nested: a settings object that is the default of a field contributes its own
    values, so `stages.cd_sample.sampling` holds cd_sample's defaults (repetition penalty 1.2, seed 0), not
    SamplingSettings' generic ones. Required fields (`name`, `models`, `data`) have none."""
    tree: dict[str, Any] = {}
    for name, field in Config.model_fields.items():
        if not field.is_required():
            default = field.get_default(call_default_factory=True)
            tree[name] = default.model_dump() if isinstance(default, BaseModel) else copy.deepcopy(default)
    return tree


def with_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """`data` on top of `defaults()`: every mapping overrides only the keys it names, at every depth. Each
    `resources.<stage>` entry lies on top of that stage's default pod (promote's: evaluate's entry)."""
    merged = _merge(defaults(), data)
    pods = merged.get("resources")
    if isinstance(pods, dict):
        pods = {
            stage: _merge(default_resources(stage), own) if isinstance(own, dict) else own
            for stage, own in pods.items()
        }
        if isinstance(pods.get("promote"), dict) and isinstance(pods.get("evaluate"), dict):
            pods["promote"] = _merge(pods["evaluate"], data["resources"]["promote"])
        merged["resources"] = pods
    return merged


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _with_parent(raw: Any, source: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise CongError(f"{source}: a config must be a YAML mapping of keys to values, got {type(raw).__name__}.")
    parent = raw.pop("extends", None)
    return _merge(_preset_dict(parent), raw) if parent else raw


def _field_range(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """The allowed values of the field at `loc`, read from its declared constraints."""
    field = None
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            break
        field = model.model_fields[part]
        annotation = field.annotation
        model = next((a for a in getattr(annotation, "__args__", ()) if isinstance(a, type)), annotation)
    if field is None:
        return ""
    symbols = {annotated_types.Ge: ">=", annotated_types.Gt: ">", annotated_types.Le: "<=", annotated_types.Lt: "<"}
    bounds = [
        f"{symbols[type(m)]} {getattr(m, type(m).__name__.lower())}" for m in field.metadata if type(m) in symbols
    ]
    return f" (allowed: {' and '.join(bounds)})" if bounds else ""


def _format_errors(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "<top level>"
        given = "" if item["type"] == "missing" else f" = {item.get('input')!r}"
        lines.append(f"  {path}{given}: {item['msg']}{_field_range(Config, item['loc'])}")
    lines.append("Fix the value(s) above; `cong validate FILE` checks a config without running it.")
    return "\n".join(lines)


def load_config(
    path: str | Path | None = None, preset: str | None = None, overrides: dict[str, Any] | None = None
) -> Config:
    """Load a config file (which may `extends:` a preset), or a preset by name, or the `tiny` default.

    `overrides` (e.g. from command-line flags) are merged last, then the whole config is validated.
    """
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise CongError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(read_text(path))
        except yaml.YAMLError as exc:
            raise CongError(f"{path} is not valid YAML: {exc}") from None
        data = _with_parent(raw, str(path))
        if preset:
            data = _merge(_preset_dict(preset), data)
        source = str(path)
    else:
        data = _preset_dict(preset or "tiny")
        source = f"preset {preset or 'tiny'}"
    if overrides:
        data = _merge(data, overrides)
        source += " with command-line overrides"
    try:
        return Config.model_validate(with_defaults(data))
    except ValidationError as exc:
        raise CongError(_format_errors(exc, source)) from None


def read_text(path: Path) -> str:
    """A UTF-8 text file; bytes that are not UTF-8 stop with a message naming the file, line and column."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise CongError(
            f"{path}, line {line}, column {column}: not UTF-8 (byte {raw[exc.start : exc.start + 1]!r}). Save the "
            "file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
        ) from None


def config_from_dict(data: dict[str, Any]) -> Config:
    """Re-validate a config passed between pipeline tasks as a plain dict."""
    try:
        return Config.model_validate(with_defaults(data))
    except ValidationError as exc:
        raise CongError(_format_errors(exc, "pipeline parameter 'config'")) from None
