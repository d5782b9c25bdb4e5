"""trl trainer settings from the typed stage config; training resumes from its last checkpoint."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

from cong.config import DpoSettings, TrainSettings
from cong.progress import log


def _use_bf16(train: TrainSettings) -> bool:
    import torch

    if train.precision == "auto":
        # bf16 autocast is about 12x slower than fp32 on CPUs without bf16 units.
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return train.precision == "bf16"


def trainer_args(train: TrainSettings, output_dir: Path, deepspeed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Trainer arguments; `deepspeed` (a DeepSpeed config) when this process is one rank of several."""
    import torch

    on_gpu = torch.cuda.is_available()
    args = {
        "output_dir": str(output_dir),
        "num_train_epochs": train.epochs,
        "per_device_train_batch_size": train.per_device_batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "learning_rate": train.learning_rate,
        "lr_scheduler_type": train.lr_scheduler,
        "warmup_steps": train.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        "weight_decay": train.weight_decay,
        "max_length": train.max_length,
        "bf16": _use_bf16(train),
        "gradient_checkpointing": on_gpu,
        "use_cpu": not on_gpu,
        "save_strategy": "epoch",
        "save_total_limit": 1,
        "logging_steps": 1,
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_pin_memory": on_gpu,
        "seed": train.seed,
    }
    if deepspeed is not None:
        args.update(deepspeed=deepspeed, use_cpu=False)
        if not on_gpu:
            # cong.training.distributed.cpu_process_group has set up accelerate's state for DeepSpeed over gloo.
            args["accelerator_config"] = {"use_configured_state": True}
    return args


def dpo_args(train: DpoSettings, output_dir: Path, deepspeed: dict[str, Any] | None = None) -> dict[str, Any]:
    return {**trainer_args(train, output_dir, deepspeed), "beta": train.beta, "loss_type": [train.loss_type]}


def completion_dataset(rows: list[dict[str, Any]]):
    """Conversational prompt/completion rows for trl (with completion_only_loss, the loss is on responses)."""
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "completion": [{"role": "assistant", "content": r["response"]}],
            }
            for r in rows
        ]
    )


def sft_trainer_kwargs(
    model_ref: str,
    rows: list[dict[str, Any]],
    train: TrainSettings,
    model_dir: Path,
    stage: str,
    deepspeed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What an SFTTrainer (or a subclass with its own loss) needs to train `model_ref` on response rows."""
    from trl import SFTConfig

    from cong.models import load_tokenizer

    tokenizer = load_tokenizer(model_ref)
    tokenizer.padding_side = "right"
    return {
        "model": model_ref,
        "args": SFTConfig(**trainer_args(train, Path(model_dir) / "checkpoints", deepspeed), completion_only_loss=True),
        "train_dataset": completion_dataset(rows),
        "processing_class": tokenizer,
        "peft_config": peft_config(train),
        "callbacks": [progress_callback(stage)],
    }


def peft_config(train: TrainSettings):
    if train.lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=train.lora.r,
        lora_alpha=train.lora.alpha,
        lora_dropout=train.lora.dropout,
        target_modules=train.lora.target_modules,
        task_type="CAUSAL_LM",
    )


def progress_callback(stage: str):
    import time

    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.monotonic()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs or not state.is_world_process_zero:
                return
            elapsed = time.monotonic() - self.start
            eta = elapsed / max(state.global_step, 1) * (state.max_steps - state.global_step)
            log(stage, f"step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f} ETA {eta:.0f}s")

    return Progress()


def train_and_save(
    trainer, stage: str, output_dir: Path, model_dir: Path, checkpoints: str | None = None
) -> dict[str, float]:
    """Train (resuming from the last checkpoint in `output_dir`), save a plain model, drop checkpoints.

    A LoRA-trained model is saved merged, and its adapter beside it (cong.models.ADAPTER_DIR), from which
    contrastive decoding can run the model and its base on one copy of the weights. The loss of every logged
    step goes beside the model too (cong.models.TRAINING_LOG), for the report.

    Under a distributed launch every rank runs this; rank 0 writes the model and deletes the checkpoints.
    With `checkpoints` (an s3:// folder), checkpoints are also kept there, and an earlier attempt's newest one
    is fetched first: a retried pod resumes where the killed one stopped (cong.training.checkpoints).
    """
    from cong.models import ADAPTER_DIR, TRAINING_LOG

    if checkpoints:
        from cong.training.checkpoints import mirror_callback, restore

        # One download into the folder the ranks share; the mirror uploads from rank 0 only.
        if trainer.accelerator.is_main_process:
            restore(checkpoints, output_dir, stage)
        trainer.accelerator.wait_for_everyone()
        trainer.add_callback(mirror_callback(checkpoints))

    last = last_checkpoint(output_dir)
    if last:
        log(stage, f"resuming from {last}")
    result = trainer.train(resume_from_checkpoint=last)
    accelerator = trainer.accelerator
    model = accelerator.unwrap_model(trainer.model)
    # The model is saved beside its folder and moved in once whole: a save cut short (a full disk, a killed pod)
    # leaves the checkpoints to resume from, never a folder with part of a model.
    partial = model_dir.with_name(f".{model_dir.name}.partial")
    with _whole_weights(trainer, model):
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
            try:
                if hasattr(model, "merge_and_unload"):
                    model.save_pretrained(partial / ADAPTER_DIR)
                    model = model.merge_and_unload()
                model.save_pretrained(partial)
                trainer.processing_class.save_pretrained(partial)
                losses = [{"step": e["step"], "loss": e["loss"]} for e in trainer.state.log_history if "loss" in e]
                (partial / TRAINING_LOG).write_text(json.dumps(losses) + "\n")
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(output_dir, ignore_errors=True)
        shutil.rmtree(model_dir, ignore_errors=True)
        partial.rename(model_dir)
    metrics = {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))}
    metrics["global_step"] = float(result.global_step)
    metrics["train_rows"] = float(len(trainer.train_dataset))
    metrics["world_size"] = float(accelerator.num_processes)
    return metrics


def last_checkpoint(output_dir: Path) -> str | None:
    """The newest checkpoint whose save finished: the trainer writes trainer_state.json last, so a save cut short
    by a full disk or a killed pod is passed over (the next save of that step overwrites it)."""
    steps = {
        int(p.name.removeprefix("checkpoint-")): p
        for p in output_dir.glob("checkpoint-*")
        if p.name.removeprefix("checkpoint-").isdigit() and (p / "trainer_state.json").is_file()
    }
    return str(steps[max(steps)]) if steps else None


def _whole_weights(trainer, model):
    """Under ZeRO-3 each rank holds a shard of every weight: gather them (all ranks take part) to save them.

    That needs the whole model in each GPU's memory once, in its training precision.
    """
    if not trainer.is_deepspeed_enabled:
        return contextlib.nullcontext()
    import deepspeed

    # A no-op for ZeRO-2, whose weights are whole on every rank.
    return deepspeed.zero.GatheredParameters(list(model.parameters()))
