"""`Config`: one typed, validated configuration per run, the ML settings (cong.config.stages) and the cluster's
(cong.config.cluster) together."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from cong.config.cluster import (
    ArtifactSettings,
    DistributedSettings,
    GpuPool,
    PromotionSettings,
    Resources,
    Scheduling,
    StorageSettings,
    TrainJobSettings,
    default_resources,
)
from cong.config.stages import (
    DataSettings,
    MethodName,
    ModelSettings,
    StageSettings,
    Strict,
    TestbedSettings,
    TrainSettings,
    TrainSettingsT,
)
from cong.vocabulary import METHODS, MULTI_NODE_STAGES, STAGES


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
    input_origins: dict[str, str] = Field(
        {},
        description="set by `cong run` when it publishes local inputs to the store: each input field's reference "
        "as the user gave it, which its artifact in the DAG records",
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
