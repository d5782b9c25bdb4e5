"""Build the training image (`make image`) with docker or podman, then check that it holds exactly the lock.

One Dockerfile, two variants (images/train/Dockerfile):
- cuda: the cluster image on NVIDIA's CUDA base images, tagged IMAGE:TAG, the image the compiled pipeline names;
- cpu: the same lines on a Debian 12 base that this script makes with mmdebstrap (no registry needed), torch from
  the local CPU wheel; tagged IMAGE:TAG-cpu, the image of `cong run --local --runner container`.
`--variant auto` (the default) builds cuda where the engine already has the CUDA base or a registry answers, and
cpu otherwise. After the build, `pip check` and `pip list` run inside the image; a package missing, extra or at
another version than the lock fails the build (exit 1). Bad input (no engine, no wheel, no mmdebstrap) exits 2.

Runs with any Python 3.11 and the standard library only, so no virtual environment is needed to build an image.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # cong.containers: standard library only, like this script

from cong.containers import (  # noqa: E402
    SOURCE_LABEL,
    canonical,
    choose_engine,
    engine_environment,
    image_exists,
    locked_packages,
    pod_constraints,
    source_digest,
)
from cong.errors import CongError  # noqa: E402

DOCKERFILE = "images/train/Dockerfile"
LOCKS = (ROOT / "images/train/requirements.txt", ROOT / "images/train/requirements-source.txt")
CPU_BASE = "localhost/cong-base:bookworm"
# Debian 12: its Python 3.11 is the version the project's pinned CPU torch wheel is built for.
SUITE = "bookworm"
# Wheels only the CUDA build of torch loads; the cpu variant leaves them out (the Dockerfile's grep, the same list).
CUDA_ONLY = re.compile(r"^(nvidia-|cuda-|triton$)")
REGISTRY = "https://registry-1.docker.io/v2/"


class BuildError(CongError):
    """A message for the user; `exit_code` 2 for bad input (as every CongError), 1 for a failed build or check."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def dockerfile_default(arg: str) -> str:
    """The default of `ARG <arg>=...` in the Dockerfile (the CUDA base images)."""
    match = re.search(rf"^ARG {arg}=(\S+)$", (ROOT / DOCKERFILE).read_text(), re.M)
    assert match, f"{DOCKERFILE} has no default for ARG {arg}"
    return match.group(1)


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, text=True, **kwargs)


# ----------------------------------------------------------------------------------------------------- engine


def registry_answers(url: str = REGISTRY, timeout: float = 5.0) -> bool:
    """A registry answers its v2 endpoint with 200 or 401 (log in first); no answer means no registry here."""
    try:
        urllib.request.urlopen(url, timeout=timeout)
        return True
    except urllib.error.HTTPError as error:
        return error.code == 401
    except (OSError, ValueError):
        return False


def choose_variant(variant: str, engine: str, env: dict[str, str]) -> str:
    if variant != "auto":
        return variant
    cuda_base = dockerfile_default("BASE")
    if image_exists(engine, cuda_base, env) or registry_answers():
        return "cuda"
    print(f"build.py: no registry answers and {cuda_base} is not here: building the CPU image", flush=True)
    return "cpu"


# ------------------------------------------------------------------------------------------------ the cpu base


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses, so the base is built the way the machine installs packages."""
    sources = [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]
    for source in sources:
        if source.is_file():
            match = re.search(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+/debian)/?\s", source.read_text(), re.M)
            if match:
                return match.group(1)
    return "http://deb.debian.org/debian"


def make_cpu_base(engine: str, env: dict[str, str]) -> None:
    """A minimal Debian 12 with Python, made with mmdebstrap and imported, since no registry may be reachable.
    It trusts this machine's local CA certificates, so pip and apt work behind the same TLS proxy as the host."""
    if image_exists(engine, CPU_BASE, env):
        return
    if shutil.which("mmdebstrap") is None:
        raise BuildError("the CPU image's base is made with mmdebstrap: apt-get install mmdebstrap")
    started = time.monotonic()
    hooks = []
    local_ca = Path("/usr/local/share/ca-certificates")
    if any(local_ca.glob("*.crt")):
        hooks = [
            f'--customize-hook=cp {local_ca}/*.crt "$1{local_ca}/" && chroot "$1" update-ca-certificates',
        ]
    debootstrap = subprocess.Popen(
        [
            "mmdebstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            *hooks,
            SUITE,
            "-",
            f"deb {apt_mirror()} {SUITE} main",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    imported = run(
        [engine, "import", "--change", 'CMD ["python3"]', "-", CPU_BASE],
        stdin=debootstrap.stdout,
        env=env,
        capture_output=True,
    )
    debootstrap.stdout.close()
    if debootstrap.wait() != 0 or imported.returncode != 0:
        raise BuildError(f"making the base image {CPU_BASE} failed: {imported.stderr.strip()}", 1)
    print(f"build.py: made {CPU_BASE} in {time.monotonic() - started:.1f} s", flush=True)


def torch_wheel_folder(named: str | None) -> Path:
    """The folder holding the locked torch's CPU wheel for Python 3.11: --wheels, else pip's find-links."""
    version = locked_packages(LOCKS)["torch"]
    pattern = f"torch-{version}+cpu-cp311-cp311-*linux*_x86_64.whl"
    folders = [named] if named else os.environ.get("PIP_FIND_LINKS", "").split()
    if not named:
        config = run([sys.executable, "-m", "pip", "config", "get", "global.find-links"], capture_output=True)
        folders += config.stdout.split()
    for folder in folders:
        if folder and any(Path(folder).glob(pattern)):
            return Path(folder).resolve()
    raise BuildError(
        f"the CPU image installs torch from its CPU wheel ({pattern}); put it in a folder and name it with "
        f"TORCH_WHEELS=DIR (looked in: {', '.join(folders) or 'no folder'})"
    )


# ---------------------------------------------------------------------------------------------- build, check


def build_command(engine: str, variant: str, image: str, wheels: Path | None) -> list[str]:
    command = [engine, "build", "-f", DOCKERFILE, "-t", image, "--label", f"{SOURCE_LABEL}={source_digest(ROOT)}"]
    if variant == "cpu":
        command += [
            "--build-arg",
            f"BUILD_BASE={CPU_BASE}",
            "--build-arg",
            f"BASE={CPU_BASE}",
            "--build-arg",
            "ACCELERATOR=cpu",
            "--pull=never",
            "-v",
            f"{wheels}:/wheels:ro",
        ]
    return command + ["."]


def expected_packages(variant: str, version: str) -> dict[str, str]:
    pins = {name: v for name, v in locked_packages(LOCKS).items() if variant == "cuda" or not CUDA_ONLY.match(name)}
    if variant == "cpu":
        pins["torch"] += "+cpu"
    return {**pins, "cong": version}


def lock_drift(frozen: str, expected: dict[str, str]) -> list[str]:
    """What differs between `pip list --format=freeze` inside the image and the expected pins (pip itself
    excepted). `pip freeze` would write packages installed from a file (torch, cong) as `name @ file://...`."""
    found = {}
    for line in frozen.splitlines():
        if "==" in line:
            name, version = line.split("==")
            found[canonical(name)] = version
    found.pop("pip", None)
    drift = [f"{name}: the lock has {v}, the image none" for name, v in expected.items() if name not in found]
    drift += [f"{name}: the image has {v}, the lock none" for name, v in found.items() if name not in expected]
    drift += [
        f"{name}: the lock has {expected[name]}, the image {v}"
        for name, v in found.items()
        if name in expected and v != expected[name]
    ]
    return sorted(drift)


def check_image(engine: str, image: str, variant: str, version: str, env: dict[str, str]) -> None:
    """pip check and the lock, inside the image as it runs (its own user)."""
    pip_check = run([engine, "run", "--rm", image, "python", "-m", "pip", "check"], capture_output=True, env=env)
    if pip_check.returncode != 0:
        raise BuildError(f"pip check failed inside {image}:\n{pip_check.stdout}{pip_check.stderr}", 1)
    freeze = run(
        [engine, "run", "--rm", image, "python", "-m", "pip", "list", "--format=freeze"], capture_output=True, env=env
    )
    if freeze.returncode != 0:
        raise BuildError(f"pip list failed inside {image}: {freeze.stderr.strip()}", 1)
    drift = lock_drift(freeze.stdout, expected_packages(variant, version))
    if drift:
        raise BuildError(f"{image} is not the lock (images/train/requirements*.txt):\n  " + "\n  ".join(drift), 1)
    # As the pods run it: its own user, a read-only root filesystem (/tmp and the home folder writable), no
    # capabilities.
    smoke = run(
        [engine, "run", "--rm", *pod_constraints(engine), image, "python", "-m", "cong.stages.launch", "--help"],
        capture_output=True,
        env=env,
    )
    if smoke.returncode != 0 or "weak_align" not in smoke.stdout:
        raise BuildError(f"cong does not start inside {image} as a pod runs it:\n{smoke.stdout}{smoke.stderr}", 1)
    print(f"build.py: {image}: pip check passed, every package as the lock pins it, cong starts as a pod", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True, help="repository name, e.g. cong-train")
    parser.add_argument("--tag", required=True, help="the package version; the cpu variant appends -cpu")
    parser.add_argument("--variant", choices=["auto", "cuda", "cpu"], default=os.environ.get("VARIANT") or "auto")
    parser.add_argument("--engine", default=os.environ.get("CONTAINER_ENGINE") or None)
    parser.add_argument(
        "--wheels", default=os.environ.get("TORCH_WHEELS") or None, help="folder of the torch CPU wheel"
    )
    args = parser.parse_args(argv)
    try:
        engine = choose_engine(args.engine)
        env = engine_environment(engine, Path(os.environ.get("CONG_CACHE_DIR") or ROOT / ".cache"))
        variant = choose_variant(args.variant, engine, env)
        image = f"{args.image}:{args.tag}" + ("-cpu" if variant == "cpu" else "")
        wheels = None
        if variant == "cpu":
            wheels = torch_wheel_folder(args.wheels)
            make_cpu_base(engine, env)
        started = time.monotonic()
        if run(build_command(engine, variant, image, wheels), cwd=ROOT, env=env).returncode != 0:
            raise BuildError(f"building {image} failed (the engine's output is above)", 1)
        print(f"build.py: built {image} ({variant}) in {time.monotonic() - started:.1f} s", flush=True)
        check_image(engine, image, variant, args.tag, env)
    except CongError as error:  # BuildError among them
        print(f"build.py: {error}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
