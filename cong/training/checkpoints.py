"""Training checkpoints that outlive the pod.

A retried training task on a cluster is a new pod with an empty disk, so checkpoints on local disk would not
help it. Each checkpoint the trainer saves is published to the run's storage (`runs/<run id>/checkpoints/
<stage>/checkpoint-<step>`, manifest last, so a pod killed mid-upload leaves nothing a reader would take), the
one before it is then deleted, and a retried pod fetches the newest complete one before it resumes.
"""

from __future__ import annotations

import re
from pathlib import Path

from cong.config import StorageSettings
from cong.progress import log
from cong.storage.folders import fetch_dir, find_manifest, publish_dir
from cong.storage.s3 import S3Settings, parse_s3_uri, storage_error

_STEP = re.compile(r"checkpoint-(\d+)/$")


def checkpoint_uri(storage: StorageSettings, run_id: str, stage: str) -> str | None:
    """Where a training stage (e.g. `sft-cong_s`) of run `run_id` keeps its checkpoints; None outside a run."""
    return storage.uri("runs", run_id, "checkpoints", stage) if run_id else None


def _published_steps(uri: str, settings: S3Settings) -> list[int]:
    """Steps of the checkpoint folders under `uri`, newest first (complete or not)."""
    target = parse_s3_uri(uri)
    client = settings.client()
    prefix = target.key("")
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=target.bucket, Prefix=prefix, Delimiter="/")
        folders = [p["Prefix"] for page in pages for p in page.get("CommonPrefixes", [])]
    except Exception as exc:
        raise storage_error(exc, settings, f"listing checkpoints under {target}", target.bucket) from None
    return sorted((int(m.group(1)) for f in folders if (m := _STEP.search(f))), reverse=True)


def restore(uri: str, output_dir: Path, stage: str, settings: S3Settings | None = None) -> Path | None:
    """Fetch the newest complete checkpoint under `uri` into `output_dir` (unless it is there already)."""
    settings = settings or S3Settings.from_env()
    for step in _published_steps(uri, settings):
        source = f"{uri}/checkpoint-{step}"
        if find_manifest(source, settings) is None:
            continue  # a pod died while uploading it
        local = Path(output_dir) / f"checkpoint-{step}"
        if not local.is_dir():
            log(stage, f"fetching checkpoint {source} of an earlier attempt")
            fetch_dir(source, local, settings=settings)
        return local
    return None


def _delete_folder(uri: str, settings: S3Settings) -> None:
    target = parse_s3_uri(uri)
    client = settings.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=target.bucket, Prefix=target.key("")):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=target.bucket, Delete={"Objects": keys, "Quiet": True})


def mirror_callback(uri: str, settings: S3Settings | None = None):
    """A TrainerCallback that publishes every saved checkpoint under `uri` and drops the previous one."""
    from transformers import TrainerCallback

    settings = settings or S3Settings.from_env()

    class MirrorCheckpoints(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            publish_dir(
                Path(args.output_dir) / f"checkpoint-{state.global_step}",
                f"{uri}/checkpoint-{state.global_step}",
                settings=settings,
            )
            for step in _published_steps(uri, settings):
                if step != state.global_step:
                    _delete_folder(f"{uri}/checkpoint-{step}", settings)

    return MirrorCheckpoints()
