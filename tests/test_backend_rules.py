"""What the Kubeflow Pipelines backend does that kfp.local and our stand-ins would let pass, one rule per test.

kfp.local runs a pipeline the backend refuses, and a stand-in server answers what we wrote it to answer; so each rule
here was read in the backend's own code (kubeflow/pipelines at the tag named, `backend/src/...`), and each test checks
the project against that rule, not against kfp.local. Every test fails with its fix reverted.
"""

import json
import re
from pathlib import Path

import pytest
import yaml

from pipelines.cli import main


def cong(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("version", ["2.16.1", "2.15.0"])
def test_a_backend_older_than_2_17_is_refused_before_anything_is_uploaded(kfp, capsys, version):
    """2.17.0, backend/src/v2/driver/resolve.go (GetProducerTask): up to 2.16.1 a dsl.OneOf over artifacts resolves to
    its last selector, our Else placeholder, so every run fails at its first method branch (kubeflow/pipelines#13436,
    fixed by #13437, first in tag 2.17.0). The version is healthz's `tag_name` (backend/src/apiserver/main.go)."""
    kfp.version = version
    for command in (["submit"], ["schedule", "--cron", "0 3 * * *"]):
        code, out, err = cong(capsys, *command, "--preset", "tiny", "--host", kfp.url)
        assert code == 2, out
        assert f"is {version} (its healthz tag_name)" in err and "needs 2.17 or newer" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert [r["path"] for r in kfp.requests] == ["/apis/v2beta1/healthz"] * 2, "nothing uploaded, nothing started"


def test_a_2_17_backend_takes_the_run_and_an_unknown_version_is_warned_about(kfp, capsys):
    code, out, err = cong(capsys, "submit", "--preset", "tiny", "--host", kfp.url)
    assert code == 0, err
    assert len(kfp.runs) == 1 and "warning" not in out

    kfp.version = "unknown"  # a backend image built without TAG_NAME
    code, out, err = cong(capsys, "submit", "--preset", "tiny", "--host", kfp.url)
    assert code == 0, err
    assert "warning: " in out and "reports version 'unknown'" in out and "needs 2.17 or newer" in out
    assert len(kfp.runs) == 2


# --- The compiled IR of every preset, against the backend's cache and DAG-state rules ---

# Placeholders the driver resolves to a value that differs from run to run (backend/src/v2/driver/resolve.go,
# resolveInputParameter, 2.17.0); {{$.pipeline_task_name}} and {{$.workspace_path}} are the same in every run.
PER_RUN = (
    "{{$.pipeline_job_uuid}}",
    "{{$.pipeline_job_name}}",
    "{{$.pipeline_job_resource_name}}",
    "{{$.pipeline_task_uuid}}",
    "{{$.pipeline_job_create_time_utc}}",
    "{{$.pipeline_job_schedule_time_utc}}",
)
PRESETS = sorted(path.stem for path in (Path(__file__).parent.parent / "cong" / "presets").glob("*.yaml"))
# Besides the presets as shipped: the shapes of DAG a config can switch on.
VARIANTS = {
    "supplied-aligned": {"extends": "tiny", "models": {"weak_aligned": "testbed:weak"}},
    "multi-node": {"extends": "tiny", "resources": {"sft": {"nodes": 2}, "dpo": {"nodes": 2}}},
    "promotion": {"extends": "tiny", "promotion": {"enabled": True}},
    "judge": {"extends": "tiny", "stages": {"evaluate": {"judge": {"model": "a-judge"}}}},
    "shards": {"extends": "tiny", "stages": {"cd_sample": {"shards": 3}}},
}


class Ir:
    """A compiled pipeline spec: its DAGs (the root and every DAG component) and, for each DAG component, the task
    that runs it and the DAG that task sits in."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.components = spec["components"]
        self.dags = {"root": spec["root"]["dag"]}
        self.dags.update({name: c["dag"] for name, c in self.components.items() if "dag" in c})
        self.caller = {}  # DAG component -> (enclosing DAG, task that runs it)
        for dag_name, dag in self.dags.items():
            for task in dag["tasks"].values():
                if task["componentRef"]["name"] in self.dags:
                    self.caller[task["componentRef"]["name"]] = (dag_name, task)

    def executor(self, task: dict) -> dict | None:
        label = self.components[task["componentRef"]["name"]].get("executorLabel")
        return self.spec["deploymentSpec"]["executors"][label] if label else None

    def runs_a_container(self, task: dict) -> bool:
        executor = self.executor(task)
        return executor is not None and "container" in executor

    @staticmethod
    def cached(task: dict) -> bool:
        return bool(task.get("cachingOptions", {}).get("enableCache"))

    def origins(self, dag_name: str, value: dict) -> list[str]:
        """Where a parameter value given to a task of `dag_name` comes from, followed up through the DAGs that
        enclose it: per-run placeholders found on the way, and `tainted` where it is the output of a task that
        itself took one."""
        if "runtimeValue" in value:
            constant = json.dumps(value["runtimeValue"].get("constant"))
            return [p for p in PER_RUN if p in constant]
        if "componentInputParameter" in value:
            if dag_name == "root":
                return []  # a pipeline parameter: the run's config, the same for every run of a schedule
            parent, task = self.caller[dag_name]
            name = value["componentInputParameter"]
            iterator = task.get("parameterIterator", {})
            if iterator.get("itemInput") == name:
                name = iterator["items"]["inputParameter"]
            given = task.get("inputs", {}).get("parameters", {}).get(name)
            return self.origins(parent, given) if given else []
        if "taskOutputParameter" in value:
            producer = self.dags[dag_name]["tasks"][value["taskOutputParameter"]["producerTask"]]
            if producer["componentRef"]["name"] in self.dags:
                return []  # a group's output: a OneOf of its tasks' outputs, each checked where it is given
            found = [
                o for v in producer.get("inputs", {}).get("parameters", {}).values() for o in self.origins(dag_name, v)
            ]
            return ["tainted"] if found else []
        return []


@pytest.fixture(scope="module", params=[*PRESETS, *VARIANTS])
def ir(request, tmp_path_factory) -> Ir:
    from cong.config import load_config
    from pipelines.compile import compile_pipeline

    folder = tmp_path_factory.mktemp(request.param)
    if request.param in VARIANTS:
        path = folder / "config.yaml"
        path.write_text(yaml.safe_dump({"name": request.param, **VARIANTS[request.param]}))
        cfg = load_config(path)
    else:
        cfg = load_config(preset=request.param)
    return Ir(next(yaml.safe_load_all(compile_pipeline(cfg, folder / "pipeline.yaml").read_text())))


def test_no_cacheable_task_takes_a_per_run_value(ir):
    """2.17.0, backend/src/v2/driver/container.go: the driver resolves a task's inputs (resolveInputs, which turns
    {{$.pipeline_job_uuid}} into the run's id: driver/resolve.go) before it computes the cache fingerprint
    (getFingerPrintsAndID), and the fingerprint holds every input parameter's value (cacheutils/cache.go,
    GenerateCacheKey). A cacheable task given a per-run value, directly or through the DAGs and tasks above it,
    could never be answered by the cache: a nightly schedule with unchanged inputs would retrain everything."""
    cacheable = 0
    for dag_name, dag in ir.dags.items():
        for key, task in dag["tasks"].items():
            if not (ir.runs_a_container(task) and ir.cached(task)):
                continue
            cacheable += 1
            for name, value in task.get("inputs", {}).get("parameters", {}).items():
                assert not ir.origins(dag_name, value), f"{dag_name}/{key} input {name}: {ir.origins(dag_name, value)}"
    assert cacheable >= 8, "the stages that train and sample are cacheable"


def test_training_stages_are_cacheable_and_what_reads_changing_state_is_not(ir):
    by_component = {}
    for dag in ir.dags.values():
        for task in dag["tasks"].values():
            stage = re.sub(r"-\d+$", "", task["componentRef"]["name"].removeprefix("comp-"))
            by_component.setdefault(stage, set()).add(ir.cached(task))
    for stage in ("sft", "pair", "dpo", "cd-sample-shard", "cd-sample", "strong-sample-shard", "strong-sample"):
        assert by_component.get(stage, {True}) == {True}, stage
    if "weak-align" in by_component:
        assert by_component["weak-align"] == {True}
    config = ir.spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]
    judged = "judge" in config["stages"]["evaluate"]
    assert by_component["evaluate"] == ({False} if judged else {True}), "an external judge is not a function of inputs"
    for stage in ("plan", "lineage", "not-selected", "group-done", "promote", "delete-trainjobs"):
        assert by_component.get(stage, {False}) == {False}, stage


def test_placeholders_and_group_ends_run_in_every_run(ir):
    """2.17.0: a task answered by the cache is published CACHED by the driver, which returns without updating its
    group (backend/src/v2/driver/container.go); only the launcher updates a group's state, after a task it ran
    (component/launcher_v2.go -> metadata/client.go UpdateDAGExecutionsState), and a group is complete only when
    all its tasks are. A dsl.OneOf takes only a branch in state COMPLETE (driver/resolve.go, GetProducerTask:
    "No successful task found"). So every group a OneOf chooses from, and every group inside one (a loop's
    iterations), must end with a task that always runs, after every other task of the group; else the second run
    of a schedule, whose branches the cache answers, fails at evaluate."""
    chosen = set()
    for dag in ir.dags.values():
        for kind in ("artifacts", "parameters"):
            for output in dag.get("outputs", {}).get(kind, {}).values():
                selectors = output.get("artifactSelectors") or output.get("parameterSelectors") or []
                if len(selectors) > 1:
                    chosen.update(selectors_dag(ir, dag, s["producerSubtask"]) for s in selectors)
    assert chosen, "the pipeline has its method branches"
    pending = list(chosen)
    while pending:
        name = pending.pop()
        tasks = ir.dags[name]["tasks"]
        inner = [t["componentRef"]["name"] for t in tasks.values() if t["componentRef"]["name"] in ir.dags]
        pending += [d for d in inner if d not in chosen]
        chosen.update(inner)
        last = [
            key
            for key, task in tasks.items()
            if ir.runs_a_container(task) and not ir.cached(task) and after(tasks, key) == set(tasks) - {key}
        ]
        assert last, f"{name}: no task that always runs after all of {sorted(tasks)}"
    for dag in ir.dags.values():
        for key, task in dag["tasks"].items():
            if task["componentRef"]["name"].startswith("comp-not-selected"):
                assert not ir.cached(task), f"{key}: a branch's stand-in must not be cached"


def selectors_dag(ir: Ir, dag: dict, producer: str) -> str:
    return dag["tasks"][producer]["componentRef"]["name"]


def after(tasks: dict, key: str) -> set[str]:
    """Every task of a DAG that `key` runs after, directly or through others."""
    found, pending = set(), list(tasks[key].get("dependentTasks", []))
    while pending:
        name = pending.pop()
        if name not in found:
            found.add(name)
            pending += tasks[name].get("dependentTasks", [])
    return found


# --- Storage a cluster has ---

PROFILE_KEY = {"accessKey": "team-a-key-0123", "secretKey": "team-a-secret-0123456789abcdef"}


@pytest.fixture(scope="module")
def profile_store(tmp_path_factory):
    """A real SeaweedFS with the key a Kubeflow profile gets: it may read, but write only under
    mlpipeline/private-artifacts/team-a/ (the profile controller's policy, below)."""
    from cong.storage.embedded import EmbeddedObjectStore
    from cong.storage.s3 import ensure_bucket

    identity = {
        "name": "team-a",
        "credentials": [PROFILE_KEY],
        "actions": ["Read", "List", "Write:mlpipeline/private-artifacts/team-a/*"],
    }
    with EmbeddedObjectStore(tmp_path_factory.mktemp("profile-store"), identities=(identity,)) as server:
        for bucket in ("mlpipeline", "cong"):
            ensure_bucket(bucket, server.settings())
        yield server


def test_the_plan_keeps_the_run_in_its_pipeline_roots_store_and_stops_one_it_cannot_write(
    profile_store, micro_testbed, tmp_path, monkeypatch
):
    """2.17.0, manifests/kustomize/base/installs/multi-user/pipelines-profile-controller/sync.py: a profile's key
    (Secret mlpipeline-minio-artifact) may write only under mlpipeline/private-artifacts/<namespace>/ and a few shared
    prefixes, and the profile's kfp-launcher puts the pipeline root there (minio://mlpipeline/private-artifacts/
    <namespace>/v2/artifacts). KFP's own installs create no bucket `cong`. So by default a run keeps what it adds under
    its pipeline root, which every task reads from its output URIs; and a store the run's key cannot write stops the
    first task, naming the setting, before anything else runs."""
    import uuid

    from cong.config import load_config
    from cong.errors import CongError
    from cong.stages import plan
    from tests.conftest import MICRO

    for name, value in profile_store.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", PROFILE_KEY["accessKey"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", PROFILE_KEY["secretKey"])
    run_id = str(uuid.uuid4())
    root = "minio://mlpipeline/private-artifacts/team-a/v2/artifacts"
    output = f"{root}/cong/{run_id}/plan/{uuid.uuid4()}/decided"
    decided = tmp_path / "decided"
    config = load_config(MICRO).as_parameter()
    assert "bucket" not in config["storage"], "the default: the pipeline root's store"

    found = plan.step(config, str(decided), output)["switches"]
    assert found["cong_mode"] == "cong" and json.loads(decided.read_text()) == found

    elsewhere = {**config, "storage": {**config["storage"], "bucket": "cong"}}
    with pytest.raises(CongError) as refused:
        plan.step(elsewhere, str(decided), output)
    message = str(refused.value)
    assert f"s3://cong/runs/{run_id}/.cong-write-check" in message and "AccessDenied" in message
    assert "storage.bucket and storage.prefix name" in message and "Nothing was run or published" in message
