"""Training stages in several processes under DeepSpeed: the config, the launch, and two real ranks on CPU.

The two-process tests run the real multi-process path on this machine (accelerate launch, or torchrun as a
Kubeflow TrainJob's torch runtime starts it); only the GPUs are missing: DeepSpeed's CPU accelerator stands in
for CUDA and gloo for NCCL.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from cong.config import load_config
from cong.data import read_jsonl, write_jsonl
from cong.errors import CongError
from cong.stages import dpo
from cong.stages.step import train_stage
from cong.training import distributed
from tests.conftest import MICRO, changed

# 16 rows, 4 per process and step: one epoch is 2 steps with 2 processes (4 with one), at a learning rate that moves
# the weights from the first step.
ROWS, BATCH = 16, 4
TRAIN = {"per_device_batch_size": BATCH, "gradient_accumulation_steps": 1, "warmup_ratio": 0.0, "epochs": 1}


def _config(**settings):
    overrides = {"stages": {"sft": {"train": TRAIN}, "dpo": {"train": TRAIN}}, **settings}
    return load_config(MICRO, overrides=overrides)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "zero_stage, offload", [(3, "none"), (2, "none"), (2, "optimizer"), (3, "optimizer_and_params")]
)
def test_deepspeed_config_follows_the_settings(zero_stage, offload):
    """Checked against DeepSpeed's own schema of the ZeRO block, which rejects unknown keys."""
    from deepspeed.runtime.config import DEEPSPEED_OPTIMIZERS
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    cfg = _config(distributed={"zero_stage": zero_stage, "offload": offload})
    ds = distributed.deepspeed_config(cfg.distributed)
    zero = DeepSpeedZeroConfig(**ds["zero_optimization"])
    assert zero.stage == zero_stage
    assert (zero.offload_optimizer is not None) == (offload != "none")
    assert (zero.offload_param is not None) == (offload == "optimizer_and_params")
    assert zero.gather_16bit_weights_on_model_save == (zero_stage == 3)
    # Offloaded optimizer state is stepped by DeepSpeed's own optimizer, on the CPU.
    assert ("optimizer" in ds) == (offload != "none")
    if offload != "none":
        assert ds["optimizer"]["type"].lower() in DEEPSPEED_OPTIMIZERS
    # Precision and batch sizes are the trainer's: a fixed bf16 here would clash with its own setting.
    assert ds["bf16"] == {"enabled": "auto"} and ds["train_micro_batch_size_per_gpu"] == "auto"


def test_offloading_weights_needs_zero3():
    with pytest.raises(CongError, match=r"distributed.*zero_stage 3"):
        _config(distributed={"zero_stage": 2, "offload": "optimizer_and_params"})


def test_processes_are_the_stage_gpus_unless_set(monkeypatch):
    cfg = _config(resources={"dpo": {"gpus": 4}, "sft": {"gpus": 0}})
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert (distributed.processes(cfg, "dpo"), distributed.processes(cfg, "sft")) == (4, 1)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert distributed.processes(cfg, "dpo") == 1, "a machine with one GPU trains in one process"
    cfg = _config(resources={"dpo": {"gpus": 4}}, distributed={"processes": 2})
    assert distributed.processes(cfg, "dpo") == distributed.processes(cfg, "sft") == 2


def test_the_entry_parses_the_launch_arguments():
    from cong.stages.launch import _inputs, make_parser

    inputs = {"model": "s3://bucket/runs/1/cong_s", "pairs": "/data/pairs.jsonl"}
    args = make_parser().parse_args(distributed.launch_args("dpo", "c.json", inputs, "out", metrics_file="m.json"))
    assert (args.stage, args.config, args.output, str(args.metrics)) == ("dpo", "c.json", "out", "m.json")
    assert _inputs(args.input) == inputs
    args = make_parser().parse_args(distributed.launch_args("sft", "c.json", {"data": "d"}, "out", "weak_sft"))
    assert args.method == "weak_sft"


def test_the_entry_names_missing_inputs(tmp_path, capsys):
    from cong.stages.launch import main

    config = tmp_path / "config.json"
    config.write_text(json.dumps(_config().as_parameter()))
    status = main(["dpo", "--config", str(config), "--input", "model=m", "--output", str(tmp_path / "out")])
    assert status == 2
    assert "missing: pairs" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _write_rows(micro_testbed, tmp_path):
    prompts = read_jsonl(micro_testbed / "train.jsonl", ("id", "prompt"), limit=ROWS)
    assert len(prompts) == ROWS
    write_jsonl(tmp_path / "responses.jsonl", [{**p, "response": f"The answer is {i}."} for i, p in enumerate(prompts)])
    write_jsonl(
        tmp_path / "pairs.jsonl", [{**p, "chosen": f"Sure: {i}.", "rejected": "No."} for i, p in enumerate(prompts)]
    )


def test_dpo_in_two_processes_with_zero3_saves_the_whole_model(micro_testbed, tmp_path, capfd):
    """What the dpo component calls, configured for two processes: accelerate launch starts two ranks."""
    _write_rows(micro_testbed, tmp_path)
    strong, aligned = str(micro_testbed / "strong"), tmp_path / "aligned"
    cfg = _config(distributed={"processes": 2})
    result = dpo.step(cfg.as_parameter(), model=strong, pairs=str(tmp_path / "pairs.jsonl"), aligned=str(aligned))
    logs = capfd.readouterr().err
    assert "[dpo] rank 0 of 2, DeepSpeed ZeRO-3" in logs and "[dpo] rank 1 of 2, DeepSpeed ZeRO-3" in logs
    metrics = result["metrics"]
    assert metrics["world_size"] == 2 and metrics["train_rows"] == ROWS
    assert metrics["global_step"] == ROWS // (BATCH * 2), "each rank trained on half of the rows"
    # The model was gathered from both ranks' shards: whole weights, loadable, and trained.
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(strong).state_dict()
    after = AutoModelForCausalLM.from_pretrained(aligned).state_dict()
    assert {k: v.shape for k, v in after.items()} == {k: v.shape for k, v in before.items()}
    assert changed(strong, aligned)
    assert not (aligned / "checkpoints").exists()


def test_a_rerun_under_torchrun_resumes_from_the_zero3_checkpoint(micro_testbed, tmp_path):
    """A run that dies after its last checkpoint, before the model is written; the rerun is started the way a
    TrainJob's torch runtime starts it (torchrun sets the torch.distributed environment of each process)."""
    from safetensors.torch import load_file

    _write_rows(micro_testbed, tmp_path)
    cfg, data, model_dir = _config(distributed={"processes": 2}), str(tmp_path / "responses.jsonl"), tmp_path / "m"
    # Rank 0 saves the model beside its folder first (cong.training.trainers.train_and_save): a file in that place
    # stops it.
    blocker = model_dir.with_name(f".{model_dir.name}.partial")
    blocker.write_text("")
    with pytest.raises(CongError, match="2-process DeepSpeed training failed"):
        train_stage(cfg, "sft", {"data": data}, model_dir)
    [checkpoint] = (model_dir / "checkpoints").glob("checkpoint-*")
    shards = {p.name for p in checkpoint.glob("global_step*/*.pt")}
    assert any("zero_pp_rank_0_" in s for s in shards) and any("zero_pp_rank_1_" in s for s in shards)
    in_checkpoint = load_file(checkpoint / "model.safetensors")
    assert not (model_dir / "model.safetensors").exists(), "no model was published"
    blocker.unlink()

    config_file, metrics_file = tmp_path / "config.json", tmp_path / "metrics.json"
    config_file.write_text(json.dumps(cfg.as_parameter()))
    entry = distributed.launch_args("sft", config_file, {"data": data}, model_dir, metrics_file=metrics_file)
    torchrun = ["--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port"]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *torchrun,
        str(_free_port()),
        "-m",
        "cong.stages.launch",
    ]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}
    done = subprocess.run([*command, *entry], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"[sft] resuming from {checkpoint}" in done.stderr
    metrics = json.loads(metrics_file.read_text())
    assert metrics["world_size"] == 2 and metrics["global_step"] == int(checkpoint.name.split("-")[1])
    saved = load_file(model_dir / "model.safetensors")
    assert saved.keys() == in_checkpoint.keys()
    assert all(torch.equal(saved[k], in_checkpoint[k]) for k in saved), "the model is the checkpoint's"
    assert changed(micro_testbed / "strong", model_dir)
    assert not (model_dir / "checkpoints").exists()


def test_open_mpi_ranks_count_as_distributed():
    """The deepspeed-distributed TrainJob runtime starts the entry with mpirun, which sets only Open MPI's names."""
    from cong.stages.launch import rank_and_world_size

    assert rank_and_world_size({"RANK": "3", "WORLD_SIZE": "8", "OMPI_COMM_WORLD_SIZE": "2"}) == (3, 8)
    assert rank_and_world_size({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4"}) == (1, 4)
    assert rank_and_world_size({}) == (0, 1)


def test_the_entry_takes_its_config_from_and_gives_its_model_to_storage(micro_testbed, store, tmp_path, monkeypatch):
    """How a TrainJob node runs it: config and data as s3:// URIs, the model published to an s3:// URI (real
    SeaweedFS), manifest last, so the task waiting for the job fetches a whole model."""
    from cong.stages.launch import main
    from cong.storage.folders import fetch_dir, publish_path
    from cong.storage.s3 import ensure_bucket

    for name, value in store.env().items():
        monkeypatch.setenv(name, value)
    ensure_bucket("jobs")
    _write_rows(micro_testbed, tmp_path)
    cfg = _config(models={"strong_base": str(micro_testbed / "strong")})
    (tmp_path / "config.json").write_text(json.dumps(cfg.as_parameter()))
    config_uri = publish_path(tmp_path / "config.json", "s3://jobs/job-1/config")
    data_uri = publish_path(tmp_path / "responses.jsonl", "s3://jobs/job-1/inputs/data")
    args = distributed.launch_args("sft", config_uri, {"data": data_uri}, "s3://jobs/job-1/outputs/model")
    assert main(args) == 0
    fetch_dir("s3://jobs/job-1/outputs/model", tmp_path / "model")
    assert changed(micro_testbed / "strong", tmp_path / "model")
