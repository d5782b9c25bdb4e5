"""What the Kubeflow Pipelines backend does that kfp.local and our stand-ins would let pass, one rule per test.

kfp.local runs a pipeline the backend refuses, and a stand-in server answers what we wrote it to answer; so each rule
here was read in the backend's own code (kubeflow/pipelines at the tag named, `backend/src/...`), and each test checks
the project against that rule, not against kfp.local. Every test fails with its fix reverted.
"""

import itertools
import json
import re
from pathlib import Path

import pytest
import yaml

from pipelines.cli import main
from tests.conftest import compiled_documents
from tests.test_manifests import OVERLAYS


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

    folder = tmp_path_factory.mktemp(request.param)
    if request.param in VARIANTS:
        path = folder / "config.yaml"
        path.write_text(yaml.safe_dump({"name": request.param, **VARIANTS[request.param]}))
        cfg = load_config(path)
    else:
        cfg = load_config(preset=request.param)
    return Ir(compiled_documents(cfg, folder / "pipeline.yaml")[0])


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


# --- Importer URIs the launcher takes ---

# backend/src/v2/objectstore/config.go (2.17.0): ParseProviderFromPath -> ParseBucketPathToConfig.
BUCKET_PATTERN = re.compile(r"(^[a-z][a-z0-9]+:///?)([^/?]+)(/[^?]*)?(\?.+)?$")
BUCKET_SCHEMES = ("gs://", "s3://", "minio://", "mem://")
CLUSTER_ROOT = "minio://mlpipeline/private-artifacts/team-a/v2/artifacts"


def launcher_takes(uri: str) -> tuple[str, str]:
    """The scheme and bucket KFP's launcher reads `uri` as, or an AssertionError where it refuses it."""
    found = BUCKET_PATTERN.match(uri)
    assert found is not None, f"unrecognized pipeline root format: {uri!r}"
    assert found.group(1) in BUCKET_SCHEMES, f"unsupported Cloud bucket: {uri!r}"
    return found.group(1), found.group(2)


@pytest.fixture
def hub_here(monkeypatch, micro_testbed):
    """The hub as the fetch task meets it, without a network: every model reference stands for one commit and
    downloads as the micro strong model, every dataset's prompts are the micro training prompts; a GGUF file
    converts to the micro strong model too."""
    import hashlib

    from cong.inputs import fetch, hub, refs

    def commit(name: str) -> str:
        return hashlib.sha1(name.encode()).hexdigest()

    monkeypatch.setattr(hub, "hub_revision", lambda ref: commit(refs.pinned(ref)[0]))
    monkeypatch.setattr(fetch, "_dataset_revision", commit)
    monkeypatch.setattr(fetch, "_download_model", lambda repo, rev: micro_testbed / "strong")
    monkeypatch.setattr(refs, "hf_prompts", lambda ref, revision=None: str(micro_testbed / "train.jsonl"))
    monkeypatch.setattr(refs, "_gguf_model", lambda ref: str(micro_testbed / "strong"))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_importer_uri_is_one_the_launcher_takes(preset, store, hub_here, tmp_path, monkeypatch):
    """2.17.0, backend/src/v2/component/importer_launcher.go: the importer parses its URI with ParseProviderFromPath
    (objectstore/config.go), which takes `gs://`, `s3://`, `minio://` and `mem://` only; no release up to 2.17.0
    (nor master) takes `huggingface://` or `hf://`. And component/launcher_v2.go (fetchNonDefaultBuckets) hands its
    session only to inputs in the pipeline root's bucket and scheme. The fetch task of every preset (hub models, hub
    datasets, the testbed, a GGUF file) gives each importer a copy in the pipeline root's bucket, in its scheme, made
    once per content or hub revision."""
    import uuid

    from cong.config import load_config
    from cong.stages import fetch
    from cong.storage import folders
    from cong.storage.folders import find_manifest
    from cong.storage.s3 import ensure_bucket

    for name, value in store.env().items():
        monkeypatch.setenv(name, value)
    ensure_bucket("mlpipeline", store.settings())
    config = load_config(preset=preset).as_parameter()
    root_scheme, root_bucket = launcher_takes(CLUSTER_ROOT)

    def fetched() -> dict:
        output = f"{CLUSTER_ROOT}/cong/{uuid.uuid4()}/fetch/{uuid.uuid4()}/described"
        return fetch.step(config, str(tmp_path / "described.json"), output)["uris"]

    uris = fetched()
    assert uris["weak_base_uri"] and uris["strong_base_uri"] and uris["train_prompts_uri"] and uris["eval_prompts_uri"]
    for name, uri in uris.items():
        if not uri:
            continue  # an input the config leaves out (weak_aligned)
        assert launcher_takes(uri) == (root_scheme, root_bucket), (name, uri)
        assert uri.startswith(f"{CLUSTER_ROOT}/inputs/"), (name, uri)
        stored = "s3://" + uri.removeprefix("minio://")
        assert find_manifest(stored) or find_manifest(stored.rpartition("/")[0]), f"{uri} is not published"

    def no_upload(*args, **kwargs):
        raise AssertionError("an input already in the store was copied again")

    monkeypatch.setattr(folders, "publish_dir", no_upload)
    monkeypatch.setattr(folders, "publish_path", no_upload)
    assert fetched() == uris, "the same inputs, the same copies"


def test_the_importers_metadata_is_constant_and_their_uri_comes_from_the_fetch_task(ir):
    """2.17.0, backend/src/v2/component/importer_launcher.go: an importer's URI is a constant or its parent DAG's input
    parameter (never another task's output), and its metadata is copied into ML Metadata verbatim: a
    `{{$.inputs.parameters[...]}}` placeholder there would reach the UI and lineage.json as it is written."""
    executors = ir.spec["deploymentSpec"]["executors"]
    importers = {name: e["importer"] for name, e in executors.items() if "importer" in e}
    assert importers
    for name, importer in importers.items():
        assert "{{" not in json.dumps(importer.get("metadata", {})), name
        assert importer["artifactUri"] == {"runtimeParameter": "uri"}, name
    for key, task in ir.dags["root"]["tasks"].items():
        if key.startswith("import-"):
            given = task["inputs"]["parameters"]["uri"]["taskOutputParameter"]
            assert given["producerTask"] == "fetch" and given["outputParameterKey"].endswith("_uri"), key


def test_submit_publishes_the_files_of_this_machine_first_or_says_how(
    kfp, store, micro_testbed, tmp_path, monkeypatch, capsys
):
    """A path is no bucket URI (importer_launcher.go, above), and the cluster's pods cannot read this machine's files:
    `cong submit` publishes them to the run's store before it uploads anything, content-addressed, or says how."""
    import shutil

    from cong.storage.folders import find_manifest
    from cong.storage.s3 import ensure_bucket

    strong = shutil.copytree(micro_testbed / "strong", tmp_path / "my-strong-model")
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump({"extends": "tiny", "name": "mine", "models": {"strong_base": str(strong)}}))
    code, out, err = cong(capsys, "submit", "--config", str(config), "--host", kfp.url)
    assert code == 2 and f"models.strong_base '{strong}'" in err and "--pipeline-root" in err
    assert [r["path"] for r in kfp.requests] == ["/apis/v2beta1/healthz"], "nothing uploaded"

    for name, value in store.env().items():
        monkeypatch.setenv(name, value)
    ensure_bucket("mlpipeline", store.settings())
    root = "minio://mlpipeline/v2/artifacts"
    code, out, err = cong(capsys, "submit", "--config", str(config), "--host", kfp.url, "--pipeline-root", root)
    assert code == 0, err
    (body,) = [r["json"] for r in kfp.calls("POST", "/runs")]
    assert body["runtime_config"]["pipeline_root"] == root
    submitted = body["runtime_config"]["parameters"]["config"]
    published = submitted["models"]["strong_base"]
    assert published.startswith("s3://mlpipeline/v2/artifacts/inputs/strong_base-") and find_manifest(published)
    assert submitted["input_origins"] == {"strong_base": str(strong)}
    assert submitted["models"]["weak_base"] == "testbed:weak", "the cluster's fetch task builds the testbed itself"
    assert f"models.strong_base: {strong} published to {published}" in out


# ------------------------------------------------------------------------------------- the run's service account
# Every pod of a run runs as the run's service account (2.17.0 backend/src/apiserver/template/template.go
# setDefaultServiceAccount sets the Workflow's serviceAccountName; the Argo compiler sets no other,
# backend/src/v2/compiler/argocompiler/argo.go). What those pods ask of the Kubernetes API, as
# (who, API group, resource, verb, object name or None for any, where it is asked):
KFP_STORE_KEY = "mlpipeline-minio-artifact"  # 2.17.0 backend/src/v2/config/env.go, the minio provider's default
RUN_POD_CALLS = (
    (
        "Argo's executor",
        "argoproj.io",
        "workflowtaskresults",
        "create",
        None,
        "argo v4.0.5 workflow/executor/taskresult.go",
    ),
    (
        "Argo's executor",
        "argoproj.io",
        "workflowtaskresults",
        "patch",
        None,
        "argo v4.0.5 workflow/executor/taskresult.go",
    ),
    ("KFP's root driver", "", "configmaps", "get", "kfp-launcher", "backend/src/v2/driver/root_dag.go, config/env.go"),
    ("KFP's launcher", "", "secrets", "get", "<store key>", "backend/src/v2/objectstore/object_store.go"),
    ("KFP's launcher", "", "pods", "get", None, "backend/src/v2/component/launcher_v2.go retryIndexFromPodAnnotation"),
)


@pytest.fixture(scope="module")
def overlays(tmp_path_factory):
    import shutil

    from tests.test_manifests import MANIFESTS, by_name, render

    root = tmp_path_factory.mktemp("manifests")
    shutil.copytree(MANIFESTS, root, dirs_exist_ok=True)
    return {name: by_name(render(root / "overlays" / name)) for name in OVERLAYS}


def runner_grants(objects: dict) -> set[tuple[str, str, str, str | None]]:
    """What the Roles bound to the account cong-pipeline-runner grant, as (group, resource, verb, name or None)."""
    granted = set()
    for (kind, _), binding in objects.items():
        subjects = {(s["kind"], s["name"]) for s in binding.get("subjects", [])} if kind == "RoleBinding" else set()
        if ("ServiceAccount", "cong-pipeline-runner") not in subjects:
            continue
        assert binding["roleRef"]["kind"] == "Role", "a namespaced Role, no ClusterRole"
        role = objects[("Role", binding["roleRef"]["name"])]
        for rule in role["rules"]:
            for group, resource, verb in itertools.product(rule["apiGroups"], rule["resources"], rule["verbs"]):
                assert "*" not in (group, resource, verb), f"a wildcard in Role {role['metadata']['name']}"
                granted |= {(group, resource, verb, name) for name in rule.get("resourceNames") or [None]}
    return granted


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_runs_account_may_do_what_its_pods_do_and_nothing_more(overlays, name):
    """Rule by rule, the Roles bound to cong-pipeline-runner against the calls of KFP's driver and launcher, Argo's
    executor and our TrainJob stage (cong.cluster.trainjob.NEEDED). The launcher reads the Secret that kfp-launcher's
    provider names: KFP's own key where KFP's store serves, our cong-s3-credentials where kfp-launcher is ours."""
    from cong.cluster.trainjob import NEEDED

    objects = overlays[name]
    launcher = objects.get(("ConfigMap", "kfp-launcher"))
    key = (
        yaml.safe_load(launcher["data"]["providers"])["s3"]["default"]["credentials"]["secretRef"]["secretName"]
        if launcher
        else KFP_STORE_KEY
    )
    calls = {
        (group, resource, verb, key if obj == "<store key>" else obj)
        for _, group, resource, verb, obj, _ in RUN_POD_CALLS
    }
    calls |= {(group, resource, verb, None) for group, resource, verbs in NEEDED for verb in verbs}
    granted = runner_grants(objects)
    assert calls - granted == set(), "a call the run's pods make that no Role grants"
    assert granted - calls == set(), "a grant no pod of the run needs"
