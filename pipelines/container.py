"""Every task of a local run in the training image: `cong run --local --runner container`.

kfp.local's own DockerRunner needs a Docker API socket and, with the `auto_remove` it always sets, takes a container
that is gone before its status was read for a success (kfp 2.17): a failing task can pass unseen. So each task runs
through the engine's command line instead (`docker run` or `podman run`, which wait and return the task's exit
status), under the constraints a Kubeflow pod of the image has (cong.containers.pod_constraints), with the pipeline
root mounted at its own path, the run's workspace at KFP's workspace path and the host's network (the embedded
object store listens on 127.0.0.1). A task succeeds only when it exits 0 and wrote every output kfp.local will read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import subprocess
import sys
import types
import uuid
from collections.abc import Iterator
from pathlib import Path

from cong.containers import (
    IMAGE_UID,
    SOURCE_LABEL,
    WRITABLE,
    choose_engine,
    engine_environment,
    image_exists,
    image_label,
    pod_constraints,
    source_digest,
)
from cong.errors import CongError
from cong.storage.cache import cache_root

LABEL = "cong.run"
# The tree this module runs from; an installed package has none, and then no image can be told stale.
SOURCE_TREE = Path(__file__).resolve().parents[1]
WORKSPACE_MOUNT_PATH = "/kfp-workspace"
# What a task reads from this process's environment: where the store is and who we are, and the offline switches.
# Variables naming files of this machine (AWS_CA_BUNDLE, AWS_CONFIG_FILE) stay out: the container has other files.
PASSED_ENV = re.compile(
    r"^(AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY|SESSION_TOKEN|REGION|DEFAULT_REGION|ENDPOINT_URL\w*)|CONG_S3_\w+"
    r"|HF_HUB_OFFLINE|TOKENIZERS_PARALLELISM)$"
)
READ_ONLY = re.compile(r"Read-only file system: '([^']*)'")


@dataclasses.dataclass
class ContainerRun:
    """One local run's containers: the engine, the image, and what every task gets."""

    engine: str
    image: str
    engine_env: dict[str, str]
    pipeline_root: Path | None = None
    workspace: Path | None = None
    token: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])
    failures: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def prepare(cls, image: str) -> ContainerRun:
        """The engine and the image, checked before anything starts."""
        engine = choose_engine(os.environ.get("CONTAINER_ENGINE") or None)
        engine_env = engine_environment(engine, cache_root())
        if not image_exists(engine, image, engine_env):
            raise CongError(f"{engine} has no image {image}: build it with `make image` (about 5 minutes)")
        built_from = image_label(engine, image, SOURCE_LABEL, engine_env)
        if SOURCE_TREE.joinpath("pyproject.toml").is_file() and built_from != source_digest(SOURCE_TREE):
            raise CongError(
                f"{image} was built from other sources than {SOURCE_TREE} (its {SOURCE_LABEL} label: "
                f"{built_from or 'none'}), so its tasks would run other code: rebuild it with `make image`"
            )
        return cls(engine, image, engine_env)

    def hand_over(self, pipeline_root: Path, workspace: Path | None) -> None:
        """Mount these folders into every task, writable by the image's user as a pod's volumes are."""
        self.pipeline_root, self.workspace = pipeline_root, workspace
        for folder in filter(None, (pipeline_root, workspace)):
            folder.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(folder, IMAGE_UID, IMAGE_UID)

    @property
    def label(self) -> str:
        return f"{LABEL}={self.token}"

    def user_mapping(self) -> list[str]:
        """Rootless podman maps the caller to the image's user, so the task writes the caller's folders as the
        caller; a root caller (docker, rootful podman) has handed the folders to that user instead."""
        if os.geteuid() != 0 and os.path.basename(self.engine) == "podman":
            return [f"--userns=keep-id:uid={IMAGE_UID},gid={IMAGE_UID}"]
        return []

    def task_environment(self, env_vars: dict[str, str]) -> dict[str, str]:
        """A task's variables: those of this process that PASSED_ENV names, then the compiled pipeline's."""
        return {**{k: v for k, v in os.environ.items() if PASSED_ENV.match(k)}, **env_vars}

    def command(self, full_command: list[str], env_vars: dict[str, str], name: str) -> list[str]:
        """The engine's `run` for one task: its command as the compiled pipeline gives it. Variables are named, not
        given: the engine takes their values from its own environment, so no credential shows in a process list."""
        mounts = [f"--volume={self.pipeline_root}:{self.pipeline_root}:rw"]
        if self.workspace is not None:
            mounts.append(f"--volume={self.workspace}:{WORKSPACE_MOUNT_PATH}:rw")
        return [
            self.engine,
            "run",
            "--rm",
            f"--name={name}",
            f"--label={self.label}",
            "--network=host",
            *pod_constraints(self.engine),
            *self.user_mapping(),
            *mounts,
            *(f"--env={key}" for key in sorted(self.task_environment(env_vars))),
            self.image,
            *full_command,
        ]

    def cleanup_command(self) -> list[str]:
        """Removes every container of this run, whatever state it is in (run by the watchdog, cong.watchdog)."""
        return [sys.executable, "-m", "cong.containers", self.engine, self.label]


class ContainerTaskHandler:
    """kfp.local's task handler interface (kfp.local.task_handler_interface.ITaskHandler) for a ContainerRun."""

    def __init__(self, image: str, full_command: list[str], pipeline_root: str, runner, env_vars=None, *, run):
        self.full_command, self.env_vars, self.containers = full_command, env_vars or {}, run

    def run(self):
        from kfp.local import status

        run = self.containers
        expected = _expected_outputs(self.full_command)
        task = _task_name(expected) or "task"
        name = f"cong-{run.token}-{task}-{uuid.uuid4().hex[:6]}"
        proc = subprocess.Popen(
            run.command(self.full_command, self.env_vars, name),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**run.engine_env, **run.task_environment(self.env_vars)},
            bufsize=1,
        )
        read_only = None
        for line in proc.stdout:
            print(line, end="")
            read_only = read_only or READ_ONLY.search(line)
        code = proc.wait()
        if code == 0:
            missing = [path for path in expected if not Path(path).exists()]
            if not missing:
                return status.Status.SUCCESS
            reason = f"exited 0 in the container but did not write {', '.join(missing)}"
        elif read_only:
            reason = (
                f"wrote {read_only.group(1)}, outside the paths a pod may write ({', '.join(WRITABLE.values())}, its "
                f"inputs and outputs): the image's root filesystem is read-only, as a pod's is (exit status {code})"
            )
        elif code in (125, 126, 127):
            reason = f"{run.engine} could not start it in {run.image} (exit status {code})"
        else:
            reason = f"failed in the container (exit status {code})"
        run.failures.append(f"task {task} {reason}")
        return status.Status.FAILURE


def _expected_outputs(full_command: list[str]) -> list[str]:
    """What a task that ran to its end has written, from the command's --executor_input: the executor output
    (KFP's executor writes it last, with the output parameters in it) and each output artifact's local path, metrics
    excepted."""
    if "--executor_input" not in full_command:
        return []
    outputs = json.loads(full_command[full_command.index("--executor_input") + 1]).get("outputs", {})
    files = [outputs["outputFile"]] if "outputFile" in outputs else []
    for artifacts in outputs.get("artifacts", {}).values():
        for artifact in artifacts.get("artifacts", []):
            # Metrics artifacts live in the executor output's metadata; KFP writes no file for them.
            metrics = artifact.get("type", {}).get("schemaTitle", "").endswith("Metrics")
            if not metrics and artifact["uri"].startswith("/"):
                files.append(artifact["uri"])
    return files


def _task_name(outputs: list[str]) -> str | None:
    """The task's folder under the run's folder, from where kfp.local asked it to write its outputs."""
    return Path(outputs[0]).parent.name if outputs else None


@contextlib.contextmanager
def container_tasks(run: ContainerRun) -> Iterator[None]:
    """While active, kfp.local's SubprocessRunner runs each task in `run`'s image.

    kfp 2.17 picks a task's handler from a table built inside task_dispatcher, with no way to add one; its
    SubprocessRunner entry is looked up on the module each time, so this swaps that entry and restores it.
    """
    from kfp.local import task_dispatcher

    saved = task_dispatcher.subprocess_task_handler
    task_dispatcher.subprocess_task_handler = types.SimpleNamespace(
        SubprocessTaskHandler=functools.partial(ContainerTaskHandler, run=run)
    )
    try:
        yield
    finally:
        task_dispatcher.subprocess_task_handler = saved
