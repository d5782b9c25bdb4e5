"""Run the DAG without a cluster: kfp.local with SubprocessRunner(use_venv=False), every stage a subprocess."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from cong.config import Config
from cong.errors import CongError
from cong.evaluation.downstream import DOWNSTREAM_FILE
from cong.progress import log
from cong.vocabulary import STAGES
from pipelines.container import ContainerRun, container_tasks

RESULT_FILES = ("results.json", "report.html", "responses.jsonl", "training_curves.json")
# Result files of some runs only: the per-prompt downstream answers of a run with downstream tasks.
OPTIONAL_RESULT_FILES = (DOWNSTREAM_FILE,)
# What a person watching a run needs: our stages' progress lines and kfp's task status lines.
PROGRESS = re.compile(
    rf"^\s*\[({'|'.join(('testbed', 'models', 'storage', *STAGES))})\] |Executing task|finished with status"
)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
USER_ERROR = re.compile(r"cong\.errors\.CongError: (.*)")


class FilteredLog(io.TextIOBase):
    """Writes everything to the run's log file and only progress lines to the terminal.

    Each kfp task prints its whole executor input (the full config) and library chatter; a run of the
    tiny preset logs about 2,000 lines, of which a few dozen say where the run is.
    """

    def __init__(self, log_file: io.TextIOBase, terminal: io.TextIOBase, verbose: bool):
        self.log_file, self.terminal, self.verbose = log_file, terminal, verbose
        self.pending = ""
        self.user_errors: list[str] = []
        self.tail: list[str] = []

    def write(self, text: str) -> int:
        self.log_file.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            plain = ANSI.sub("", line)
            self.tail = (self.tail + [plain])[-40:]
            error = USER_ERROR.search(plain)
            if error:
                self.user_errors.append(error.group(1))
            if self.verbose or PROGRESS.search(plain):
                self.terminal.write((line if self.verbose else plain.strip()) + "\n")
        return len(text)

    def flush(self) -> None:
        self.log_file.flush()
        self.terminal.flush()


def _resolve_artifact_oneof() -> None:
    """Let kfp.local resolve dsl.OneOf over artifacts, as the KFP backend does.

    kfp 2.17's local orchestrator picks the branch that ran for OneOf over parameters but fails for
    artifacts ("Expected 1 artifact in ArtifactSelectorSpec. Got: 2"). This applies the same rule to
    artifacts: the one selector whose producer ran. Remove when kfp.local handles it.
    """
    from kfp.local.orchestrator.orchestrator_utils import OrchestratorUtils

    def get_dag_output_artifacts(cls, dag_outputs_spec, io_store) -> dict:
        outputs = {}
        for key, spec in dag_outputs_spec.artifacts.items():
            found = []
            for selector in spec.artifact_selectors:
                try:
                    found.append(io_store.get_task_output(selector.producer_subtask, selector.output_artifact_key))
                except (KeyError, ValueError):  # that branch did not run
                    continue
            if len(found) != 1:
                raise ValueError(f"dsl.OneOf output {key!r}: {len(found)} branches produced it, expected one.")
            outputs[key] = found[0]
        return outputs

    OrchestratorUtils.get_dag_output_artifacts = classmethod(get_dag_output_artifacts)


def preflight(cfg: Config) -> None:
    """Fail fast, before any stage starts: every problem of the config's prompt files and models at once
    (cong.stages.validate), after the testbed is built; then the testbed world's gates (cong.evaluation.gates)."""
    from cong.evaluation import gates
    from cong.stages.validate import check_run
    from cong.testbed import build_testbed
    from cong.testbed.build import world_summary

    if cfg.artifacts.store == "pvc":
        raise CongError(
            "artifacts.store 'pvc' mounts a PersistentVolumeClaim, which only a cluster has. Run locally with "
            "'artifacts' or 'workspace' (a folder of the run stands in for the KFP workspace)."
        )
    if cfg.uses_testbed():
        build_testbed(cfg.testbed, progress=lambda m: log("testbed", m.removeprefix("testbed: ")))
    check_run(cfg)
    if cfg.uses_testbed():
        world = world_summary(cfg.testbed)
        gates.check(world["gates"], f"The testbed world {world['sha256'][:16]}", cfg.allow_failed_gates)


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    """os.environ with `values` set (kfp.local's task subprocesses inherit them), restored afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def object_store(root: Path, endpoint: str | None):
    """The S3-compatible store a local run uses: the user's server at `endpoint` (credentials from the AWS_*
    variables; nothing is started), or an embedded SeaweedFS started for this run under `root` and stopped."""
    from cong.storage.embedded import EmbeddedObjectStore
    from cong.storage.s3 import S3Settings

    if endpoint:
        with _environ({"AWS_ENDPOINT_URL_S3": endpoint}):
            log("storage", f"object store at {endpoint}")
            yield S3Settings.from_env()
        return
    with EmbeddedObjectStore(root) as store, _environ(store.env()):
        log("storage", f"embedded object store (SeaweedFS) on {store.endpoint_url}, pid {store.pid}")
        yield store.settings()


def run_local(
    cfg: Config,
    out_dir: Path,
    verbose: bool = False,
    s3_endpoint: str | None = None,
    runner: str = "subprocess",
    image: str | None = None,
) -> dict:
    """Run the whole pipeline locally, its inputs and outputs through S3-compatible storage (embedded by
    default); results.json, report.html, responses.jsonl, pipeline.log in `out_dir`. `runner` "container" runs
    every task in the training image (`image`, default the one `make image` builds here; pipelines.container).

    Nothing it starts (the embedded store, the tasks, their containers, the testbed build) outlives it, however
    this process ends: a watchdog ends them when it is killed (cong.watchdog).
    """
    from components.image import LOCAL_IMAGE
    from cong.watchdog import guard

    containers = ContainerRun.prepare(image or LOCAL_IMAGE) if runner == "container" else None
    with guard(containers.cleanup_command() if containers else None):
        return _run_local(cfg, out_dir, verbose, s3_endpoint, containers)


def _run_local(
    cfg: Config, out_dir: Path, verbose: bool, s3_endpoint: str | None, containers: ContainerRun | None
) -> dict:
    from cong.evaluation.diagnostics import run_diagnostics
    from cong.evaluation.report import build_report
    from cong.inputs.publish import import_inputs
    from cong.storage.lineage import LINEAGE_FILE, published_view
    from cong.storage.publish import publish_results, publish_run
    from cong.testbed.build import world_summary

    os.environ.setdefault("HF_HUB_OFFLINE", "1" if cfg.uses_testbed() else "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.monotonic()
    # A local run's pipeline root is a folder: its objects go to the object store's bucket (`cong` unless named).
    cfg = cfg.model_copy(update={"storage": cfg.storage.located()})
    preflight(cfg)  # a refused run leaves no run folder behind
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    # Each task writes its component source under TMPDIR and never deletes it; keep that inside the run.
    (out_dir / "tmp").mkdir(exist_ok=True)
    os.environ["TMPDIR"] = str(out_dir / "tmp")
    with object_store(out_dir / "objectstore", s3_endpoint) as settings:
        run_cfg, inputs = import_inputs(cfg)
        run_root = _run_pipeline(run_cfg, out_dir, verbose, containers)
        made = run_root / "evaluate" / "results"
        written = (*RESULT_FILES, *(name for name in OPTIONAL_RESULT_FILES if (made / name).is_file()))
        for name in written:
            shutil.copyfile(made / name, out_dir / name)
        results = json.loads((out_dir / "results.json").read_text())
        decision = run_root / "promote" / "decision"
        if decision.is_file():
            results["promotion"] = json.loads(decision.read_text())
        artifacts = publish_run(run_root, run_cfg, settings, results["sources"])
        results["artifacts"] = {**artifacts, "inputs": inputs}
        results["diagnostics"] = run_diagnostics(out_dir, cfg)
        run_gates = _gates(cfg, run_root)
        if cfg.uses_testbed():
            results["testbed"] = {**world_summary(cfg.testbed), "gates": run_gates}
        results["failed_gates"] = [g["name"] for g in run_gates if not g["passed"]]
        results["run"] = {
            "id": run_root.name,
            "pipeline_root": str(run_root),
            "seconds": round(time.monotonic() - started, 1),
            "config": cfg.name,
        }
        (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        build_report(out_dir)  # again, now with the world and its gates
        run = {"id": run_root.name, "config": cfg.name, "published": artifacts["run"]}
        built = json.loads((run_root / "lineage" / "lineage" / LINEAGE_FILE).read_text())  # the lineage task's
        lineage = published_view(built, artifacts["outputs"], run)
        (out_dir / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2) + "\n")
        publish_results(out_dir, (*written, LINEAGE_FILE), artifacts, settings)
    log("storage", f"published to {artifacts['run']}")
    return results


def _gates(cfg: Config, run_root: Path) -> list[dict]:
    """The run's gates (cong.evaluation.gates): the testbed world's, then the weak pair's as weak_align measured
    them."""
    from cong.storage.lineage import run_outputs
    from cong.testbed.build import world_summary

    world = world_summary(cfg.testbed)["gates"] if cfg.uses_testbed() else []
    pair = [m.get("gates", []) for key, (_, m) in run_outputs(run_root).items() if key.endswith("/weak_aligned")]
    return world + [g for found in pair for g in found]


def _run_pipeline(cfg: Config, out_dir: Path, verbose: bool, containers: ContainerRun | None) -> Path:
    """The DAG through kfp.local, each task a subprocess or, given `containers`, a container; returns the run's
    folder under out_dir/kfp."""
    from kfp import local

    from cong.vocabulary import PIPELINE_NAME
    from pipelines.pipeline import build_pipeline

    root = out_dir / "kfp"
    # A run killed in this folder before left its tasks' folders here; the folder keeps this run's only.
    shutil.rmtree(root, ignore_errors=True)
    _resolve_artifact_oneof()
    # kfp.local gives WORKSPACE_PATH_PLACEHOLDER this folder and deletes it when the run ends, as KFP does the
    # run's workspace PVC; the stages publish the models the run evaluates before that (cong.storage.handoff).
    workspace = out_dir / "workspace" if cfg.artifacts.store == "workspace" else None
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        workspace_root=str(workspace) if workspace else None,
        raise_on_error=True,
    )
    log_path = out_dir / "pipeline.log"
    with log_path.open("w") as log_file, contextlib.ExitStack() as stack:
        if containers:
            containers.hand_over(root, workspace)
            stack.enter_context(container_tasks(containers))
        log_to = FilteredLog(log_file, sys.stdout, verbose)
        try:
            with contextlib.redirect_stdout(log_to), contextlib.redirect_stderr(log_to):
                # kfp.local runs a ParallelFor's tasks two at a time; two torch processes that each take every
                # core spin against each other (two shards on 2 cores: 57 s with all cores, 25 s with one each).
                build_pipeline(cfg, shard_threads=max(1, (os.cpu_count() or 2) // 2))(config=cfg.as_parameter())
        except RuntimeError as exc:
            if log_to.user_errors:
                raise CongError(f"{log_to.user_errors[-1]} (full log: {log_path})") from None
            tail = "\n".join(log_to.tail[-25:])
            reason = containers.failures[-1] if containers and containers.failures else exc
            raise PipelineFailed(f"{reason}\n--- last lines of {log_path} ---\n{tail}") from None
    return sorted(root.glob(f"{PIPELINE_NAME}-*"), key=lambda p: p.stat().st_mtime)[-1]


class PipelineFailed(Exception):
    """A stage failed at run time (not bad input): exit status 1."""
