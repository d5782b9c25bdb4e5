"""Every task of a local run in the training image (pipelines.container, `cong run --local --runner container`).

The fast tests check each task's `run` against the compiled pipeline's pod spec and judge tasks run by a stand-in
engine (a script that runs the task's command here, or exits 0 without running it, as kfp 2.17's DockerRunner does
when a container is gone before its status is read). The extended ones run the image `make image` builds, with the
engine it was built with (make test-extended builds it first): the micro pipeline with every method, a task that
fails and one that writes outside its allowed paths (in images derived from it), and a run killed with SIGKILL.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from kfp import dsl, local

from components.image import BASE_IMAGE, LOCAL_IMAGE
from cong import containers
from cong.containers import IMAGE_UID, WRITABLE
from pipelines.container import LABEL, ContainerRun, container_tasks
from tests.conftest import MICRO, ROOT

STANDIN_ENGINE = """#!{python}
import os, sys
args = sys.argv[1:]
assert args[0] == "run", args
rest = args[1:]
while rest[0].startswith("--"):
    rest.pop(0)
command = rest[1:]  # after the image
if os.environ["STANDIN"] == "exit0":
    print("a container that is gone before its status was read")
    sys.exit(0)
os.execvp(command[0], command)
"""


def _executors() -> dict[str, dict]:
    pipeline, platform = yaml.safe_load_all((ROOT / "pipelines" / "cong_pipeline.yaml").read_text())
    kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return {
        name: {**e["container"], **kubernetes.get(name, {})}
        for name, e in pipeline["deploymentSpec"]["executors"].items()
        if "container" in e  # importers run no container
    }


def test_every_task_runs_as_its_compiled_pod_would():
    """The compiled pipeline's pods: the image `make image` builds (its -cpu variant here), the image's own user;
    each task's `run` applies exactly that, plus what KFP's backend adds to every pod (no capability, no privilege
    escalation) and a read-only root filesystem with WRITABLE memory-backed, as the TrainJob trainer pods have it."""
    run = ContainerRun("podman", LOCAL_IMAGE, {}, Path("/runs/r/kfp"), Path("/runs/r/workspace"))
    command = run.command(["sh", "-c", "true"], {}, "cong-x-plan")
    executors = _executors()
    assert executors and LOCAL_IMAGE == f"{BASE_IMAGE}-cpu"
    for name, executor in executors.items():
        assert executor["image"] == BASE_IMAGE, name
        security = executor["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert f"--user={security['runAsUser']}:{security['runAsGroup']}" in command, name
    assert int(security["runAsUser"]) == IMAGE_UID
    for flag in ("--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges", "--network=host", "--rm"):
        assert flag in command
    assert sorted(a.split("=")[1].split(":")[0] for a in command if a.startswith("--tmpfs=")) == sorted(
        WRITABLE.values()
    )
    assert "--volume=/runs/r/kfp:/runs/r/kfp:rw" in command, "the pipeline root at its own path"
    assert "--volume=/runs/r/workspace:/kfp-workspace:rw" in command, "the workspace where KFP mounts it"
    assert command[command.index(LOCAL_IMAGE) + 1 :] == ["sh", "-c", "true"]
    assert f"--label={run.label}" in command and run.cleanup_command()[-2:] == ["podman", run.label]


def test_a_task_gets_the_stores_settings_and_nothing_else_of_this_environment(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("CONG_S3_ADDRESSING", "path")
    monkeypatch.setenv("TMPDIR", "/runs/r/tmp")
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/this-machine.pem")
    run = ContainerRun("docker", "i", {}, Path("/p"))
    env = run.task_environment({"FROM_SPEC": "1"})
    expected = {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9", "AWS_SECRET_ACCESS_KEY": "s", "CONG_S3_ADDRESSING": "path"}
    assert {k: v for k, v in env.items() if not k.startswith(("HF_HUB", "TOKENIZERS"))} == expected | {"FROM_SPEC": "1"}
    command = run.command(["true"], {"FROM_SPEC": "1"}, "n")
    assert sorted(a.removeprefix("--env=") for a in command if a.startswith("--env=")) == sorted(env)
    assert not any("127.0.0.1:9" in a for a in command), "names only: no value in the process list"
    assert not any(a.startswith("--userns") for a in command), "docker: the run's folders are handed over instead"
    assert f"--tmpfs=/tmp:rw,uid={IMAGE_UID},gid={IMAGE_UID}" in command


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def exits(code: int, data: dsl.Output[dsl.Dataset]):
    import sys

    if code:
        sys.exit(code)
    with open(data.path, "w") as f:
        f.write("written")


@pytest.fixture
def standin(tmp_path, monkeypatch):
    """kfp.local with each task run through a stand-in engine; returns the ContainerRun."""
    engine = tmp_path / "bin" / "standin"
    engine.parent.mkdir()
    engine.write_text(STANDIN_ENGINE.format(python=sys.executable))
    engine.chmod(0o755)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"), raise_on_error=True)
    run = ContainerRun(str(engine), "image", dict(os.environ), tmp_path / "kfp")
    with container_tasks(run):
        yield run


@pytest.mark.parametrize(
    ("mode", "code", "verdict"), [("run", 0, None), ("run", 3, "exit status 3"), ("exit0", 0, "did not write")]
)
def test_a_task_is_judged_by_its_exit_status_and_its_outputs(standin, mode, code, verdict):
    """A task that exits non-zero fails; one whose runner says 0 but that wrote no output fails too."""
    standin.engine_env["STANDIN"] = mode
    if verdict is None:
        task = exits(code=code)
        assert Path(task.outputs["data"].path).read_text() == "written" and standin.failures == []
        return
    with pytest.raises(RuntimeError, match="FAILURE"):
        exits(code=code)
    assert len(standin.failures) == 1 and verdict in standin.failures[0], standin.failures
    assert standin.failures[0].startswith("task exits ")


# ------------------------------------------------------------------------------------------- the real image


@pytest.fixture(scope="module")
def image() -> ContainerRun:
    """The image `make image` built from this tree, and its engine; the test fails (CI builds it first) without."""
    from cong.errors import CongError

    try:
        return ContainerRun.prepare(LOCAL_IMAGE)
    except CongError as exc:
        pytest.fail(f"{exc} (make test-extended builds it)")


def cong_run(out: Path, *extra: str, image_name: str | None = None, timeout: int = 900):
    command = [sys.executable, "-m", "pipelines.cli", "run", "--local", "--config", str(MICRO), "--out", str(out)]
    command += ["--runner", "container", *(["--image", image_name] if image_name else []), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def labelled(run: ContainerRun) -> list[str]:
    """Every container of any cong run, whatever its state."""
    return containers.labelled(run.engine, LABEL, run.engine_env)


@pytest.fixture
def derive(image: ContainerRun, tmp_path: Path):
    """Builds images of the training image with some Python run whenever cong.stages.plan is imported (the plan
    task, the DAG's first); removes them afterwards."""
    tags = []

    def build(name: str, python: str) -> str:
        tag = f"localhost/cong-test-{name}:1"
        plan = "/opt/venv/lib/python3.11/site-packages/cong/stages/plan.py"
        (tmp_path / "Containerfile").write_text(
            f"FROM {LOCAL_IMAGE}\nUSER 0\nRUN printf '%s\\n' {json.dumps(python)} >> {plan}\nUSER {IMAGE_UID}\n"
        )
        build = [image.engine, "build", "--pull=never", "-t", tag, str(tmp_path)]
        built = subprocess.run(build, capture_output=True, text=True, env=image.engine_env)
        assert built.returncode == 0, built.stderr
        tags.append(tag)
        return tag

    yield build
    for tag in tags:
        subprocess.run([image.engine, "rmi", "--force", tag], capture_output=True, env=image.engine_env)


@pytest.mark.extended
def test_the_micro_pipeline_runs_every_task_in_the_image(tmp_path, image, micro_testbed):
    """Every method's row, the lineage, every task output written by the image's user, no container left."""
    out = tmp_path / "run"
    started = time.monotonic()
    proc = cong_run(out, "--methods", "all")
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(f"micro pipeline, every method, every task in {LOCAL_IMAGE}: {time.monotonic() - started:.1f} s")
    results = json.loads((out / "results.json").read_text())
    from cong.vocabulary import METHODS

    assert list(results["methods"]) == list(METHODS)
    executed = [line for line in (out / "pipeline.log").read_text().splitlines() if "Executing task" in line]
    assert len(executed) > 20
    if os.geteuid() == 0:  # the outputs were written in the container, as its user
        owners = {p.stat().st_uid for p in Path(results["run"]["pipeline_root"]).rglob("executor_output.json")}
        assert owners == {IMAGE_UID}
    lineage = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "lineage", str(out)], capture_output=True, text=True, timeout=120
    )
    assert lineage.returncode == 0 and "cong" in lineage.stdout, lineage.stderr
    assert labelled(image) == []


@pytest.mark.extended
def test_a_task_that_fails_in_the_container_fails_the_run(tmp_path, image, derive, micro_testbed):
    tag = derive("exits", "raise SystemExit(3)")
    proc = cong_run(tmp_path / "run", "--methods", "weak_sft", image_name=tag)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "task plan failed in the container (exit status 3)" in proc.stderr
    assert "Traceback" not in proc.stderr and labelled(image) == []


@pytest.mark.extended
def test_a_write_outside_the_allowed_paths_fails_with_a_message(tmp_path, derive, micro_testbed):
    tag = derive("writes", "open('/opt/venv/leftover', 'w')")
    proc = cong_run(tmp_path / "run", "--methods", "weak_sft", image_name=tag)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "task plan wrote /opt/venv/leftover, outside the paths a pod may write" in proc.stderr
    assert "read-only" in proc.stderr


@pytest.mark.extended
def test_a_killed_container_run_leaves_no_process_and_no_container(tmp_path, image, micro_testbed):
    from cong.watchdog import alive, descendants
    from tests.test_watchdog import _cmdline, _gone

    out = tmp_path / "run"
    command = [sys.executable, "-m", "pipelines.cli", "run", "--local", "--config", str(MICRO), "--out", str(out)]
    run = subprocess.Popen(
        [*command, "--runner", "container", "--methods", "weak_sft"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    tree: dict[int, int] = {}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and run.poll() is None and not labelled(image):
        tree |= descendants(run.pid)
        time.sleep(0.5)
    assert run.poll() is None and labelled(image), "no task's container was seen running"
    tree |= descendants(run.pid)
    run.send_signal(signal.SIGKILL)
    run.wait(10)
    assert _gone(tree, 30) == {}, {pid: _cmdline(pid) for pid in tree if alive(pid)}
    deadline = time.monotonic() + 30
    while labelled(image) and time.monotonic() < deadline:
        time.sleep(1)
    assert labelled(image) == []
