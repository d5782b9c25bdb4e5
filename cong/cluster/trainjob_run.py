"""A training stage run as a TrainJob, from its KFP pod: publish the config and inputs, create the job
(cong.cluster.trainjob.manifest), follow it (cong.cluster.kube.Cluster), fetch the model; and the run's exit handler
that deletes the jobs a run may leave."""

from __future__ import annotations

import contextlib
import json
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cong.cluster.kube import Cluster
from cong.cluster.trainjob import RUN_ANNOTATION, TaskSettings, job_name, manifest, trainer_command
from cong.config import Config, seconds
from cong.errors import CongError
from cong.training.distributed import launch_args
from cong.vocabulary import SFT_METHODS


def _published(path: Path, uri: str, settings: Any) -> str:
    """`path` published at `uri` (once: a retry finds it there); the reference cong.storage.folders resolves."""
    from cong.storage.folders import find_manifest, publish_path

    if find_manifest(uri, settings) is None:
        return publish_path(path, uri, settings=settings)
    return uri if path.is_dir() else f"{uri}/{path.name}"


def run_stage(
    cfg: Config,
    stage: str,
    *,
    run_id: str,
    image: str,
    task: TaskSettings,
    inputs: dict[str, Path],
    output: tuple[str, Path],
    method: str = "",
    cluster: Cluster | None = None,
    settings: Any = None,
) -> dict[str, float]:
    """Train `stage` as a TrainJob: publish the config and `inputs` under the run's storage prefix, run the job,
    and fetch what it publishes as `output` (name, local folder). Returns the job's shape and duration."""
    from cong.storage.folders import MANIFEST_NAME, NotPublished, fetch_dir
    from cong.storage.s3 import S3Settings

    if not run_id:
        raise CongError(f"{stage}: a TrainJob needs the KFP run id (the pipeline passes it as run_id).")
    settings = settings or S3Settings.from_env()
    cluster = cluster or Cluster.connect()
    resources = cfg.resources_for(stage)
    name = job_name(run_id, stage, method)
    base = cfg.storage.uri("runs", run_id, "trainjob", name)
    with tempfile.TemporaryDirectory(prefix="cong-trainjob-") as staging:
        config_file = Path(staging) / "config.json"
        config_file.write_text(json.dumps(cfg.as_parameter(), sort_keys=True))
        config_uri = _published(config_file, f"{base}/config", settings)
    input_uris = {key: _published(path, f"{base}/inputs/{key}", settings) for key, path in inputs.items()}
    output_key, output_dir = output
    output_uri = f"{base}/outputs/{output_key}"
    arguments = launch_args(stage, config_uri, input_uris, output_uri, method)
    env_names = sorted({item["name"] for item in task.env or []})
    body = manifest(
        name,
        namespace=cluster.namespace,
        runtime=cfg.trainjob.runtime,
        runtime_ref=cfg.trainjob.runtime_ref,
        image=image,
        command=trainer_command(cfg.trainjob.runtime, arguments, env_names),
        nodes=resources.nodes,
        procs_per_node=max(resources.gpus, 1),
        task=task,
        labels={"app.kubernetes.io/managed-by": "cong", "cong/stage": stage},
        annotations={RUN_ANNOTATION: run_id},
        shm=resources.gpus > 1 or resources.shm is not None,
        shm_size=resources.shm,
        # The labels the pipeline gives a training stage's pods (pipelines.pipeline.place), for cluster policy.
        pod_labels={
            "app.kubernetes.io/part-of": "cong",
            "cong/stage": stage,
            "cong/workload": "training",
            **cfg.scheduling.pod_labels,
        },
        deadline_s=seconds(resources.timeout) if resources.timeout else None,
        owner=cluster.run_owner(),
    )
    started = time.monotonic()
    with _stopped_by_sigterm():
        try:
            cluster.create_or_adopt(body)
            cluster.wait(name, cfg.trainjob.runtime)
            try:
                fetch_dir(output_uri, output_dir, settings=settings)
            except NotPublished:
                raise CongError(
                    f"trainjob {cluster.namespace}/{name} completed but published nothing at {output_uri}: the "
                    "stage's entry (python -m cong.stages.launch) must publish its output there."
                ) from None
            # A published folder carries its manifest; the artifact is the model alone.
            (Path(output_dir) / MANIFEST_NAME).unlink()
        finally:
            cluster.delete(name)
    return {"nodes": resources.nodes, "procs_per_node": max(resources.gpus, 1), "seconds": time.monotonic() - started}


@contextlib.contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    """SIGTERM ends the task through its `finally` blocks (which delete the job) with exit status 143. A terminated KFP
    run stops its pods this way: Argo's executor passes the signal on to the task's process, which then has until the
    container's grace period ends, at least one API request's time."""

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def trainjob_keys(cfg: Config) -> list[list[str]]:
    """The (stage, method) pairs whose training may run as a TrainJob in a run of `cfg`: every SFT method when
    sft has more than one node (the run's methods are a run-time parameter), and dpo."""
    keys = [["sft", method] for method in SFT_METHODS] if cfg.resources_for("sft").nodes > 1 else []
    return keys + ([["dpo", ""]] if cfg.resources_for("dpo").nodes > 1 else [])


def delete_jobs(run_id: str, keys: list[list[str]], cluster: Cluster | None = None) -> list[str]:
    """Delete the TrainJobs of (stage, method) pairs of a run, by name; returns the names that existed."""
    cluster = cluster or Cluster.connect()
    names = [job_name(run_id, *key) for key in keys]
    return [name for name in names if cluster.delete(name)]
