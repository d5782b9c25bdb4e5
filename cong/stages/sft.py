"""sft: supervised fine-tuning on (prompt, response) rows, loss on response tokens only (trl SFTTrainer).

The strong ceiling trains here too, by ConG-S's recipe, on the train prompts' reference responses
(cong.data.reference_rows): the strong model as good as correct aligned labels make it, the top of the gap that a
weak-to-strong method recovers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from cong.config import Config, TrainSettings, config_from_dict
from cong.data import reference_rows, training_rows, write_jsonl
from cong.errors import stage_step
from cong.inputs.refs import resolve
from cong.stages.step import StepResult, lineage, train_stage
from cong.storage.handoff import hand_over, model_dir
from cong.training.checkpoints import checkpoint_uri
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


def train(
    cfg: Config, inputs: dict[str, str], output: Path, method: str, deepspeed: dict | None, checkpoints: str | None
) -> dict[str, float]:
    """The training entry (cong.stages.step.run_training): SFT of the strong base with `method`'s settings; the
    strong ceiling's `data` is the train prompts, whose reference responses it imitates."""
    settings = cfg.training_stages().sft_train(method)
    strong = resolve(cfg.models.strong_base, cfg)
    if method != "strong_ceiling":
        return sft(strong, inputs["data"], output, settings, "sft", checkpoints, deepspeed)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "references.jsonl"
        write_jsonl(data, reference_rows(inputs["data"], cfg.data.max_train_prompts))
        return sft(strong, str(data), output, settings, "sft", checkpoints, deepspeed)


@stage_step
def step(
    config: dict, data: str, model: str, method: str = "cong_s", model_store: str = "", run_id: str = ""
) -> StepResult:
    """SFT of the strong base model for one method: ConG-S on CD responses, WeakSFT on weak samples, ..."""
    cfg = config_from_dict(config)
    s = cfg.training_stages().sft_train(method)
    target = model_dir(model, model_store)
    metrics = train_stage(
        cfg, "sft", {"data": data}, target, method, checkpoint_uri(cfg.storage, run_id, f"sft-{method}")
    )
    return {
        "metrics": metrics,
        "metadata": {
            "model": lineage(
                cfg,
                "sft",
                method=method,
                base_model=cfg.models.strong_base,
                learning_rate=s.learning_rate,
                epochs=s.epochs,
                seed=s.seed,
                train_rows=metrics["train_rows"],
            )
            | hand_over(cfg, model, target, method, run_id)
        },
    }
