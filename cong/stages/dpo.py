"""dpo: preference optimisation of a policy against its own frozen initial copy (trl DPOTrainer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cong.config import DpoSettings
from cong.data import PAIR_FIELDS, read_jsonl
from cong.models import load_tokenizer
from cong.training.trainers import dpo_args, peft_config, progress_callback, train_and_save


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
