"""The `cong` command: run the pipeline locally, compile and submit it to a cluster, validate a config, trace lineage.

Each command group registers its own sub-commands: local.py (run, study, validate, report), kfp.py (compile, submit,
schedule, runs, lineage), tools.py (bench, serve, presets); common.py holds what they share.
"""

from __future__ import annotations

import argparse
import sys

from cong.errors import CongError
from pipelines.cli import kfp, local, tools


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cong", description="Contrastive weak-to-strong alignment (ConG) as a Kubeflow Pipelines DAG."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (local, kfp, tools):
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipelines.local import PipelineFailed

    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CongError, PipelineFailed) as exc:
        if args.debug:
            raise
        print(f"cong: error: {exc}", file=sys.stderr)
        return exc.exit_code if isinstance(exc, CongError) else 1
    except KeyboardInterrupt:
        print("cong: interrupted", file=sys.stderr)
        return 130
