"""Models between stages through a shared store (`artifacts.store`: workspace or pvc): cong.storage.handoff and
pipelines.handoff.

There is no KFP backend or cluster here. The compiled IR (both YAML documents) is checked for what the backend
reads: the workspace in the platform spec's pipelineConfig (the Argo compiler turns it into the run's PVC),
the `{{$.workspace_path}}` parameter by which the driver decides which pods mount it, and the claim mounts.
Pointers and publishing run against a real SeaweedFS on 127.0.0.1. A local run through kfp.local, whose
workspace_root stands in for the run's workspace PVC (resolved for the placeholder, deleted at the end), is the
supplied-model run of tests/test_pipeline_local.py.
"""

import re
from pathlib import Path

import pytest

from cong.config import load_config
from cong.errors import CongError
from cong.storage import handoff
from cong.storage.folders import fetch_dir, find_manifest
from cong.storage.s3 import ensure_bucket
from cong.vocabulary import MODEL_READERS, MODEL_WRITERS
from tests.conftest import MICRO, compiled_documents

MODEL_STAGES = set(MODEL_WRITERS + MODEL_READERS)


def _compiled(tmp_path, artifacts, **overrides):
    cfg = load_config(preset="tiny", overrides={"artifacts": artifacts, **overrides} if artifacts else None)
    return compiled_documents(cfg, tmp_path / "p.yaml")


def _tasks(spec) -> dict[str, dict]:
    """Every task of the pipeline, in the root DAG or inside a condition, by name."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    return {name: task for dag in dags for name, task in dag["tasks"].items()}


def _stage(task_name: str) -> str:
    """The stage a task runs: `sft-3` and `sft-trainjob` (multi-node) are both sft, `cd-sample-shard` is
    cd_sample; `cd-sample` itself is the merge of its shards, which reads no model."""
    name = re.sub(r"-\d+$", "", task_name)
    if name in ("weak-sample", "cd-sample", "strong-sample"):
        return "merge_shards"
    return re.sub(r"(-trainjob|-shard)$", "", name).replace("-", "_")


@pytest.mark.parametrize(
    ("artifacts", "message"),
    [
        ({"store": "pvc"}, "store 'pvc' needs pvc_name"),
        ({"pvc_name": "models"}, "pvc_name is read only with store 'pvc'"),
        ({"store": "pvc", "pvc_name": "models", "storage_class": "fast"}, "storage_class is the class of the claim"),
        ({"store": "pvc", "pvc_name": "models", "mount_path": "/kfp-workspace/m"}, "inside /kfp-workspace"),
        ({"store": "workspace", "workspace_size": "lots"}, "artifacts.workspace_size = 'lots'"),
        ({"store": "pvc", "pvc_name": "Models_1"}, "artifacts.pvc_name = 'Models_1'"),
    ],
)
def test_store_settings_are_checked_together(artifacts, message):
    with pytest.raises(CongError, match=re.escape(message)):
        load_config(preset="tiny", overrides={"artifacts": artifacts})


def test_workspace_store_in_the_ir(tmp_path):
    """The run's workspace PVC spec, and the placeholder on exactly the stages that write or read models, DPO
    as a multi-node TrainJob included; a model writer is never cached (its pointer would name an earlier run's
    deleted workspace). The default store compiles to none of it."""
    workspace = {"store": "workspace", "workspace_size": "50Gi", "storage_class": "fast-rwx"}
    docs = _compiled(tmp_path, workspace, resources={"dpo": {"nodes": 2}}, promotion={"enabled": True})
    kubernetes = docs[1]["platforms"]["kubernetes"]
    assert kubernetes["pipelineConfig"]["workspace"] == {
        "size": "50Gi",
        "kubernetes": {"pvcSpecPatch": {"accessModes": ["ReadWriteMany"], "storageClassName": "fast-rwx"}},
    }
    tasks = _tasks(docs[0])
    assert {_stage(name) for name in tasks} >= MODEL_STAGES
    assert "dpo-trainjob" in tasks
    for name, task in tasks.items():
        store = task.get("inputs", {}).get("parameters", {}).get("model_store")
        if _stage(name) in MODEL_STAGES:
            assert store == {"runtimeValue": {"constant": "{{$.workspace_path}}"}}, name
        else:
            assert store is None, name
        if _stage(name) in MODEL_WRITERS:
            assert task["cachingOptions"] == {}, name
    assert not any("pvcMount" in e for e in kubernetes["deploymentSpec"]["executors"].values())

    default = _compiled(tmp_path, None)
    assert "pipelineConfig" not in default[1]["platforms"]["kubernetes"]
    assert not any("model_store" in t.get("inputs", {}).get("parameters", {}) for t in _tasks(default[0]).values())
    assert _tasks(default[0])["dpo"]["cachingOptions"] == {"enableCache": True}


def test_pvc_store_mounts_the_claim_on_model_stages(tmp_path):
    docs = _compiled(
        tmp_path, {"store": "pvc", "pvc_name": "cong-models", "mount_path": "/mnt/models"}, promotion={"enabled": True}
    )
    spec, kubernetes = docs[0], docs[1]["platforms"]["kubernetes"]
    assert "pipelineConfig" not in kubernetes
    executors = kubernetes["deploymentSpec"]["executors"]
    for name, task in _tasks(spec).items():
        label = spec["components"][task["componentRef"]["name"]].get("executorLabel")
        mounts = executors.get(label, {}).get("pvcMount")
        store = task.get("inputs", {}).get("parameters", {}).get("model_store")
        if _stage(name) in MODEL_STAGES:
            (mount,) = mounts
            assert mount["mountPath"] == "/mnt/models", name
            assert mount["pvcNameParameter"] == {"runtimeValue": {"constant": "cong-models"}}, name
            assert store == {"runtimeValue": {"constant": "/mnt/models"}}, name
        else:
            assert mounts is None and store is None, name
    assert _tasks(spec)["dpo"]["cachingOptions"] == {"enableCache": True}, "a claim outlives its runs"


def _model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(b"weights" * 1000)
    return folder


def test_pointer_is_published_and_followed(store, tmp_path, monkeypatch):
    """A writer in a shared store: the weights stay there, the artifact holds a pointer, and the model of a
    method the run evaluates is published to the store under the run's id; a reader follows the pointer. A
    model no row shows is not uploaded; a reader without the store, or after it is gone, gets a clear error."""
    for name, value in store.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CONG_CACHE_DIR", str(tmp_path / "cache"))
    ensure_bucket("cong", store.settings())  # on a cluster the bucket exists before any run
    cfg = load_config(
        preset="tiny",
        overrides={
            "artifacts": {"store": "workspace"},
            "methods": ["base", "cong"],
            "name": "ho",
            "storage": {"bucket": "cong"},
        },
    )
    workspace = str(tmp_path / "workspace")
    artifact = str(tmp_path / "kfp" / "run-1" / "dpo" / "aligned")
    location = handoff.model_dir(artifact, workspace)
    assert location.is_relative_to(workspace) and location != handoff.model_dir(artifact.replace("-1", "-2"), workspace)
    _model(location)

    record = handoff.hand_over(cfg, artifact, location, "cong", run_id="84245922")
    assert record == {
        "model_store": "workspace",
        "location": str(location),
        "published": "s3://cong/runs/84245922/models/cong",
    }
    assert [p.name for p in Path(artifact).iterdir()] == [handoff.POINTER_FILE]
    assert handoff.follow(artifact, workspace) == str(location)
    copy = fetch_dir(record["published"], settings=store.settings())
    assert (copy / "model.safetensors").read_bytes() == (location / "model.safetensors").read_bytes()

    cong_s = str(tmp_path / "kfp" / "run-1" / "sft" / "model")
    unshown = _model(handoff.model_dir(cong_s, workspace))
    assert "published" not in handoff.hand_over(cfg, cong_s, unshown, "cong_s", run_id="84245922")
    assert find_manifest("s3://cong/runs/84245922/models/cong_s", store.settings()) is None

    with pytest.raises(CongError, match="model_store=''"):
        handoff.follow(artifact, "")
    (location / "config.json").unlink()
    with pytest.raises(CongError, match="its published copy is s3://cong/runs/84245922/models/cong"):
        handoff.follow(artifact, workspace)
    plain = _model(tmp_path / "plain")
    assert handoff.model_dir(str(plain), "") == plain
    assert handoff.hand_over(cfg, str(plain), plain, "cong", run_id="84245922") == {}
    assert handoff.follow(str(plain), workspace) == str(plain)


def test_local_run_refuses_a_claim():
    from pipelines.local import preflight

    cfg = load_config(MICRO, overrides={"artifacts": {"store": "pvc", "pvc_name": "models"}})
    with pytest.raises(CongError, match="only a cluster has"):
        preflight(cfg)
