"""Training stages on more than one GPU in one pod: `accelerate launch` with DeepSpeed ZeRO.

A training step calls `train` (through cong.stages.step.train_stage). With one process (the default when a stage
has at most one GPU) the stage trains in this process, as it always has. With N > 1 processes it writes the run's
config and a DeepSpeed config into a scratch folder and starts

    accelerate launch --num_processes N --use_deepspeed --deepspeed_config_file deepspeed.json ...
        --module cong.stages.launch STAGE --config config.json --input NAME=REF ... --output DIR \
        --metrics metrics.json

so that N processes run the same stage function together (cong.stages.step.run_training); rank 0 writes the model
and the metrics, which this process reads back. `cong.stages.launch` is the same entry a multi-node TrainJob runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cong.config import Config, DistributedSettings
from cong.errors import CongError
from cong.progress import log

ENTRY_MODULE = "cong.stages.launch"


def processes(cfg: Config, stage: str) -> int:
    """How many processes train `stage`: `distributed.processes`, else one per GPU of the stage.

    A machine with fewer GPUs than the stage asks for (a local run of a cluster preset) uses those it has.
    """
    if cfg.distributed.processes:
        return cfg.distributed.processes
    gpus = cfg.resources_for(stage).gpus
    if gpus <= 1:
        return 1
    import torch

    visible = torch.cuda.device_count()
    if visible < gpus:
        log(stage, f"the config gives {stage} {gpus} GPUs and this machine has {visible}: training on what it has")
    return max(min(gpus, visible), 1)


def deepspeed_config(settings: DistributedSettings) -> dict[str, Any]:
    """The DeepSpeed config of a multi-process stage.

    Batch sizes, clipping, precision and the optimizer's hyper-parameters are `auto`: the Hugging Face trainer
    fills them from the stage's settings (a fixed `bf16` here would clash with the trainer's own and fail).
    """
    zero: dict[str, Any] = {"stage": settings.zero_stage}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_optimization": zero,
    }
    if settings.zero_stage == 3:
        # Checkpoints then hold whole weights; without it the trainer writes a second DeepSpeed checkpoint instead.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if settings.offload != "none":
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        # DeepSpeed's own AdamW then steps the offloaded state on the CPU (its C++ CPU Adam, built on first use).
        config["optimizer"] = {
            "type": "AdamW",
            "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"},
        }
    if settings.offload == "optimizer_and_params":
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return config


def launch_args(
    stage: str,
    config_file: str | Path,
    inputs: dict[str, str],
    output: str | Path,
    method: str = "cong_s",
    metrics_file: str | Path | None = None,
    checkpoints: str | None = None,
) -> list[str]:
    """The arguments after `-m cong.stages.launch`: the same under accelerate launch, torchrun or a TrainJob."""
    args = [stage, "--config", str(config_file), "--output", str(output)]
    for name, ref in inputs.items():
        args += ["--input", f"{name}={ref}"]
    if stage == "sft":
        args += ["--method", method]
    if checkpoints:
        args += ["--checkpoints", checkpoints]
    if metrics_file is not None:
        args += ["--metrics", str(metrics_file)]
    return args


def accelerate_command(num_processes: int, deepspeed_file: Path, entry_args: list[str]) -> list[str]:
    """`accelerate launch` of the entry on this machine, one process per GPU (no `--cpu`: it excludes DeepSpeed)."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(_free_port()),
        # DeepSpeed takes the precision from its config, whose `auto` follows the trainer's bf16 setting.
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--use_deepspeed",
        "--deepspeed_config_file",
        str(deepspeed_file),
        "--module",
        ENTRY_MODULE,
        *entry_args,
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(
    cfg: Config,
    stage: str,
    inputs: dict[str, str],
    output: str | Path,
    method: str,
    checkpoints: str | None,
    in_process: Callable[[], dict[str, float]],
) -> dict[str, float]:
    """Train `stage` on `inputs` into the model folder `output`: `in_process()` when one process trains it, else
    `processes(...)` of them, each running the training entry (ENTRY_MODULE) as one rank.

    `checkpoints`: an s3:// folder that keeps the checkpoints for a retried pod (cong.training.checkpoints).
    """
    count = processes(cfg, stage)
    if count == 1:
        return in_process()
    if importlib.util.find_spec("deepspeed") is None:
        raise CongError(
            f"{stage}: training in {count} processes needs DeepSpeed, which is not installed here. Install the "
            "training extra (pip install 'cong[train]'), or set distributed.processes: 1."
        )
    with tempfile.TemporaryDirectory(prefix=f"cong-{stage}-") as scratch:
        config_file, deepspeed_file, metrics_file = (
            Path(scratch) / f"{name}.json" for name in ("config", "deepspeed", "metrics")
        )
        config_file.write_text(json.dumps(cfg.as_parameter()))
        deepspeed_file.write_text(json.dumps(deepspeed_config(cfg.distributed), indent=2))
        entry = launch_args(stage, config_file, inputs, output, method, metrics_file, checkpoints)
        command = accelerate_command(count, deepspeed_file, entry)
        log(stage, f"{count} processes, DeepSpeed ZeRO-{cfg.distributed.zero_stage}: {shlex.join(command)}")
        # All processes are on this machine: gloo (collectives of CPU tensors) talks over the loopback device.
        env = {"GLOO_SOCKET_IFNAME": "lo", **os.environ}
        status = subprocess.run(command, env=env).returncode
        if status != 0:
            raise CongError(
                f"{stage}: the {count}-process DeepSpeed training failed (accelerate launch exit status {status}); "
                "each rank's error is in the log above. A rerun resumes from the last checkpoint in "
                f"{Path(output) / 'checkpoints'} if one was written."
            )
        return json.loads(metrics_file.read_text())


def cpu_process_group() -> None:
    """Set up the ranks' communication for DeepSpeed on a machine without GPUs (how the tests run it).

    accelerate (1.15) starts DeepSpeed only over an accelerator's backend: on CPU its state tells every rank
    that it is process 0 of 1, and DeepSpeed's batch size check fails. So the state is made here over gloo,
    and the trainer takes it (`use_configured_state`, see cong.training.trainers.trainer_args). DeepSpeed's CPU
    accelerator would also compile a shared-memory all-reduce op the first time it starts (75 to 215 s with
    gcc); gloo's all-reduce does that job, so the op is marked unavailable.
    """
    import deepspeed.ops
    from accelerate import PartialState

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    PartialState(backend="gloo")
