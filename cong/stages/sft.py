"""sft: supervised fine-tuning on (prompt, response) rows, loss on response tokens only (trl SFTTrainer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cong.config import TrainSettings
from cong.data import training_rows
from cong.training.trainers import sft_trainer_kwargs, train_and_save


def sft(
    model_ref: str,
    data_path: str,
    model_dir: Path,
    settings: TrainSettings,
    stage: str = "sft",
    checkpoints: str | None = None,
    deepspeed: dict[str, Any] | None = None,
) -> dict[str, float]:
    """SFT of `model_ref`; `deepspeed` (a DeepSpeed config) when this process is one rank of several."""
    from trl import SFTTrainer

    model_dir = Path(model_dir)
    rows = training_rows(data_path, stage)
    trainer = SFTTrainer(**sft_trainer_kwargs(model_ref, rows, settings, model_dir, stage, deepspeed))
    return train_and_save(trainer, stage, model_dir / "checkpoints", model_dir, checkpoints)
