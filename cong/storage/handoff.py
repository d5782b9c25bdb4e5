"""How a model passes from the stage that trains it to the stages that read it (`artifacts.store`).

`artifacts` (the default): the model is the stage's Output[Model] artifact. KFP's launcher uploads it to the
pipeline root's store when the stage ends and downloads it into every stage that reads it.

`workspace` and `pvc`: the weights go to a folder that the run's model stages share, the run's KFP workspace
or an existing claim mounted in each of them (the pipeline passes that folder as `model_store`). The
Output[Model] artifact holds only a pointer, `cong-pointer.json`, naming the folder, beside the usual lineage
metadata. Stages that read a model `follow` the pointer. Nothing moves between stages, and the checkpoints
that training writes next to the model survive a retried pod.

The workspace is deleted with its run, so a stage that trains the model of a method the run evaluates also
publishes it (`cong.storage.folders.publish_dir`: every file, then the manifest) under
`<storage>/runs/<KFP run id>/models/<method>/`; the pointer and the artifact's metadata name that copy.
Publishing there, rather than from evaluate or from a last task of the run, keeps the weights where they
already are: the pod that made them uploads them once (the upload the launcher makes in `artifacts` mode),
no other pod mounts the workspace for it, each model is kept as soon as it exists (a stage failing later
loses none), and a model that no row of the table shows (ConG-S when only ConG is evaluated) is not uploaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cong.config import Config
from cong.errors import CongError
from cong.models import is_model_dir

POINTER_FILE = "cong-pointer.json"


def model_dir(artifact_path: str, model_store: str) -> Path:
    """Where a stage writes a model: its output artifact, or a folder of the shared store named after the
    artifact's path, which is unique per run, task and output and the same when a retried pod resumes."""
    if not model_store:
        return Path(artifact_path)
    return Path(model_store) / "models" / Path(artifact_path).as_posix().lstrip("/")


def hand_over(cfg: Config, artifact_path: str, location: Path, method: str, run_id: str) -> dict[str, Any]:
    """After a stage wrote `method`'s model to `location` (`model_dir`): in a shared store, publish it when the
    run evaluates `method`, then write the pointer into the artifact. Returns the metadata for the artifact."""
    if location == Path(artifact_path):
        return {}
    record = {"model_store": cfg.artifacts.store, "location": str(location)}
    if method in cfg.methods:
        from cong.storage.folders import publish_dir

        if not run_id:
            raise CongError(f"{method}: a model in a shared store is published under the run's id, and none was given.")
        record["published"] = cfg.storage.uri("runs", run_id, "models", method)
        publish_dir(location, record["published"])
    pointer = Path(artifact_path) / POINTER_FILE
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.write_text(json.dumps({"format": 1, **record}, indent=1) + "\n")
    return record


def follow(path: str, model_store: str = "") -> str:
    """The model folder that an input artifact stands for: the folder its pointer names, or the artifact itself.

    `model_store` is the shared folder this task was given; a pointer outside it cannot be read here.
    """
    pointer = Path(path) / POINTER_FILE
    if not pointer.is_file():
        return path
    target = json.loads(pointer.read_text())
    location = Path(target["location"])
    if not model_store or not location.is_relative_to(model_store):
        raise CongError(
            f"the model artifact {path} points to {location}, in a shared model store this task was not given "
            f"(model_store={model_store!r}). The pipeline passes model_store to every stage that reads a model; "
            "a stage added without it cannot read models of a `workspace` or `pvc` run."
        )
    if not is_model_dir(location):
        published = target.get("published")
        raise CongError(
            f"the model artifact {path} points to {location}, which holds no model. A run's workspace is deleted "
            "when the run ends; "
            + (f"its published copy is {published}." if published else "this model was not published.")
        )
    return str(location)
