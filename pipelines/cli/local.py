"""Commands that run on this machine: `cong run --local`, `cong study`, `cong validate`, `cong report`."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from cong.errors import CongError
from pipelines.cli.common import config_args, load


def cmd_run(args: argparse.Namespace) -> int:
    from cong.evaluation.report import decoding_note, format_sweep, format_table, gates_note
    from pipelines.local import run_local

    if not args.local:
        raise CongError(
            "only local runs are available from this command: add --local. To run on a cluster, "
            "`cong compile` the pipeline and upload the YAML to Kubeflow Pipelines."
        )
    cfg = load(args)
    out = args.out or Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    results = run_local(
        cfg, out, verbose=args.verbose, s3_endpoint=args.s3_endpoint, runner=args.runner, image=args.image
    )
    print(f"\n{format_table(results)}\n{decoding_note(results)}\n")
    if results.get("alpha_sweep"):
        print(f"alpha sweep (contrastive decoding on {results['alpha_sweep'][0]['prompts']} eval prompts):")
        print(f"{format_sweep(results['alpha_sweep'])}\n")
    if "promotion" in results:
        print(f"promotion of {results['promotion']['method']}: {results['promotion']['reason']}")
    if "testbed" in results:
        print(_world_note(results["testbed"]))
    if results.get("failed_gates"):
        print(f"WARNING: {gates_note(results)}")
    print(f"{results['eval_prompts']} held-out prompts; run took {results['run']['seconds']:.0f}s.")
    print(f"wrote {out / 'results.json'}, {out / 'report.html'} and the full log {out / 'pipeline.log'}")
    print(f"published to {results['artifacts']['run']}")
    return 0


def _world_note(world: dict) -> str:
    """Which testbed world the table comes from, and whether it is the one the README's figures came from."""
    note = f"testbed world sha256 {world['sha256']}"
    if world["is_reference"] is None:
        return f"{note} (no reference world is shipped for these testbed settings)."
    if world["is_reference"]:
        return f"{note}: the reference world of these settings, shipped with cong (the README's figures are its)."
    return (
        f"{note} differs from the reference world shipped for these settings ({world['reference_sha256']}), whose "
        "figures the README gives: this cache holds another world, so expect other figures."
    )


def cmd_study(args: argparse.Namespace) -> int:
    from cong.evaluation.study import load_study, run_study
    from pipelines.local import run_local

    study = load_study(args.study)
    out = args.out or Path("runs") / f"study-{study.name}"
    summary = run_study(study, out, run_local)
    print(f"\nstudy {study.name}: {len(summary['runs'])} runs on {len(summary['worlds'])} worlds")
    for h in summary["hypotheses"]:
        print(
            f"{h['id']} {h['statement']}: effect {h['effect']:+.4f} [{h['ci95_low']:+.4f}, {h['ci95_high']:+.4f}], "
            f"p (Holm) {h['p_holm']:.4g}: {h['verdict']}"
        )
    print(f"wrote {out / 'study.json'} and {out / 'study.html'}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    import yaml

    from cong.config import load_config
    from cong.stages.validate import check_run
    from cong.storage.s3 import S3Settings

    cfg = load_config(args.config)
    if args.show:
        print(f"# {args.config}, resolved: every key, after presets (`extends`) and the stages' own defaults")
        print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), flush=True)
    settings = S3Settings.from_env(
        {**os.environ, "AWS_ENDPOINT_URL_S3": args.s3_endpoint} if args.s3_endpoint else None
    )
    check_run(cfg, settings if settings.endpoint_url else None)
    located = cfg.storage.located(cfg.pipeline_root)
    storage = f"{located.uri()} at {settings.endpoint_url}" if settings.endpoint_url else "not checked"
    print(f"{args.config}: valid (config '{cfg.name}', methods: {', '.join(cfg.methods)})")
    print(f"checked: the prompt files, the models and their tokenizers; storage: {storage}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from cong.evaluation.report import build_report

    print(f"wrote {build_report(args.run_dir)}")
    return 0


def register(sub) -> None:
    """Add this group's commands to the `cong` parser's sub-commands."""
    run = sub.add_parser(
        "run",
        help="run the whole pipeline",
        description="Run the whole pipeline; with --local, "
        "on this machine through kfp.local, and write results.json and report.html.",
    )
    run.add_argument("--local", action="store_true", help="run here with kfp.local (no cluster)")
    config_args(run)
    run.add_argument("--out", type=Path, help="run folder (default: runs/<config>-<time>)")
    run.add_argument("--verbose", action="store_true", help="print every task's full log, not only progress")
    run.add_argument(
        "--s3-endpoint",
        metavar="URL",
        help="use this S3-compatible server (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) instead "
        "of starting the embedded one",
    )
    run.add_argument(
        "--runner",
        choices=["subprocess", "container"],
        default="subprocess",
        help="subprocess: each task a process of this environment (default); container: each task in the training "
        "image, as a Kubeflow pod runs it (its own user, read-only root filesystem, no capabilities; `make image` "
        "builds it; the engine: CONTAINER_ENGINE, else docker when its daemon answers, else podman)",
    )
    run.add_argument("--image", help="the image of --runner container (default: the one `make image` builds here)")
    run.set_defaults(func=cmd_run)

    study = sub.add_parser(
        "study",
        help="answer the paper's questions over several worlds and seeds",
        description="Run every (world seed, training seed) of a study config that has not finished yet (a killed "
        "study resumes), then test its hypotheses: study.json and study.html.",
    )
    study.add_argument("--study", type=Path, help="a study config (default: cong/studies/tiny.yaml)")
    study.add_argument("--out", type=Path, help="study folder (default: runs/study-<name>)")
    study.set_defaults(func=cmd_study)

    val = sub.add_parser(
        "validate",
        help="check a config and everything its run needs, before any stage runs",
        description="Check a config file, its prompt files (rows, ids, UTF-8, prompt lengths), its models (folders, "
        "tokenizers, chat templates, one vocabulary where methods need one) and, with an endpoint, the object store "
        "(bucket, credentials). Every problem is listed at once; exit status 2 when there is one.",
    )
    val.add_argument("config", type=Path, help="the YAML config file")
    val.add_argument(
        "--show",
        action="store_true",
        help="first print the resolved config: every key with the value a run uses (presets and defaults applied)",
    )
    val.add_argument(
        "--s3-endpoint",
        metavar="URL",
        help="also check the run's bucket and credentials at this S3 endpoint (default: AWS_ENDPOINT_URL_S3 if set)",
    )
    val.set_defaults(func=cmd_validate)

    report = sub.add_parser(
        "report",
        help="rebuild a run's report.html",
        description="Rebuild RUN_DIR/report.html from the folder's results.json, responses.jsonl and "
        "training_curves.json (a `cong run` folder, or an evaluate task's results artifact).",
    )
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run folder")
    report.set_defaults(func=cmd_report)
