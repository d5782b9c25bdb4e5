"""Train one stage of a run: python -m cong.stages.launch STAGE --config FILE --input NAME=REF ... --output DIR

Stages and their inputs (each a local path, an s3:// URI or any other reference a config accepts):
  weak_align   pairs            DPO of models.weak_base on the pairs that weak_align sampled
  sft          data             SFT of models.strong_base; --method picks the settings (default cong_s)
  dpo          model, pairs     DPO of the model against its frozen initial copy
  auxconf      data             AuxConf training of models.strong_base
  wspo         data             WSPO of models.strong_base; optional input weak_aligned (default:
                                models.weak_aligned)
The trained model is written to DIR (checkpoints to DIR/checkpoints; a rerun resumes from the last one), or, when
DIR is an s3:// URI, trained in a scratch folder and published there by rank 0 (manifest last: how a TrainJob
hands its model back). The config may be an s3:// URI too. --metrics FILE gets the training metrics as JSON.

Started on its own, it trains in this process. Started by a launcher that sets the torch.distributed
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), such as accelerate launch, torchrun or a
Kubeflow TrainJob's torch runtime, or by Open MPI's mpirun (OMPI_COMM_WORLD_*; DeepSpeed then finds the rest
through mpi4py), with more than one process, every process runs this same command and they train
together under DeepSpeed with the config's `distributed` settings; rank 0 writes the model and the metrics.
Across nodes, DIR must be on storage that every node shares. Bad input ends with a message and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from cong.errors import CongError
from cong.vocabulary import TRAINING_STAGES


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cong.stages.launch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("stage", choices=TRAINING_STAGES)
    parser.add_argument("--config", required=True, help="the run's config (YAML or JSON; a path or an s3:// URI)")
    parser.add_argument(
        "--input", action="append", default=[], metavar="NAME=REF", help="one input of the stage (repeatable)"
    )
    parser.add_argument("--output", required=True, help="the folder (or s3:// URI) the trained model goes to")
    parser.add_argument("--method", default="cong_s", help="sft only: cong_s, weak_sft, icl_refine or wsd_sft")
    parser.add_argument("--metrics", type=Path, help="a JSON file for the training metrics (written by rank 0)")
    parser.add_argument(
        "--checkpoints", metavar="S3_URI", help="also keep checkpoints there, and resume from the newest one found"
    )
    return parser


def _inputs(pairs: list[str]) -> dict[str, str]:
    inputs = {}
    for pair in pairs:
        name, sep, ref = pair.partition("=")
        if not sep or not name or not ref:
            raise CongError(f"--input {pair!r}: give NAME=REF, e.g. --input data=s3://bucket/runs/1/responses.")
        inputs[name] = ref
    return inputs


def rank_and_world_size(environ: dict[str, str] | None = None) -> tuple[int, int]:
    """This process's rank and the number of processes, from torch.distributed's variables or Open MPI's."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env:
        return int(env.get("RANK", "0")), int(env["WORLD_SIZE"])
    return int(env.get("OMPI_COMM_WORLD_RANK", "0")), int(env.get("OMPI_COMM_WORLD_SIZE", "1"))


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        from cong.config import load_config
        from cong.progress import log
        from cong.stages.step import run_training
        from cong.storage.folders import localize, publish_dir
        from cong.training.distributed import cpu_process_group, deepspeed_config

        cfg = load_config(localize(args.config) if args.config.startswith("s3://") else args.config)
        inputs = _inputs(args.input)
        rank, world_size = rank_and_world_size()
        deepspeed = None
        if world_size > 1:
            import torch

            deepspeed = deepspeed_config(cfg.distributed)
            if not torch.cuda.is_available():
                cpu_process_group()
            log(args.stage, f"rank {rank} of {world_size}, DeepSpeed ZeRO-{cfg.distributed.zero_stage}")
        remote = args.output.startswith("s3://")
        with tempfile.TemporaryDirectory(prefix="cong-launch-") as scratch:
            output = Path(scratch) / "model" if remote else Path(args.output)
            metrics = run_training(cfg, args.stage, inputs, output, args.method, deepspeed, args.checkpoints)
            if rank == 0 and remote:
                publish_dir(output, args.output)
        if rank == 0 and args.metrics:
            args.metrics.write_text(json.dumps(metrics))
    except CongError as exc:
        print(f"cong.stages.launch: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
