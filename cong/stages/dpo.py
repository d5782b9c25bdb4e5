"""dpo: preference optimisation of a policy against its own frozen initial copy (trl DPOTrainer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cong.config import Config, DpoSettings, config_from_dict
from cong.data import PAIR_FIELDS, read_jsonl
from cong.errors import stage_step
from cong.models import load_tokenizer
from cong.stages.step import StepResult, lineage, train_stage
from cong.storage.handoff import follow, hand_over, model_dir
from cong.training.checkpoints import checkpoint_uri
from cong.training.trainers import dpo_args, peft_config, progress_callback, train_and_save

# What dpo's lineage says its reference model is: trl's frozen copy of the policy it starts from (the input `model`).
DPO_REFERENCE = "input model, frozen"


def dpo(
    model_ref: str,
    pairs_path: str,
    model_dir: Path,
    settings: DpoSettings,
    stage: str = "dpo",
    checkpoints: str | None = None,
    deepspeed: dict[str, Any] | None = None,
) -> dict[str, float]:
    """DPO of `model_ref` on `pairs_path`; the reference model is the frozen `model_ref` (trl's copy).

    `deepspeed` (a DeepSpeed config) when this process is one rank of several.
    """
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    rows = read_jsonl(pairs_path, PAIR_FIELDS)
    dataset = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                "rejected": [{"role": "assistant", "content": r["rejected"]}],
            }
            for r in rows
        ]
    )
    model_dir = Path(model_dir)
    tokenizer = load_tokenizer(model_ref)
    tokenizer.padding_side = "right"
    trainer = DPOTrainer(
        model=model_ref,
        ref_model=None,
        args=DPOConfig(**dpo_args(settings, model_dir / "checkpoints", deepspeed)),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(settings),
        callbacks=[progress_callback(stage)],
    )
    return train_and_save(trainer, stage, model_dir / "checkpoints", model_dir, checkpoints)


def train(
    cfg: Config, inputs: dict[str, str], output: Path, method: str, deepspeed: dict | None, checkpoints: str | None
) -> dict[str, float]:
    """The training entry (cong.stages.step.run_training): DPO of `model` on `pairs`."""
    settings = cfg.training_stages().dpo.train
    return dpo(inputs["model"], inputs["pairs"], output, settings, "dpo", checkpoints, deepspeed)


@stage_step
def step(config: dict, model: str, pairs: str, aligned: str, model_store: str = "", run_id: str = "") -> StepResult:
    cfg = config_from_dict(config)
    s = cfg.training_stages().dpo.train
    target = model_dir(aligned, model_store)
    inputs = {"model": follow(model, model_store), "pairs": pairs}
    metrics = train_stage(cfg, "dpo", inputs, target, checkpoints=checkpoint_uri(cfg.storage, run_id, "dpo"))
    return {
        "metrics": metrics,
        "metadata": {
            "aligned": lineage(
                cfg,
                "dpo",
                beta=s.beta,
                learning_rate=s.learning_rate,
                reference=DPO_REFERENCE,
                seed=s.seed,
                train_rows=metrics["train_rows"],
            )
            | hand_over(cfg, aligned, target, "cong", run_id)
        },
    }
