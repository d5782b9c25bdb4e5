"""Commands for a Kubeflow Pipelines cluster: `cong compile`, `submit`, `schedule`, `runs`, and `cong lineage` (a
local run folder, or a KFP run by its id)."""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from cong.errors import CongError
from pipelines.cli.common import KFP_EPILOG, config_args, kfp_args, kfp_client, load


def pipeline_root_arg(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--pipeline-root", metavar="URI", default=os.environ.get("KFP_PIPELINE_ROOT"), help=help_text)


def cluster_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline", default="cong", help="the pipeline's name in Kubeflow Pipelines (default: cong)")
    pipeline_root_arg(
        parser,
        "the run's pipeline root (default: $KFP_PIPELINE_ROOT, else the config's pipeline_root, else the namespace's "
        "kfp-launcher defaultPipelineRoot); inputs that are files of this machine are published under it",
    )
    parser.add_argument(
        "--s3-endpoint", metavar="URL", help="the store's S3 endpoint here, for publishing local inputs (keys: AWS_*)"
    )
    parser.add_argument(
        "--service-account",
        metavar="NAME",
        help="the Kubernetes service account the run's pods use (default: the backend's; manifests/ creates "
        "cong-pipeline-runner)",
    )


def cmd_compile(args: argparse.Namespace) -> int:
    from pipelines.compile import COMMITTED, compile_pipeline

    path = compile_pipeline(load(args), args.out or COMMITTED)
    print(f"wrote {path}")
    return 0


# A KFP run id (a UUID): what `cong lineage` looks up through the KFP API when it is not a local folder.
RUN_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def cmd_lineage(args: argparse.Namespace) -> int:
    from cong.storage.lineage import load, render

    local = Path(args.target).exists() or args.target.startswith("s3://")
    if not local and (RUN_ID.match(args.target) or args.host):
        print(_kfp_lineage(args))
        return 0
    if args.s3_endpoint:
        os.environ["AWS_ENDPOINT_URL_S3"] = args.s3_endpoint
    lineage, start = load(args.target)
    print(render(lineage, start))
    return 0


def _kfp_lineage(args: argparse.Namespace) -> str:
    """The run's lineage.json, which its lineage task published to the store; without it (a run that has not
    finished, or no access to the store from here), the DAG from the pipeline spec and the task states."""
    from cong.cluster.kfp_api import get_run, pipeline_spec
    from cong.cluster.kfp_runs import lineage as run_lineage
    from cong.cluster.kfp_runs import run_config
    from cong.config import StorageSettings
    from cong.stages.lineage import published_at
    from cong.storage.folders import fetch_dir
    from cong.storage.lineage import LINEAGE_FILE, render

    if args.s3_endpoint:
        os.environ["AWS_ENDPOINT_URL_S3"] = args.s3_endpoint
    client = kfp_client(args)
    run = get_run(client, args.target)
    spec = pipeline_spec(client, run)
    page = client.connection.page(f"runs/details/{run.get('run_id')}")
    results = "the store"
    try:
        storage = StorageSettings.model_validate(run_config(run, spec).get("storage", {}))
        root = (run.get("runtime_config") or {}).get("pipeline_root") or args.pipeline_root
        if storage.bucket is None and not root:
            raise CongError(
                "the run keeps its results in its pipeline root's store, and the KFP API names no pipeline root for a "
                "run that took its namespace's default: pass --pipeline-root (kfp-launcher's defaultPipelineRoot)"
            )
        results = published_at(storage.located(root), run.get("run_id", args.target))
        lineage = json.loads((fetch_dir(results) / LINEAGE_FILE).read_text())
    except CongError as exc:
        tree = render(run_lineage(run, spec, client.connection.page))
        return (
            f"{tree}\n\nNo lineage.json at {results} ({exc}). From the KFP API instead: the DAG the run executed and "
            "each task's state; artifact URIs and metadata are on the artifact pages linked above."
        )
    lineage["run"].update({"id": run.get("display_name") or lineage["run"]["id"], "published": page})
    return f"{render(lineage)}\n\nThe run's lineage.json: {results}/{LINEAGE_FILE}"


def _pipeline_root(cfg) -> str | None:
    """The config's pipeline root when it names a store (s3://...); a local folder means nothing on a cluster,
    where the namespace's default (ConfigMap kfp-launcher) applies."""
    return cfg.pipeline_root if cfg.pipeline_root and "://" in cfg.pipeline_root else None


def _for_cluster(args: argparse.Namespace):
    """The config a cluster run gets: `--pipeline-root` as its pipeline root, and its inputs that are files of this
    machine (a folder, a GGUF file) published to the run's store first, or a message saying how."""
    from cong.inputs.fetch import SECTIONS
    from cong.inputs.publish import import_inputs, local_inputs

    cfg = load(args)
    if args.pipeline_root:
        cfg = cfg.model_copy(update={"pipeline_root": args.pipeline_root})
    local = local_inputs(cfg, testbed=False)
    if not local:
        return cfg
    named = ", ".join(f"{SECTIONS[field]}.{field} {ref!r}" for field, ref in local.items())
    if cfg.storage.bucket is None and _pipeline_root(cfg) is None:
        raise CongError(
            f"{named}: files of this machine, which the cluster's pods cannot read. Fix: pass --pipeline-root (the "
            "namespace's kfp-launcher defaultPipelineRoot, e.g. minio://mlpipeline/v2/artifacts) and the store's "
            "endpoint (--s3-endpoint or AWS_ENDPOINT_URL_S3) and key (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), and "
            "they are published there first; or publish them yourself and give their s3:// URIs."
        )
    if args.s3_endpoint:
        os.environ["AWS_ENDPOINT_URL_S3"] = args.s3_endpoint
    cfg, imported = import_inputs(cfg, testbed=False)
    for field, entry in imported.items():
        print(f"{SECTIONS[field]}.{field}: {entry['from']} published to {entry['uri']}")
    return cfg


def _connect(args: argparse.Namespace):
    """A client of the KFP API at --host, refusing a backend older than the pipeline supports (before anything is
    published or uploaded)."""
    from cong.cluster.kfp_api import check_backend

    client = kfp_client(args)
    warning = check_backend(client)
    if warning:
        print(f"warning: {warning}")
    return client


def _upload(args: argparse.Namespace, client, cfg):
    """Compile the pipeline for the config, upload it as a version named from its content (none is added when that
    version exists), and find or create the experiment."""
    from cong.cluster.kfp_api import experiment_id, upload
    from pipelines.compile import compile_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(cfg, Path(tmp) / "pipeline.yaml")
        version = upload(client, args.pipeline, package, cfg.name, f"config {cfg.name}: {', '.join(cfg.methods)}")
    state = "uploaded" if version.uploaded else "already uploaded, reused"
    print(f"pipeline {args.pipeline}, version {version.name} ({state})")
    experiment = experiment_id(client, args.experiment)
    print(f"experiment {args.experiment}  {client.connection.page(f'experiments/details/{experiment}')}")
    return version, experiment


def cmd_submit(args: argparse.Namespace) -> int:
    from cong.cluster.kfp_api import create_run

    client = _connect(args)
    cfg = _for_cluster(args)
    version, experiment = _upload(args, client, cfg)
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
    client = _connect(args)
    cfg = _for_cluster(args)
    version, experiment = _upload(args, client, cfg)
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
    from cong.cluster.kfp_api import experiment_id, get_run, list_runs, pipeline_spec
    from cong.cluster.kfp_runs import format_run, format_runs

    if args.limit < 1:
        raise CongError(f"--limit {args.limit}: give a number of runs, 1 or more.")
    client = kfp_client(args)
    now = datetime.now(UTC)
    if args.run_id:
        run = get_run(client, args.run_id)
        spec = pipeline_spec(client, run)
        print(format_run(run, spec, client.connection.page(f"runs/details/{args.run_id}"), now))
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


def register(sub) -> None:
    """Add this group's commands to the `cong` parser's sub-commands."""
    comp = sub.add_parser(
        "compile",
        help="compile the pipeline to KFP YAML",
        description="Compile the pipeline for a config to a KFP IR YAML file.",
    )
    config_args(comp)
    comp.add_argument("--out", type=Path, help="output YAML (default: pipelines/cong_pipeline.yaml)")
    comp.set_defaults(func=cmd_compile)

    submit = sub.add_parser(
        "submit",
        help="start a run on Kubeflow Pipelines",
        description="Compile the pipeline for the config, upload it to Kubeflow Pipelines (a new pipeline version "
        "only when the compiled pipeline changed), find or create the experiment, start a run with the config as "
        "its parameter, and print the run's URL.",
        epilog=KFP_EPILOG,
    )
    config_args(submit)
    kfp_args(submit)
    cluster_args(submit)
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
    config_args(schedule)
    kfp_args(schedule)
    cluster_args(schedule)
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
    kfp_args(runs)
    runs.set_defaults(func=cmd_runs)

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
    pipeline_root_arg(
        lin,
        "a KFP run's pipeline root, where its results are, when the run names none (the namespace's kfp-launcher "
        "defaultPipelineRoot; default: $KFP_PIPELINE_ROOT)",
    )
    kfp_args(lin, experiment=False)
    lin.epilog = KFP_EPILOG
    lin.set_defaults(func=cmd_lineage)
