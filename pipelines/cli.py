"""The `cong` command: run the pipeline locally, compile it for a cluster, validate a config, trace lineage."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from cong.errors import CongError


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="a preset shipped with cong (default: tiny); see `cong presets`")
    parser.add_argument("--config", type=Path, help="a YAML config file (may `extends:` a preset)")
    parser.add_argument(
        "--methods",
        help="comma-separated methods to compare, or `all` (overrides the config's `methods`); see `cong presets`",
    )
    parser.add_argument(
        "--alpha-sweep",
        metavar="ALPHAS",
        help="CD alphas to sweep, e.g. `0,0.25,0.5` or `0,0.1,...,1` (overrides stages.alpha_sweep.alphas)",
    )


def parse_alphas(text: str) -> list[float]:
    """`0,0.5,1` as given; `a,b,...,z` as the progression from a in steps of b - a up to z."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        if "..." not in parts:
            return [float(p) for p in parts]
        if len(parts) != 4 or parts[2] != "...":
            raise ValueError
        first, second, last = float(parts[0]), float(parts[1]), float(parts[3])
        step = second - first
        if step <= 0 or last < first:
            raise ValueError
        count = round((last - first) / step)
        return [round(first + i * step, 10) for i in range(count + 1)]
    except ValueError:
        raise CongError(
            f"--alpha-sweep {text!r}: give comma-separated numbers in [0, 1] (e.g. 0,0.25,0.5) or a progression "
            "`first,second,...,last` (e.g. 0,0.1,...,1)."
        ) from None


def _load(args: argparse.Namespace):
    from cong.config import load_config

    overrides: dict = {}
    if getattr(args, "methods", None):
        overrides["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    if getattr(args, "alpha_sweep", None):
        overrides["stages"] = {"alpha_sweep": {"alphas": parse_alphas(args.alpha_sweep)}}
    return load_config(args.config, args.preset, overrides)


def cmd_run(args: argparse.Namespace) -> int:
    from cong.report import format_sweep, format_table
    from pipelines.local import run_local

    if not args.local:
        raise CongError(
            "only local runs are available from this command: add --local. To run on a cluster, "
            "`cong compile` the pipeline and upload the YAML to Kubeflow Pipelines."
        )
    cfg = _load(args)
    out = args.out or Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    results = run_local(cfg, out, verbose=args.verbose, s3_endpoint=args.s3_endpoint)
    print(f"\n{format_table(results)}\n")
    if results.get("alpha_sweep"):
        print(f"alpha sweep (contrastive decoding on {results['alpha_sweep'][0]['prompts']} eval prompts):")
        print(f"{format_sweep(results['alpha_sweep'])}\n")
    if "promotion" in results:
        print(f"promotion of {results['promotion']['method']}: {results['promotion']['reason']}")
    print(f"{results['eval_prompts']} held-out prompts; run took {results['run']['seconds']:.0f}s.")
    print(f"wrote {out / 'results.json'}, {out / 'report.html'} and the full log {out / 'pipeline.log'}")
    print(f"published to {results['artifacts']['run']}")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from pipelines.compile import COMMITTED, compile_pipeline

    path = compile_pipeline(_load(args), args.out or COMMITTED)
    print(f"wrote {path}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from cong.config import load_config

    cfg = load_config(args.config)
    print(f"{args.config}: valid (config '{cfg.name}', methods: {', '.join(cfg.methods)})")
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from cong.lineage import load, render

    if args.s3_endpoint:
        os.environ["AWS_ENDPOINT_URL_S3"] = args.s3_endpoint
    lineage, start = load(args.target)
    print(render(lineage, start))
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from cong.config import load_config, preset_names

    for name in preset_names():
        cfg = load_config(preset=name)
        print(f"{name:<28} weak {cfg.models.weak_base}  ->  strong {cfg.models.strong_base}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cong", description="Contrastive weak-to-strong alignment (ConG) as a Kubeflow Pipelines DAG."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the whole pipeline",
        description="Run the whole pipeline; with --local, "
        "on this machine through kfp.local, and write results.json and report.html.",
    )
    run.add_argument("--local", action="store_true", help="run here with kfp.local (no cluster)")
    _config_args(run)
    run.add_argument("--out", type=Path, help="run folder (default: runs/<config>-<time>)")
    run.add_argument("--verbose", action="store_true", help="print every task's full log, not only progress")
    run.add_argument(
        "--s3-endpoint",
        metavar="URL",
        help="use this S3-compatible server (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) instead "
        "of starting the embedded one",
    )
    run.set_defaults(func=cmd_run)

    lin = sub.add_parser(
        "lineage",
        help="where a run's models came from",
        description="Print the tree from a run's final models (or one published artifact) back to the base "
        "models and data, with the settings of every step.",
    )
    lin.add_argument("target", help="a run folder of `cong run --local`, or the s3:// URI of a published artifact")
    lin.add_argument("--s3-endpoint", metavar="URL", help="the S3-compatible server (credentials from AWS_*)")
    lin.set_defaults(func=cmd_lineage)

    comp = sub.add_parser(
        "compile",
        help="compile the pipeline to KFP YAML",
        description="Compile the pipeline for a config to a KFP IR YAML file.",
    )
    _config_args(comp)
    comp.add_argument("--out", type=Path, help="output YAML (default: pipelines/cong_pipeline.yaml)")
    comp.set_defaults(func=cmd_compile)

    val = sub.add_parser(
        "validate",
        help="check a config file",
        description="Validate a config file; exit status 2 with a message naming each bad field.",
    )
    val.add_argument("config", type=Path, help="the YAML config file")
    val.set_defaults(func=cmd_validate)

    pre = sub.add_parser("presets", help="list the shipped presets", description="List the shipped presets.")
    pre.set_defaults(func=cmd_presets)
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


if __name__ == "__main__":
    sys.exit(main())
