"""The ML settings of a run: every stage's settings, the models, the data and the testbed world (method.md
section 2 gives the paper's defaults, which are these)."""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cong.errors import CongError
from cong.vocabulary import METHODS

MethodName = Literal[(*METHODS, "all")]


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
        """The trainer settings of the sft stage for one method (ConG-S, WeakSFT, ICL refinement, WSD-SFT, and the
        strong ceiling, which trains by ConG-S's SFT recipe)."""
        settings = {
            "cong_s": self.sft.train,
            "strong_ceiling": self.sft.train,
            "weak_sft": self.weak_sft.train,
            "icl_refine": self.icl_refine.train,
            "wsd_sft": self.wsd.train,
        }
        if method not in settings:
            raise CongError(f"sft: unknown method {method!r}; the SFT stage trains {', '.join(settings)}.")
        return settings[method]


class ModelSettings(Strict):
    """Model references: a local directory, an s3:// URI, a Hugging Face id (pinned with `@<branch, tag or commit>`),
    or `testbed:weak` / `testbed:strong`."""

    weak_base: str = Field(min_length=1)
    weak_aligned: str | None = Field(None, description="supply an aligned weak model to skip weak_align")
    strong_base: str = Field(min_length=1)


class DataSettings(Strict):
    """Prompt sets: a JSONL file with `{"id": ..., "prompt": ...}` rows, `hf:<dataset>[:<split>]`, or `testbed:train` /
    `testbed:eval`. A train row's optional `reference` (its preferred response) is what the strong ceiling imitates."""

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
