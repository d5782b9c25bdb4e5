"""Which pipeline run made an artifact, read from the artifact's own URI.

No task takes the run's id as a parameter: KFP's driver resolves `{{$.pipeline_job_uuid}}` before it computes a task's
cache key, which includes every input parameter's value, so a task given the id could never be answered by the cache
(kubeflow/pipelines 2.17.0, backend/src/v2/driver/container.go: resolveInputs, then getFingerPrintsAndID). The output
URIs the driver hands a task are not in the key, and they name the run:

- KFP backend: `<pipeline root>/<pipeline name>/<run id>/<task>/<uuid>/<output>` (backend/src/v2/driver/driver.go,
  provisionOutputs; backend/src/v2/metadata/client.go, GenerateOutputURI and GetPipeline). The run id is a UUID.
- kfp.local: `<pipeline root folder>/<pipeline name>-<timestamp>/<task>/<output>` (kfp/local/executor_input_utils.py,
  construct_local_task_root; a loop's task one folder deeper, under `<loop>-iteration-<i>/`), a folder of the
  machine: the run folder's name is the run's id.

A task answered by the cache hands on the outputs of the run that made them, whose URIs name that run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cong.vocabulary import PIPELINE_NAME

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
LOCAL_RUN = re.compile(rf"^{re.escape(PIPELINE_NAME)}-\d{{4}}(-\d{{2}}){{5}}-\d{{6}}$")
# The schemes of the stores KFP's launcher reads and writes (backend/src/v2/objectstore/config.go); `minio://` and
# `s3://` both name a bucket of an S3-compatible store.
BUCKET_SCHEMES = ("s3://", "minio://", "gs://")


@dataclass(frozen=True)
class Run:
    """The run an artifact belongs to: its id, and where the backend keeps the run's artifacts (the pipeline root, a
    bucket URI; None for a local run, whose pipeline root is a folder)."""

    run_id: str
    pipeline_root: str | None


def run_of(uri: str) -> Run | None:
    """The run whose task wrote the output at `uri`; None for any other URI (an imported input, a placeholder)."""
    if uri.startswith(BUCKET_SCHEMES):
        parts = uri.rstrip("/").split("/")
        # scheme:, "", bucket, ..., <pipeline name>, <run id>, <task>, <uuid>, <output>
        if len(parts) >= 8 and parts[-5] == PIPELINE_NAME and UUID.match(parts[-4]):
            return Run(parts[-4], "/".join(parts[:-5]))
        return None
    parts = uri.rstrip("/").split("/")
    found = [part for part in parts[-4:-2] if LOCAL_RUN.match(part)]
    return Run(found[-1], None) if found else None
