"""The `cong` command: run the pipeline locally, compile it for a cluster, validate a config, trace lineage."""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from cong.errors import CongError

# The API key `cong serve` asks of clients, when set.
SERVE_KEY_ENV = "CONG_SERVE_API_KEY"


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
    parser.add_argument(
        "--allow-failed-gates",
        action="store_true",
        help="run even where the world or the weak pair fails a gate (cong/evaluation/gates.py); every output says so",
    )


def _cluster_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline", default="cong", help="the pipeline's name in Kubeflow Pipelines (default: cong)")
    parser.add_argument(
        "--service-account",
        metavar="NAME",
        help="the Kubernetes service account the run's pods use (default: the backend's; manifests/ creates "
        "cong-pipeline-runner)",
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
    if getattr(args, "allow_failed_gates", False):
        overrides["allow_failed_gates"] = True
    return load_config(args.config, args.preset, overrides)


def cmd_run(args: argparse.Namespace) -> int:
    from cong.evaluation.report import decoding_note, format_sweep, format_table, gates_note
    from pipelines.local import run_local

    if not args.local:
        raise CongError(
            "only local runs are available from this command: add --local. To run on a cluster, "
            "`cong compile` the pipeline and upload the YAML to Kubeflow Pipelines."
        )
    cfg = _load(args)
    out = args.out or Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    results = run_local(cfg, out, verbose=args.verbose, s3_endpoint=args.s3_endpoint)
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


def cmd_compile(args: argparse.Namespace) -> int:
    from pipelines.compile import COMMITTED, compile_pipeline

    path = compile_pipeline(_load(args), args.out or COMMITTED)
    print(f"wrote {path}")
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
    storage = f"bucket {cfg.storage.bucket!r} at {settings.endpoint_url}" if settings.endpoint_url else "not checked"
    print(f"{args.config}: valid (config '{cfg.name}', methods: {', '.join(cfg.methods)})")
    print(f"checked: the prompt files, the models and their tokenizers; storage: {storage}")
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from cong.storage.lineage import load, render

    if RUN_ID.match(args.target) and not Path(args.target).exists():
        print(_kfp_lineage(args))
        return 0
    if args.s3_endpoint:
        os.environ["AWS_ENDPOINT_URL_S3"] = args.s3_endpoint
    lineage, start = load(args.target)
    print(render(lineage, start))
    return 0


# A KFP run id (a UUID): what `cong lineage` looks up through the KFP API when it is not a local folder.
RUN_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
KFP_EPILOG = (
    "Connection: the KFP API at --host or KFP_HOST (a port-forward of svc/ml-pipeline, e.g. http://localhost:8888, "
    "or your Kubeflow address + /pipeline); --namespace or KFP_NAMESPACE on a multi-user Kubeflow (your profile "
    "namespace); run links point at --ui-url or KFP_UI_URL (default: the host). Authentication: a bearer token from "
    "KFP_TOKEN, else the file named by KF_PIPELINES_SA_TOKEN_PATH (default "
    "/var/run/secrets/kubeflow/pipelines/token, the service-account token projected into a pod)."
)


def _kfp_args(parser: argparse.ArgumentParser, experiment: bool = True) -> None:
    parser.add_argument("--host", help="the KFP API's URL (default: $KFP_HOST)")
    parser.add_argument("--namespace", help="the Kubeflow namespace to work in (default: $KFP_NAMESPACE, or none)")
    parser.add_argument("--ui-url", metavar="URL", help="the KFP UI's URL for links (default: $KFP_UI_URL, or --host)")
    if experiment:
        parser.add_argument(
            "--experiment",
            default=os.environ.get("KFP_EXPERIMENT", "cong"),
            help="the KFP experiment (default: $KFP_EXPERIMENT, or cong); created when missing",
        )


def _client(args: argparse.Namespace):
    from cong.cluster.kfp_api import Connection, KfpClient

    return KfpClient(Connection.resolve(args.host, args.namespace, args.ui_url))


def _pipeline_root(cfg) -> str | None:
    """The config's pipeline root when it names a store (s3://...); a local folder means nothing on a cluster,
    where the namespace's default (ConfigMap kfp-launcher) applies."""
    return cfg.pipeline_root if cfg.pipeline_root and "://" in cfg.pipeline_root else None


def _upload(args: argparse.Namespace, cfg):
    """Compile the pipeline for the config, upload it as a version named from its content (none is added when
    that version exists), and find or create the experiment."""
    from cong.cluster.kfp_api import experiment_id, upload
    from pipelines.compile import compile_pipeline

    client = _client(args)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(cfg, Path(tmp) / "pipeline.yaml")
        version = upload(client, args.pipeline, package, cfg.name, f"config {cfg.name}: {', '.join(cfg.methods)}")
    state = "uploaded" if version.uploaded else "already uploaded, reused"
    print(f"pipeline {args.pipeline}, version {version.name} ({state})")
    experiment = experiment_id(client, args.experiment)
    print(f"experiment {args.experiment}  {client.connection.page(f'experiments/details/{experiment}')}")
    return client, version, experiment


def cmd_submit(args: argparse.Namespace) -> int:
    from cong.cluster.kfp_api import create_run

    cfg = _load(args)
    client, version, experiment = _upload(args, cfg)
    name = args.name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = create_run(
        client, experiment, version, name, {"config": cfg.as_parameter()}, _pipeline_root(cfg), args.service_account
    )
    print(f"run {name}  {run['run_id']}")
    print(client.connection.page(f"runs/details/{run['run_id']}"))
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from cong.cluster.cron import to_kfp_cron
    from cong.cluster.kfp_api import create_schedule

    cron = to_kfp_cron(args.cron)
    cfg = _load(args)
    client, version, experiment = _upload(args, cfg)
    name = args.name or cfg.name
    schedule = create_schedule(
        client,
        experiment,
        version,
        name,
        cron,
        {"config": cfg.as_parameter()},
        catchup=args.catchup,
        replace=args.replace,
        pipeline_root=_pipeline_root(cfg),
        service_account=args.service_account,
    )
    catchup = "catches up missed runs" if args.catchup else "no catch-up"
    print(f"schedule {name}  {schedule['recurring_run_id']}: cron {cron!r} (seconds first; from {args.cron!r}),")
    print(f"one run at a time, {catchup}")
    print(client.connection.page(f"recurringrun/details/{schedule['recurring_run_id']}"))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from cong.cluster.kfp_api import experiment_id, get_run, list_runs
    from cong.cluster.kfp_runs import format_run, format_runs

    if args.limit < 1:
        raise CongError(f"--limit {args.limit}: give a number of runs, 1 or more.")
    client = _client(args)
    now = datetime.now(UTC)
    if args.run_id:
        run = get_run(client, args.run_id)
        print(format_run(run, client.connection.page(f"runs/details/{args.run_id}"), now))
        return 0
    experiment = experiment_id(client, args.experiment, create=False)
    if experiment is None:
        raise CongError(
            f"no experiment {args.experiment!r} in namespace {client.connection.namespace or '(none)'}: nothing was "
            "submitted there yet (`cong submit` creates it), or pass --experiment / --namespace."
        )
    runs = list_runs(client, experiment, args.limit)
    print(format_runs(runs, now) if runs else f"no runs in the experiment {args.experiment!r} yet.")
    return 0


def _kfp_lineage(args: argparse.Namespace) -> str:
    from cong.cluster.kfp_api import get_run, pipeline_spec
    from cong.cluster.kfp_runs import lineage as run_lineage
    from cong.storage.lineage import render

    client = _client(args)
    run = get_run(client, args.target)
    tree = render(run_lineage(run, pipeline_spec(client, run), client.connection.page))
    return (
        f"{tree}\n\nFrom the KFP API: the DAG the run executed and each task's state; artifact URIs and metadata "
        "are on the artifact pages linked above (once the backend reports the artifact ids)."
    )


def cmd_bench_cd(args: argparse.Namespace) -> int:
    from cong.data import PROMPT_FIELDS, read_jsonl
    from cong.decoding.bench import format_bench, random_lora_expert, run_bench, write_json
    from cong.decoding.contrastive import CdParams
    from cong.refs import resolve

    cfg = _load(args)
    cd = cfg.stages.cd_sample
    amateur = resolve(cfg.models.weak_base, cfg)
    rows = read_jsonl(resolve(cfg.data.eval_prompts, cfg), PROMPT_FIELDS, args.prompts)
    with tempfile.TemporaryDirectory(prefix="cong-bench-") as folder:
        if cfg.models.weak_aligned:
            expert = resolve(cfg.models.weak_aligned, cfg)
            name = f"expert {cfg.models.weak_aligned}, amateur {cfg.models.weak_base}"
        else:
            expert = random_lora_expert(amateur, Path(folder), args.lora_rank)
            name = f"amateur {cfg.models.weak_base}, expert the same plus a random rank-{args.lora_rank} LoRA adapter"
        result = run_bench(
            expert,
            amateur,
            [r["prompt"] for r in rows],
            max_new_tokens=args.max_new_tokens,
            batch_sizes=tuple(int(b) for b in args.batch_sizes.split(",")),
            reference_prompts=args.reference_prompts,
            repeats=args.repeats,
            cd=CdParams(cd.alpha, cd.relative_top, cd.score_form),
            model_name=name,
        )
    print(format_bench(result))
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from cong.evaluation.serve import ChatModel, make_server
    from cong.refs import resolve

    cfg = _load(args)
    name = args.name or args.model
    server = make_server(ChatModel(resolve(args.model, cfg), name), args.host, args.port, os.environ.get(SERVE_KEY_ENV))
    print(f"serving {args.model} as {name!r} on http://{args.host}:{server.server_port}/v1", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from cong.evaluation.report import build_report

    print(f"wrote {build_report(args.run_dir)}")
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

    study = sub.add_parser(
        "study",
        help="answer the paper's questions over several worlds and seeds",
        description="Run every (world seed, training seed) of a study config that has not finished yet (a killed "
        "study resumes), then test its hypotheses: study.json and study.html.",
    )
    study.add_argument("--study", type=Path, help="a study config (default: cong/studies/tiny.yaml)")
    study.add_argument("--out", type=Path, help="study folder (default: runs/study-<name>)")
    study.set_defaults(func=cmd_study)

    lin = sub.add_parser(
        "lineage",
        help="where a run's models came from",
        description="Print the tree from a run's final models (or one published artifact) back to the base "
        "models and data, with the settings of every step.",
    )
    lin.add_argument(
        "target",
        help="a run folder of `cong run --local`, the s3:// URI of a published artifact, or the id of a run on "
        "Kubeflow Pipelines (looked up through the KFP API)",
    )
    lin.add_argument("--s3-endpoint", metavar="URL", help="the S3-compatible server (credentials from AWS_*)")
    _kfp_args(lin, experiment=False)
    lin.epilog = KFP_EPILOG
    lin.set_defaults(func=cmd_lineage)

    submit = sub.add_parser(
        "submit",
        help="start a run on Kubeflow Pipelines",
        description="Compile the pipeline for the config, upload it to Kubeflow Pipelines (a new pipeline version "
        "only when the compiled pipeline changed), find or create the experiment, start a run with the config as "
        "its parameter, and print the run's URL.",
        epilog=KFP_EPILOG,
    )
    _config_args(submit)
    _kfp_args(submit)
    _cluster_args(submit)
    submit.add_argument("--name", help="the run's name (default: <config>-<time>)")
    submit.set_defaults(func=cmd_submit)

    schedule = sub.add_parser(
        "schedule",
        help="schedule recurring runs on Kubeflow Pipelines",
        description="Upload the pipeline for the config as `cong submit` does and create a recurring run: one run "
        "at a time, no catch-up of missed runs unless --catchup. A schedule cannot be changed in place: --replace "
        "deletes the one of the same name and creates it anew.",
        epilog=KFP_EPILOG,
    )
    schedule.add_argument(
        "--cron",
        required=True,
        help="when to run: a 5-field Unix cron `minute hour day-of-month month day-of-week` (e.g. '0 3 * * *', "
        "daily at 03:00 in the scheduler's time zone, normally UTC; converted to the backend's 6-field form with "
        "seconds first), a 6-field cron with seconds first, or @hourly, @daily, @weekly, @monthly, @yearly",
    )
    _config_args(schedule)
    _kfp_args(schedule)
    _cluster_args(schedule)
    schedule.add_argument("--name", help="the schedule's name (default: the config's name)")
    schedule.add_argument("--catchup", action="store_true", help="start the runs missed while paused or behind")
    schedule.add_argument("--replace", action="store_true", help="delete a schedule of the same name first")
    schedule.set_defaults(func=cmd_schedule)

    runs = sub.add_parser(
        "runs",
        help="list runs on Kubeflow Pipelines, or show one",
        description="List the experiment's most recent runs (name, id, state, created, duration), or with a run id "
        "the run's status and the state of each of its tasks.",
        epilog=KFP_EPILOG,
    )
    runs.add_argument("run_id", nargs="?", help="a run's id: show its status and tasks")
    runs.add_argument("--limit", type=int, default=20, help="how many runs to list (default: 20)")
    _kfp_args(runs)
    runs.set_defaults(func=cmd_runs)

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

    bench = sub.add_parser("bench", help="benchmarks", description="Benchmarks of the decoding engine.")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    cd = benches.add_parser(
        "cd",
        help="contrastive decoding: the engine against the reference, a naive port and one model alone",
        description="Time contrastive decoding of the config's weak pair (amateur: the weak base; expert: "
        "models.weak_aligned when set, else the weak base plus a random LoRA adapter) on its first eval prompts: the "
        "released code's way (one prompt at a time), a naive HF generate port, the engine at each batch size with two "
        "models and, when the expert keeps its LoRA adapter, with one shared-weight model, and the expert alone.",
    )
    _config_args(cd)
    cd.add_argument("--prompts", type=int, default=64, help="eval prompts decoded by the batched rows (default 64)")
    cd.add_argument("--reference-prompts", type=int, default=8, help="prompts of the one-at-a-time rows (default 8)")
    cd.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per prompt (default 64)")
    cd.add_argument("--batch-sizes", default="1,8,32,64", help="engine batch sizes (default 1,8,32,64)")
    cd.add_argument("--repeats", type=int, default=5, help="timed runs per row; the median is reported (default 5)")
    cd.add_argument(
        "--lora-rank", type=int, default=16, help="rank of the random adapter when no aligned model is set (default 16)"
    )
    cd.add_argument("--json", type=Path, help="also write the results as JSON here")
    cd.set_defaults(func=cmd_bench_cd)

    serve = sub.add_parser(
        "serve",
        help="serve a chat model over the OpenAI chat-completions protocol (for the judge)",
        description="Serve MODEL (a path, hub id, testbed: or gguf: reference) on /v1/chat/completions and "
        f"/v1/models, enough of the OpenAI protocol for the pairwise judge. With {SERVE_KEY_ENV} set, requests need "
        "'Authorization: Bearer <key>'.",
    )
    serve.add_argument("model", help="the chat model to serve")
    _config_args(serve)
    serve.add_argument("--name", help="the model name clients ask for (default: MODEL as given)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.set_defaults(func=cmd_serve)

    report = sub.add_parser(
        "report",
        help="rebuild a run's report.html",
        description="Rebuild RUN_DIR/report.html from the folder's results.json, responses.jsonl and "
        "training_curves.json (a `cong run` folder, or an evaluate task's results artifact).",
    )
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run folder")
    report.set_defaults(func=cmd_report)

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
