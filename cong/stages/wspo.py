"""wspo: Weak-to-Strong Preference Optimization (method.md section 3), a trl SFTTrainer with the WSPO loss.

The strong policy learns to move away from its frozen initial copy (pi_S_ref) by 1/beta times the log-ratio by
which alignment moved the weak model (pi_r against pi_ref), token by token on the responses. All four models
read the same token ids, so the weak and strong models must share a tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from trl import SFTTrainer

from cong.config import Config, WspoSettings, config_from_dict
from cong.data import PROMPT_FIELDS, read_jsonl, training_rows
from cong.errors import CongError, stage_step
from cong.inputs.refs import resolve
from cong.models import load_model, load_tokenizer
from cong.stages.step import StepResult, aligned_weak, lineage, train_stage
from cong.storage.handoff import hand_over, model_dir
from cong.training.checkpoints import checkpoint_uri
from cong.training.losses import IGNORE_INDEX, token_logps, wspo_loss
from cong.training.trainers import sft_trainer_kwargs, train_and_save


class WspoTrainer(SFTTrainer):
    """SFTTrainer whose loss is WSPO's, against a frozen strong reference and the weak pair (all frozen)."""

    # The loss is a per-micro-batch mean, so the Trainer must divide it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, strong_ref, weak_base, weak_aligned, beta: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.strong_ref, self.weak_base, self.weak_aligned = (
            self._frozen_on_device(m) for m in (strong_ref, weak_base, weak_aligned)
        )
        self.beta = beta

    def _frozen_on_device(self, model):
        if self.is_deepspeed_enabled:
            from trl.models import prepare_deepspeed

            # Under ZeRO-3 the frozen models were loaded sharded too: an inference engine gathers their weights.
            return prepare_deepspeed(model, self.accelerator)
        return model.to(self.accelerator.device)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # trl's collator gives input_ids, attention_mask and labels (-100 on prompt and padding tokens).
        ids, attention, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
        outputs = model(input_ids=ids, attention_mask=attention, use_cache=False)
        with torch.no_grad():
            strong_ref, aligned, base = (
                token_logps(m(input_ids=ids, attention_mask=attention, use_cache=False).logits, labels)
                for m in (self.strong_ref, self.weak_aligned, self.weak_base)
            )
        mask = labels[:, 1:] != IGNORE_INDEX
        loss = wspo_loss(token_logps(outputs.logits, labels), strong_ref, aligned, base, mask, self.beta)
        return (loss, outputs) if return_outputs else loss


def _frozen(ref: str):
    model = load_model(ref)
    model.requires_grad_(False)
    return model


def _rows(data_path: str, stage: str) -> list[dict]:
    if "chosen" in read_jsonl(data_path, PROMPT_FIELDS, limit=1)[0]:
        # Preference pairs: WSPO learns from the chosen responses only.
        return [{**r, "response": r["chosen"]} for r in read_jsonl(data_path, ("id", "prompt", "chosen"))]
    return training_rows(data_path, stage)


def wspo_trainer(
    strong_base: str,
    weak_base: str,
    weak_aligned: str,
    data_path: str,
    model_dir: Path,
    settings: WspoSettings,
    stage: str = "wspo",
    deepspeed: dict[str, Any] | None = None,
) -> WspoTrainer:
    """WSPO of `strong_base` on the `chosen` (pairs) or `response` rows of `data_path`.

    `deepspeed` (a DeepSpeed config) when this process is one rank of several.
    """
    vocabulary = load_tokenizer(strong_base).get_vocab()
    for ref in (weak_base, weak_aligned):
        if load_tokenizer(ref).get_vocab() != vocabulary:
            raise CongError(
                f"the weak model {ref!r} does not share the tokenizer of the strong model {strong_base!r}; WSPO "
                "feeds the same token ids to the weak and strong models, so it needs one model family (use "
                "weak_sft or auxconf across families)."
            )
    return WspoTrainer(
        **sft_trainer_kwargs(strong_base, _rows(data_path, stage), settings.train, model_dir, stage, deepspeed),
        strong_ref=_frozen(strong_base),
        weak_base=_frozen(weak_base),
        weak_aligned=_frozen(weak_aligned),
        beta=settings.beta,
    )


def wspo(
    strong_base: str,
    weak_base: str,
    weak_aligned: str,
    data_path: str,
    model_dir: Path,
    settings: WspoSettings,
    stage: str = "wspo",
    checkpoints: str | None = None,
    deepspeed: dict[str, Any] | None = None,
) -> dict[str, float]:
    model_dir = Path(model_dir)
    trainer = wspo_trainer(strong_base, weak_base, weak_aligned, data_path, model_dir, settings, stage, deepspeed)
    return train_and_save(trainer, stage, model_dir / "checkpoints", model_dir, checkpoints)


def train(
    cfg: Config, inputs: dict[str, str], output: Path, method: str, deepspeed: dict | None, checkpoints: str | None
) -> dict[str, float]:
    """The training entry (cong.stages.step.run_training): WSPO of the strong base against the weak pair."""
    if "weak_aligned" not in inputs and cfg.models.weak_aligned is None:
        raise CongError("wspo needs an aligned weak model: pass the input weak_aligned or set models.weak_aligned.")
    aligned = inputs.get("weak_aligned") or resolve(cfg.models.weak_aligned, cfg)
    models = (resolve(cfg.models.strong_base, cfg), resolve(cfg.models.weak_base, cfg), aligned)
    return wspo(*models, inputs["data"], output, cfg.training_stages().wspo, "wspo", checkpoints, deepspeed)


@stage_step
def step(config: dict, data: str, weak_aligned: str, model: str, model_store: str = "", run_id: str = "") -> StepResult:
    cfg = config_from_dict(config)
    s = cfg.training_stages().wspo
    target = model_dir(model, model_store)
    inputs = {"data": data, "weak_aligned": aligned_weak(cfg, weak_aligned, model_store)}
    metrics = train_stage(cfg, "wspo", inputs, target, checkpoints=checkpoint_uri(cfg.storage, run_id, "wspo"))
    return {
        "metrics": metrics,
        "metadata": {
            "model": lineage(
                cfg,
                "wspo",
                base_model=cfg.models.strong_base,
                weak_base=cfg.models.weak_base,
                beta=s.beta,
                learning_rate=s.train.learning_rate,
                train_rows=metrics["train_rows"],
            )
            | hand_over(cfg, model, target, "wspo", run_id)
        },
    }
