"""auxconf: Burns et al.'s auxiliary confidence loss, adapted by us to generation (method.md section 3).

Burns et al. define it for classification; the per-token version here is ours: the strong model trains on weak
responses against the target (1 - c) * onehot(weak token) + c * onehot(its own argmax, detached), with c ramping
linearly from 0 to `aux_coef` over the first `ramp_fraction` of the steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trl import SFTTrainer

from cong.config import AuxConfSettings, Config, config_from_dict
from cong.data import training_rows
from cong.errors import stage_step
from cong.inputs.refs import resolve
from cong.stages.step import StepResult, lineage, train_stage
from cong.storage.handoff import hand_over, model_dir
from cong.training.checkpoints import checkpoint_uri
from cong.training.losses import aux_coef_at, auxconf_loss
from cong.training.trainers import sft_trainer_kwargs, train_and_save


class AuxConfTrainer(SFTTrainer):
    """SFTTrainer whose token loss mixes the weak label with the strong model's own hardened prediction."""

    # The loss is a per-micro-batch mean, so the Trainer must divide it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, aux_coef: float, ramp_fraction: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.aux_coef, self.ramp_fraction = aux_coef, ramp_fraction

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # trl's collator gives input_ids, attention_mask and labels (-100 on prompt and padding tokens).
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        coef = aux_coef_at(self.state.global_step, self.state.max_steps, self.aux_coef, self.ramp_fraction)
        loss = auxconf_loss(outputs.logits[:, :-1], inputs["labels"][:, 1:], coef)
        self._metrics["train" if model.training else "eval"]["aux_coef"].append(coef)
        return (loss, outputs) if return_outputs else loss


def auxconf(
    strong_base: str,
    data_path: str,
    model_dir: Path,
    settings: AuxConfSettings,
    stage: str = "auxconf",
    checkpoints: str | None = None,
    deepspeed: dict[str, Any] | None = None,
) -> dict[str, float]:
    """AuxConf training of `strong_base` on the weak model's `response` rows of `data_path`.

    `deepspeed` (a DeepSpeed config) when this process is one rank of several.
    """
    model_dir = Path(model_dir)
    rows = training_rows(data_path, stage)
    trainer = AuxConfTrainer(
        **sft_trainer_kwargs(strong_base, rows, settings.train, model_dir, stage, deepspeed),
        aux_coef=settings.aux_coef,
        ramp_fraction=settings.ramp_fraction,
    )
    return train_and_save(trainer, stage, model_dir / "checkpoints", model_dir, checkpoints)


def train(
    cfg: Config, inputs: dict[str, str], output: Path, method: str, deepspeed: dict | None, checkpoints: str | None
) -> dict[str, float]:
    """The training entry (cong.stages.step.run_training): AuxConf training of the strong base."""
    settings = cfg.training_stages().auxconf
    strong_base = resolve(cfg.models.strong_base, cfg)
    return auxconf(strong_base, inputs["data"], output, settings, "auxconf", checkpoints, deepspeed)


@stage_step
def step(config: dict, data: str, model: str, model_store: str = "", run_id: str = "") -> StepResult:
    cfg = config_from_dict(config)
    s = cfg.training_stages().auxconf
    target = model_dir(model, model_store)
    metrics = train_stage(
        cfg, "auxconf", {"data": data}, target, checkpoints=checkpoint_uri(cfg.storage, run_id, "auxconf")
    )
    return {
        "metrics": metrics,
        "metadata": {
            "model": lineage(
                cfg,
                "auxconf",
                base_model=cfg.models.strong_base,
                aux_coef=s.aux_coef,
                ramp_fraction=s.ramp_fraction,
                learning_rate=s.train.learning_rate,
                train_rows=metrics["train_rows"],
            )
            | hand_over(cfg, model, target, "auxconf", run_id)
        },
    }
