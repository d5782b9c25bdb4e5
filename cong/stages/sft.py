"""sft: supervised fine-tuning on (prompt, response) rows, loss on response tokens only (trl SFTTrainer)."""

from __future__ import annotations

from pathlib import Path

from cong.config import TrainSettings
from cong.data import RESPONSE_FIELDS, read_jsonl
from cong.models import load_tokenizer
from cong.training import peft_config, progress_callback, train_and_save, trainer_args


def sft(
    model_ref: str, data_path: str, model_dir: Path, settings: TrainSettings, stage: str = "sft"
) -> dict[str, float]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows = read_jsonl(data_path, RESPONSE_FIELDS)
    dataset = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "completion": [{"role": "assistant", "content": r["response"]}],
            }
            for r in rows
        ]
    )
    model_dir = Path(model_dir)
    tokenizer = load_tokenizer(model_ref)
    tokenizer.padding_side = "right"
    trainer = SFTTrainer(
        model=model_ref,
        args=SFTConfig(**trainer_args(settings, model_dir / "checkpoints"), completion_only_loss=True),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(settings),
        callbacks=[progress_callback(stage)],
    )
    return train_and_save(trainer, stage, model_dir / "checkpoints", model_dir)
