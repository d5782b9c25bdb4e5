"""Container engines (docker or podman) as this project calls them: which engine, the settings podman needs on a
machine without a registry or a Docker daemon, and the constraints a pod of the training image runs under.

Standard library only: `make image` (images/train/build.py) uses it before any virtual environment exists.
"""

from __future__ import annotations

import hashlib
import os
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

from cong.errors import CongError

# The image's own user (USER in images/train/Dockerfile); every pod's securityContext names it.
IMAGE_UID = 10001
# What a container of the image may write besides its inputs and outputs: temporary files, and caches under the
# image's HOME. A trainer pod with a read-only root filesystem gets an emptyDir at each (cong.cluster.trainjob).
WRITABLE = {"tmp": "/tmp", "home": "/home/cong"}


def pod_constraints(engine: str) -> list[str]:
    """A pod as Kubeflow runs it, tried on this machine: the image's own user, no capability, no way to gain one,
    and a read-only root filesystem where only WRITABLE, memory-backed and owned by that user as a pod's emptyDir
    volumes are writable by it, can be written. podman spells the owner `U` and refuses `uid=`; docker the reverse."""
    owner = "U" if os.path.basename(engine) == "podman" else f"uid={IMAGE_UID},gid={IMAGE_UID}"
    return [
        f"--user={IMAGE_UID}:{IMAGE_UID}",
        "--read-only",
        *(f"--tmpfs={path}:rw,{owner}" for path in WRITABLE.values()),
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
    ]


# What images/train/Dockerfile copies of the source tree into the image (as .dockerignore lets it) and the code
# depends on (README.md goes in too, as the package's description), and the label that records their digest on the
# image, so that a local run can tell an image built from other code.
SOURCES = ("pyproject.toml", "cong", "components", "pipelines")
SOURCE_LABEL = "cong.source"


def source_digest(root: Path) -> str:
    """sha256 over the names and contents of the files of SOURCES under `root` (compiled Python left out)."""
    digest = hashlib.sha256()
    for name in SOURCES:
        path = root / name
        files = [path] if path.is_file() else sorted(path.rglob("*"))
        for file in files:
            if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc":
                digest.update(f"{file.relative_to(root)}\n".encode())
                digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def image_label(engine: str, image: str, label: str, env: dict[str, str]) -> str | None:
    """The value of `label` on `image`, or None when the image has no such label or is not there."""
    inspected = subprocess.run(
        [engine, "image", "inspect", "--format", f'{{{{ index .Config.Labels "{label}" }}}}', image],
        capture_output=True,
        text=True,
        env=env,
    )
    value = inspected.stdout.strip()
    return value if inspected.returncode == 0 and value not in ("", "<no value>") else None


def canonical(name: str) -> str:
    """A Python package's name as pip compares names (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_packages(locks: list[Path]) -> dict[str, str]:
    """name -> version of each `name==version` line of the image's lock files (images/train/requirements*.txt)."""
    pins: dict[str, str] = {}
    for lock in locks:
        for line in lock.read_text().splitlines():
            if line and not line.startswith("#"):
                name, version = line.split("==")
                pins[canonical(name)] = version
    return pins


def choose_engine(named: str | None) -> str:
    """CONTAINER_ENGINE if given; else docker when its daemon answers; else podman."""
    if named:
        if shutil.which(named) is None:
            raise CongError(f"CONTAINER_ENGINE={named} is not installed")
        return named
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0:
        return "docker"
    if shutil.which("podman"):
        return "podman"
    raise CongError(
        "no container engine: install docker or podman (`make engine` installs Debian's podman with runc, "
        "mmdebstrap and uidmap), or name one with CONTAINER_ENGINE=..."
    )


def engine_environment(engine: str, cache: Path) -> dict[str, str]:
    """The environment to call `engine` with. For podman, unless CONTAINERS_CONF is set: runc as the runtime
    where installed (crun cannot set the open-files limit without CAP_SYS_RESOURCE, nor use hybrid cgroups) and
    default ulimits no higher than this process's hard limits, which an unprivileged root cannot raise."""
    env = dict(os.environ)
    if os.path.basename(engine) != "podman" or "CONTAINERS_CONF" in env:
        return env
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
    lines = ["[containers]", f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]']
    if shutil.which("runc"):
        lines += ["[engine]", 'runtime = "runc"']
    conf = cache / "containers" / "containers.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("\n".join(lines) + "\n")
    env["CONTAINERS_CONF"] = str(conf)
    return env


def image_exists(engine: str, image: str, env: dict[str, str]) -> bool:
    return subprocess.run([engine, "image", "inspect", image], capture_output=True, env=env).returncode == 0


def labelled(engine: str, label: str, env: dict[str, str] | None = None) -> list[str]:
    """The ids of every container carrying `label` (KEY or KEY=VALUE), whatever its state."""
    listed = subprocess.run(
        [engine, "ps", "--all", "--quiet", "--filter", f"label={label}"], capture_output=True, text=True, env=env
    )
    return listed.stdout.split()


def remove_labelled(engine: str, label: str, env: dict[str, str] | None = None) -> None:
    """Remove (forcibly) every container carrying `label`."""
    ids = labelled(engine, label, env)
    if ids:
        subprocess.run([engine, "rm", "--force", *ids], capture_output=True, env=env)


if __name__ == "__main__":
    # `python -m cong.containers ENGINE LABEL`: what a run's watchdog calls to remove the run's containers.
    from cong.storage.cache import cache_root

    remove_labelled(sys.argv[1], sys.argv[2], engine_environment(sys.argv[1], cache_root()))
