"""The compiled pipeline: committed YAML matches the code, and branching and scheduling are in the IR.

There is no KFP backend here: the assertions read the compiled IR (both YAML documents), the format the
backend consumes.
"""

import yaml

from cong.config import load_config
from pipelines.compile import COMMITTED, compile_pipeline

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


def _spec(cfg, tmp_path):
    return next(yaml.safe_load_all(compile_pipeline(cfg, tmp_path / "p.yaml").read_text()))


def _tasks(spec) -> dict[str, tuple[str, dict]]:
    """Every task of the pipeline, in the root DAG or inside a condition: name -> (enclosing DAG, task)."""
    dags = {"root": spec["root"]["dag"]}
    dags.update({name: comp["dag"] for name, comp in spec["components"].items() if "dag" in comp})
    return {task: (dag_name, body) for dag_name, dag in dags.items() for task, body in dag["tasks"].items()}


def test_committed_yaml_has_not_drifted(tmp_path):
    fresh = compile_pipeline(load_config(preset="tiny"), tmp_path / "p.yaml")
    assert fresh.read_text() == COMMITTED.read_text(), "re-run `make compile` and commit pipelines/cong_pipeline.yaml"


def test_every_stage_is_in_the_dag_with_its_resources(tmp_path):
    spec = _spec(load_config(preset="qwen2.5-3b-to-7b"), tmp_path)
    executors = spec["deploymentSpec"]["executors"]
    for stage in STAGE_EXECUTORS:
        assert f"exec-{stage}" in executors, stage
    resources = {name: e["container"].get("resources", {}) for name, e in executors.items()}
    assert resources["exec-dpo"]["accelerator"]["resourceCount"] == "4"
    assert resources["exec-wspo"]["accelerator"]["resourceCount"] == "4"
    assert resources["exec-wsd"]["accelerator"]["resourceCount"] == "1"
    for light in ("exec-plan", "exec-pair", "exec-not-selected"):
        assert "accelerator" not in resources[light], light
    tasks = _tasks(spec)
    for stage in ("weak-align", "weak-sample", "cd-sample", "strong-sample", "alpha-sweep", "evaluate"):
        assert tasks[stage][1]["cachingOptions"] == {}, stage
    assert tasks["dpo"][1]["cachingOptions"] == {"enableCache": True}
    assert spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]["name"] == "qwen2.5-3b-to-7b"


def test_branches_switch_on_the_plan_at_run_time(tmp_path):
    """Each method's branch is a dsl.If on the plan task's output; evaluate gets a dsl.OneOf per method."""
    spec = _spec(load_config(preset="tiny"), tmp_path)
    tasks = _tasks(spec)
    conditions = [t["triggerPolicy"]["condition"] for _, t in tasks.values() if "triggerPolicy" in t]
    for switch in ("weak_samples", "weak_sft", "auxconf", "wspo", "icl_refine", "wsd", "wsd_sft", "alpha_sweep"):
        assert f"inputs.parameter_values['pipelinechannel--plan-{switch}'] == true" in conditions, switch
    assert "inputs.parameter_values['pipelinechannel--plan-cong_mode'] == 'cong'" in conditions
    # ConG's chain sits in one branch: one CD pass feeds ConG-S, whose model is both DPO's policy and reference.
    dag, dpo = tasks["dpo"]
    assert sorted(dpo["dependentTasks"])[0] == "pair" and tasks["pair"][0] == dag
    assert tasks["strong-sample"][0] == dag
    evaluate = tasks["evaluate"][1]
    assert tasks["evaluate"][0] == "root"
    for method in ("weak_sft", "auxconf", "wspo", "icl_refine", "wsd_sft", "cong_s", "cong", "wsd", "alpha_sweep"):
        source = evaluate["inputs"]["artifacts"][method]["taskOutputArtifact"]
        assert source["producerTask"].startswith("condition-branches-"), method
        assert "oneof" in source["outputArtifactKey"], method
    assert tasks["weak-align"][1]["dependentTasks"] == ["plan"], "a config the plan refuses must stop training"


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
    docs = list(yaml.safe_load_all(compile_pipeline(cfg, tmp_path / "p.yaml").read_text()))
    executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == set(docs[0]["deploymentSpec"]["executors"])
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

    off = load_config(preset="tiny", overrides={"storage": {"credentials_secret": None}})
    docs = list(yaml.safe_load_all(compile_pipeline(off, tmp_path / "q.yaml").read_text()))
    executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert not any("secretAsEnv" in spec for spec in executors.values())
    assert all("configMapAsEnv" in spec for spec in executors.values())
