"""The compiled pipeline: committed YAML matches the code, and branching and scheduling are in the IR.

There is no KFP backend here: the assertions read the compiled IR (both YAML documents), the format the
backend consumes.
"""

import re
from pathlib import Path

import pytest
import yaml

from components.image import BASE_IMAGE
from cong.cluster.kfp_runs import SpecDag
from cong.config import load_config
from cong.errors import CongError
from cong.vocabulary import (
    MODEL_METHODS,
    SHARDED_STAGES,
    STAGES,
    TRAINED_BRANCHES,
    TRAINING_STAGES,
    UNCACHED_STAGES,
)
from pipelines.compile import COMMITTED, compile_pipeline
from tests.conftest import compiled_documents

STAGE_EXECUTORS = (
    "plan",
    "weak-align",
    "weak-sample",
    "cd-sample",
    "sft",
    "strong-sample",
    "pair",
    "dpo",
    "auxconf",
    "wspo",
    "icl-refine",
    "wsd",
    "alpha-sweep",
    "evaluate",
)


def _containers(spec) -> dict[str, dict]:
    """The executors that run a container: all but the importers, which KFP's driver runs itself (no pod spec)."""
    return {name: e for name, e in spec["deploymentSpec"]["executors"].items() if "container" in e}


def _spec(cfg, tmp_path):
    return compiled_documents(cfg, tmp_path / "p.yaml")[0]


def _tasks(spec) -> dict[str, tuple[str, dict]]:
    """Every task of the pipeline, in the root DAG or inside a condition: name -> (enclosing DAG, task)."""
    dags = {"root": spec["root"]["dag"]}
    dags.update({name: comp["dag"] for name, comp in spec["components"].items() if "dag" in comp})
    return {task: (dag_name, body) for dag_name, dag in dags.items() for task, body in dag["tasks"].items()}


def test_committed_yaml_has_not_drifted(tmp_path):
    fresh = compile_pipeline(load_config(preset="tiny"), tmp_path / "p.yaml")
    assert fresh.read_text() == COMMITTED.read_text(), "re-run `make compile` and commit pipelines/cong_pipeline.yaml"


CLUSTER_CONFIG = """
extends: qwen2.5-3b-to-7b
scheduling:
  pools:
    h100:
      node_selector: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}
      tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
    l4:
      node_selector: {cloud.google.com/gke-accelerator: nvidia-l4, pool: sampling}
      tolerations: [{key: dedicated, operator: Equal, value: sampling, effect: NoExecute}]
  default_pool: h100
  pod_labels: {team: alignment}
  retry: {count: 3, backoff: 2m, factor: 3, max_backoff: 2h}
resources:
  cd_sample: {cpu: "8", memory: 64Gi, gpus: 1, pool: l4, shm: 8Gi}
  strong_sample: {cpu: "8", memory: 64Gi, gpus: 1, pool: l4}
  dpo: {cpu: "32", cpu_request: "24", memory: 384Gi, gpus: 8, timeout: 12h, retries: 1}
"""
TRAINING = set(TRAINING_STAGES)
SHARDED = set(SHARDED_STAGES)
FAKE_SECRET = "cong-test-secret-4d9f0a7e"


def _stage(task: str) -> str:
    """The config stage whose resources a task or executor has: `exec-cd-sample-shard-2` (a second task of one
    component) -> `cd_sample`; a sharded stage's own task is its merge; `not_selected` and `group_done` run as
    `plan`."""
    name = re.sub(r"-[0-9]+$", "", task.removeprefix("exec-"))
    if name.endswith("-shard"):
        return name.removesuffix("-shard").replace("-", "_")
    name = name.replace("-", "_")
    return "merge_shards" if name in SHARDED else "plan" if name in ("not_selected", "group_done") else name


def test_every_stage_is_scheduled_as_its_config_says(tmp_path, monkeypatch):
    """Both YAML documents, per stage: GPU type and count, pool (node selector, tolerations), /dev/shm, requests
    and limits, timeout, retries, caching, labels, the pinned image; and no credential value anywhere."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "cong-test-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER_CONFIG)
    cfg = load_config(path)
    text = compile_pipeline(cfg, tmp_path / "p.yaml").read_text()
    assert FAKE_SECRET not in text and "cong-test-key-id" not in text
    pipeline, platform = yaml.safe_load_all(text)
    executors = pipeline["deploymentSpec"]["executors"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    tasks = _tasks(pipeline)
    for stage in STAGE_EXECUTORS:
        assert f"exec-{stage}" in executors, stage

    for name, executor in _containers(pipeline).items():
        stage = _stage(name)
        r, pool, spec = cfg.resources_for(stage), cfg.pool_for(stage), k8s[name]
        container = executor["container"]
        assert container["image"] == BASE_IMAGE, name
        res = container["resources"]
        assert (res["resourceCpuLimit"], res["resourceCpuRequest"]) == (r.cpu, r.cpu_request or r.cpu), name
        assert (res["resourceMemoryLimit"], res["resourceMemoryRequest"]) == (r.memory, r.memory), name
        if r.gpus:
            assert res["accelerator"]["resourceType"] == "nvidia.com/gpu", name
            assert res["accelerator"]["resourceCount"] == str(r.gpus), name
            assert spec["nodeSelector"]["labels"] == pool.node_selector, name
            assert [t["key"] for t in spec["tolerations"]] == [t.key for t in pool.tolerations], name
        else:
            assert "accelerator" not in res and "nodeSelector" not in spec and "tolerations" not in spec, name
        shm = [m for m in spec.get("emptyDirMounts", []) if m["mountPath"] == "/dev/shm"]
        assert bool(shm) == (r.gpus > 1 or r.shm is not None), name
        assert all(m["medium"] == "Memory" for m in shm), name
        labels = spec["podMetadata"]["labels"]
        assert labels["team"] == "alignment" and labels["cong/stage"] == stage, name
        workload = "training" if stage in TRAINING else "gpu" if r.gpus else "light"
        assert labels["cong/workload"] == workload, name

    # Hand-written expectations, so the loop above cannot pass by reading the config back wrongly.
    dpo, cd, plan = k8s["exec-dpo"], k8s["exec-cd-sample-shard"], k8s["exec-plan"]
    merge = k8s["exec-cd-sample"]
    assert "nodeSelector" not in merge and merge["podMetadata"]["labels"]["cong/stage"] == "merge_shards"
    assert executors["exec-dpo"]["container"]["resources"]["accelerator"]["resourceCount"] == "8"
    assert dpo["emptyDirMounts"] == [{"medium": "Memory", "mountPath": "/dev/shm", "volumeName": "dshm"}]
    assert dpo["activeDeadlineSeconds"] == str(12 * 3600)
    assert dpo["nodeSelector"]["labels"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert cd["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-l4", "pool": "sampling"}
    assert cd["tolerations"] == [{"effect": "NoExecute", "key": "dedicated", "operator": "Equal", "value": "sampling"}]
    assert cd["emptyDirMounts"][0]["sizeLimit"] == "8Gi" and "activeDeadlineSeconds" not in cd
    assert "nodeSelector" not in plan and "emptyDirMounts" not in plan
    assert dpo["podMetadata"]["labels"]["cong/workload"] == "training"
    assert cd["podMetadata"]["labels"]["cong/workload"] == "gpu"
    assert plan["podMetadata"]["labels"]["cong/workload"] == "light"
    assert ":" in BASE_IMAGE and not BASE_IMAGE.endswith(":latest")

    retried = set()
    for task, (_, body) in tasks.items():
        stage = _stage(task)
        if stage not in STAGES:
            continue  # conditions, loops
        retried.update([stage] if "retryPolicy" in body else [])
        # Every stage is a function of its inputs (sampling is seeded by prompt) except those that read what changes
        # between runs; branch stand-ins and group ends always run (tests/test_backend_rules.py).
        assert body.get("cachingOptions") == ({} if stage in UNCACHED_STAGES else {"enableCache": True}), task
        retry = body.get("retryPolicy")
        if stage not in TRAINING | SHARDED:
            assert retry is None, task
        elif stage == "dpo":
            assert retry["maxRetryCount"] == 1, task
        else:
            assert retry == {
                "maxRetryCount": 3,
                "backoffDuration": "120s",
                "backoffFactor": 3.0,
                "backoffMaxDuration": "7200s",
            }, task
    assert retried == TRAINING | SHARDED, "training stages and sampling shards resume, so they are retried"
    assert pipeline["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]["name"] == "qwen2.5-3b-to-7b"


def test_pools_must_exist(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("extends: tiny\nresources:\n  sft: {gpus: 2, pool: a100}\n")
    with pytest.raises(CongError, match="resources.sft.pool names GPU pool 'a100'"):
        load_config(path)


def test_branches_switch_on_the_plan_at_run_time(tmp_path):
    """Each method's branch is a dsl.If on the plan task's output; evaluate gets a dsl.OneOf per method."""
    spec = _spec(load_config(preset="tiny"), tmp_path)
    tasks = _tasks(spec)
    conditions = [t["triggerPolicy"]["condition"] for _, t in tasks.values() if "triggerPolicy" in t]
    for switch in ("weak_samples", *TRAINED_BRANCHES, "wsd", "alpha_sweep"):
        assert f"inputs.parameter_values['pipelinechannel--plan-{switch}'] == true" in conditions, switch
    assert "inputs.parameter_values['pipelinechannel--plan-cong_mode'] == 'cong'" in conditions
    # ConG's chain sits in one branch: one CD pass feeds ConG-S, whose model is both DPO's policy and reference.
    dag, dpo = tasks["dpo"]
    assert sorted(dpo["dependentTasks"])[0] == "pair" and tasks["pair"][0] == dag
    assert tasks["strong-sample"][0] == dag
    evaluate = tasks["evaluate"][1]
    assert tasks["evaluate"][0] == "root"
    for method in (*MODEL_METHODS, "wsd", "alpha_sweep"):
        source = evaluate["inputs"]["artifacts"][method]["taskOutputArtifact"]
        assert source["producerTask"].startswith("condition-branches-"), method
        assert "oneof" in source["outputArtifactKey"], method
    # A config the plan refuses must stop training: weak_align waits for the inputs that the fetch task copies into
    # the store after the plan's checks.
    for upstream in tasks["weak-align"][1]["dependentTasks"]:
        assert tasks[upstream][1]["dependentTasks"] == ["fetch"], upstream
    assert tasks["fetch"][1]["dependentTasks"] == ["plan"]


def test_supplied_aligned_weak_model_skips_weak_align(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("extends: tiny\nmodels:\n  weak_aligned: /models/weak-dpo\n")
    spec = _spec(load_config(path), tmp_path)
    tasks = _tasks(spec)
    assert "weak-align" not in tasks
    assert "weak_aligned" not in tasks["cd-sample"][1]["inputs"].get("artifacts", {})
    # Without weak_align there are no preference pairs: WSPO trains on the weak samples instead.
    wspo_data = tasks["wspo"][1]["inputs"]["artifacts"]["data"]
    assert "weak-sample" in str(wspo_data) or "oneof" in str(wspo_data)


def test_every_task_gets_storage_settings_and_credentials_by_reference(tmp_path):
    """kfp-kubernetes platform spec (the second YAML document): each executor maps the Secret's keys and the
    storage ConfigMap's keys to environment variables; a config can turn either off (e.g. for an IAM role)."""
    cfg = load_config(preset="tiny")
    docs = compiled_documents(cfg, tmp_path / "p.yaml")
    executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == set(_containers(docs[0]))
    for name, spec in executors.items():
        (secret,) = spec["secretAsEnv"]
        assert secret["secretName"] == "cong-s3-credentials", name
        assert {(k["secretKey"], k["envVar"]) for k in secret["keyToEnv"]} == {
            ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
            ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
        }
        (config_map,) = spec["configMapAsEnv"]
        assert config_map["configMapName"] == "cong-storage"
        assert {k["envVar"] for k in config_map["keyToEnv"]} == {
            "AWS_ENDPOINT_URL_S3",
            "AWS_REGION",
            "CONG_S3_ADDRESSING",
        }

    judged = load_config(preset="tiny", overrides={"stages": {"evaluate": {"judge": {"model": "judge-8b"}}}})
    docs = compiled_documents(judged, tmp_path / "j.yaml")
    executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    secrets = {
        name: {
            (s["secretName"], k["secretKey"], s.get("optional", False))
            for s in spec["secretAsEnv"]
            for k in s["keyToEnv"]
        }
        for name, spec in executors.items()
    }
    assert secrets["exec-evaluate"] - secrets["exec-plan"] == {
        ("cong-judge", "CONG_JUDGE_ENDPOINT", False),
        ("cong-judge", "CONG_JUDGE_API_KEY", True),
    }
    assert all(not any(s[0] == "cong-judge" for s in v) for k, v in secrets.items() if k != "exec-evaluate")

    off = load_config(preset="tiny", overrides={"storage": {"credentials_secret": None}})
    docs = compiled_documents(off, tmp_path / "q.yaml")
    executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert not any("secretAsEnv" in spec for spec in executors.values())
    assert all("configMapAsEnv" in spec for spec in executors.values())


def test_every_pod_runs_as_the_images_non_root_user(tmp_path):
    """kfp-kubernetes platform spec: each executor's securityContext names the image's own user (the Dockerfile's
    USER) and refuses root. KFP's backend adds no-privilege-escalation, dropped capabilities and the seccomp
    profile to every container itself (kfp-kubernetes' set_security_context documents it), so the IR has no field
    for them; a read-only root filesystem has none either (KFP's launcher writes artifacts under /)."""
    dockerfile = (Path(__file__).parent.parent / "images" / "train" / "Dockerfile").read_text()
    (user,) = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    docs = compiled_documents(load_config(preset="tiny"), tmp_path / "p.yaml")
    executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == set(_containers(docs[0]))
    for name, spec in executors.items():
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert (str(context["runAsUser"]), str(context["runAsGroup"])) == user, name


def _importers_reached(dag: SpecDag, executors: dict, task_key: str) -> set[str]:
    """The external inputs (by field) whose importers feed `task_key`, through every branch but placeholders."""
    reached = set()
    for name in dag.tasks[task_key]["artifact_inputs"]:
        for source, _ in dag.sources(task_key, name):
            task = dag.tasks[source]
            executor = executors[dag.components[task["component"]]["executorLabel"]]
            if "importer" in executor:
                reached.add(source.split("/")[0].removeprefix("import-").replace("-", "_"))
            elif task["stage"] != "not_selected":
                reached |= _importers_reached(dag, executors, source)
    return reached


@pytest.mark.parametrize("supplied", [False, True], ids=["weak-align", "supplied-aligned"])
def test_every_method_traces_back_to_the_imported_inputs(tmp_path, supplied):
    """One importer per external input in the IR, registering the copy the fetch task made of it; from each of
    evaluate's method inputs the artifact chain (through conditions, loops, dsl.OneOf and the import sub-pipelines)
    reaches the strong base model, the training prompts and a weak model (the weak base, through weak_align, or the
    supplied aligned weak model), and evaluate reads the held-out prompts."""
    overrides = {"models": {"weak_aligned": "/models/weak-dpo"}} if supplied else {}
    spec = _spec(load_config(preset="tiny", overrides=overrides), tmp_path)
    executors = spec["deploymentSpec"]["executors"]
    dag = SpecDag(spec)
    importers = {key: dag.tasks[key] for key in dag.tasks if key.endswith("/importer")}
    fields = {"weak_base", "strong_base", "train_prompts", "eval_prompts"} | ({"weak_aligned"} if supplied else set())
    assert {key.split("/")[0] for key in importers} == {f"import-{f.replace('_', '-')}" for f in fields}
    for key, task in importers.items():
        importer = executors[dag.components[task["component"]]["executorLabel"]]["importer"]
        assert importer["artifactUri"] == {"runtimeParameter": "uri"}, key
        field = key.split("/")[0].removeprefix("import-").replace("-", "_")
        assert importer["metadata"]["input"].endswith(f".{field}"), key
        schema = importer["typeSchema"]["schemaTitle"]
        assert schema == ("system.Model" if "base" in key or "aligned" in key else "system.Dataset"), key
        outer = dag.tasks[key.split("/")[0]]["spec"]["inputs"]["parameters"]["uri"]["taskOutputParameter"]
        assert outer == {"producerTask": "fetch", "outputParameterKey": f"{field}_uri"}, key

    evaluate = next(key for key, task in dag.tasks.items() if task["stage"] == "evaluate")
    for method in (*MODEL_METHODS, "wsd"):
        reached = set()
        for source, _ in dag.sources(evaluate, method):
            if dag.tasks[source]["stage"] != "not_selected":
                reached |= _importers_reached(dag, executors, source)
        assert {"strong_base", "train_prompts"} <= reached and reached & {"weak_base", "weak_aligned"}, method
        assert ("weak_aligned" in reached) == supplied, method
        if not supplied:
            assert "weak_base" in reached, method
    direct = {dag.sources(evaluate, f)[0][0].split("/")[0] for f in ("weak_base", "strong_base", "eval_prompts")}
    assert direct == {"import-weak-base", "import-strong-base", "import-eval-prompts"}


def test_readme_names_every_task_the_ui_shows():
    """The README's table of the run's graph lists exactly the display names of the committed IR's tasks (those
    that run a container, plus the input sub-pipelines), so what it tells a user to look for is what the UI shows."""
    spec = next(yaml.safe_load_all(COMMITTED.read_text()))
    executors = spec["deploymentSpec"]["executors"]
    dag = SpecDag(spec)
    shown = set()
    for task in dag.tasks.values():
        component = dag.components[task["component"]]
        if "executorLabel" in component and "container" in executors[component["executorLabel"]]:
            shown.add(task["display"])
    inputs = {task["display"] for key, task in dag.tasks.items() if key.startswith("import-") and "/" not in key}
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("### What the Kubeflow UI shows of a run", 1)[1].split("\n#", 1)[0]
    listed = set()
    for cell in re.findall(r"^\| ([^|]+) \|", section, re.M):
        listed.update(re.findall(r"`([^`]+)`", cell))
    stand_ins = {name for name in shown if name.endswith(": not in this run")}
    ends = {name for name in shown if name.endswith(": done")}
    assert shown - stand_ins - ends - {"promote: challenger vs champion"} <= listed, shown - listed
    assert "<method>: not in this run" in listed and stand_ins
    assert "<group>: done" in listed and ends
    # Tasks the tiny preset's IR has not: promotion and multi-node training are off there.
    placeholders = {"<method>: not in this run", "<group>: done"}
    assert listed - shown == placeholders | {"promote: challenger vs champion", "delete trainjobs"}
    assert inputs == {"weak base model", "strong base model", "training prompts", "held-out prompts"}
    assert all(f"`{name}`" in section for name in inputs)
