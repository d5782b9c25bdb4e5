"""The compiled pipeline: committed YAML matches the code, and per-stage scheduling is in the IR.

There is no KFP backend here: the assertions read the compiled IR (both YAML documents), the format the
backend consumes.
"""

import yaml

from cong.config import load_config
from pipelines.compile import COMMITTED, compile_pipeline

TASKS = ("weak-align", "cd-sample", "sft", "strong-sample", "pair", "dpo", "evaluate")


def _docs(path):
    return list(yaml.safe_load_all(path.read_text()))


def test_committed_yaml_has_not_drifted(tmp_path):
    fresh = compile_pipeline(load_config(preset="tiny"), tmp_path / "p.yaml")
    assert fresh.read_text() == COMMITTED.read_text(), "re-run `make compile` and commit pipelines/cong_pipeline.yaml"


def test_dag_and_resources(tmp_path):
    spec = _docs(compile_pipeline(load_config(preset="qwen2.5-3b-to-7b"), tmp_path / "q.yaml"))[0]
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == set(TASKS)
    assert tasks["dpo"]["dependentTasks"] == ["pair", "sft"]
    assert tasks["cd-sample"]["dependentTasks"] == ["weak-align"]
    executors = spec["deploymentSpec"]["executors"]
    assert executors["exec-dpo"]["container"]["resources"]["accelerator"]["resourceCount"] == "4"
    assert "accelerator" not in executors["exec-pair"]["container"]["resources"]
    for stage in ("weak-align", "cd-sample", "strong-sample", "evaluate"):
        assert tasks[stage]["cachingOptions"] == {}, stage
    assert tasks["sft"]["cachingOptions"] == {"enableCache": True}
    assert spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]["name"] == "qwen2.5-3b-to-7b"


def test_supplied_aligned_weak_model_skips_weak_align(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("extends: tiny\nmodels:\n  weak_aligned: /models/weak-dpo\n")
    spec = _docs(compile_pipeline(load_config(path), tmp_path / "p.yaml"))[0]
    tasks = spec["root"]["dag"]["tasks"]
    assert "weak-align" not in tasks
    assert "dependentTasks" not in tasks["cd-sample"]
