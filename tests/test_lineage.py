"""The run's lineage.json as its lineage task builds it on a cluster: from the records the stages kept beside their
outputs in a real SeaweedFS, including those of tasks that KFP's cache answered from an earlier run.

The outputs' URIs are as KFP's driver writes them: `<pipeline root>/<pipeline>/<run id>/<task>/<uuid>/<output>`
(kubeflow/pipelines 2.17.0, backend/src/v2/driver/driver.go provisionOutputs).
"""

import json
import uuid
from types import SimpleNamespace

import pytest

from cong.config import load_config
from cong.stages import lineage as stage
from cong.stages.step import for_task
from cong.storage.folders import fetch_dir
from cong.storage.lineage import LINEAGE_FILE, record_output, render
from cong.storage.runs import run_of
from cong.storage.s3 import ensure_bucket

ROOT = "minio://mlpipeline/v2/artifacts"
RUN_A, RUN_B = str(uuid.UUID(int=1)), str(uuid.UUID(int=2))
# The run's inputs as its fetch task described them (cong.stages.fetch).
WEAK_BASE = {"reference": "testbed:weak", "uri": f"{ROOT}/inputs/weak_base-01", "digest": "sha256:01"}
PROMPTS = {"reference": "testbed:train", "uri": f"{ROOT}/inputs/train-02/train.jsonl", "digest": "sha256:02"}


@pytest.fixture
def in_store(store, monkeypatch):
    for key, value in store.env().items():
        monkeypatch.setenv(key, value)
    ensure_bucket("mlpipeline", store.settings())


def output(run: str, task: str, name: str, stage_name: str, inputs: dict, **extra) -> tuple[str, dict]:
    """An output's URI as KFP's driver names it, and the metadata a stage records on it (cong.stages.step.record)."""
    uri = f"{ROOT}/cong/{run}/{task}/{uuid.uuid4()}/{name}"
    metadata = {
        "stage": stage_name,
        "config": "tiny",
        "code_version": "0.1.0",
        "run_id": run,
        "digest": f"sha256:{task}",
    }
    return uri, {**metadata, "inputs": inputs, **extra}


def test_the_run_is_read_from_an_output_uri():
    """backend/src/v2/driver/driver.go (provisionOutputs) and metadata/client.go (GenerateOutputURI), 2.17.0; and
    kfp.local's task root (kfp/local/executor_input_utils.py)."""
    found = run_of(f"s3://mlpipeline/private-artifacts/team-a/v2/artifacts/cong/{RUN_A}/sft-4/{uuid.uuid4()}/model")
    assert found.run_id == RUN_A and found.pipeline_root == "s3://mlpipeline/private-artifacts/team-a/v2/artifacts"
    local = run_of("/work/runs/x/kfp/cong-2026-12-07-10-11-12-123456/sft-4/model")
    assert local.run_id == "cong-2026-12-07-10-11-12-123456" and local.pipeline_root is None
    in_loop = run_of("/work/runs/x/kfp/cong-2026-12-07-10-11-12-123456/for-loop-2-iteration-0/cd-sample-shard/metrics")
    assert in_loop == local
    assert run_of(WEAK_BASE["uri"]) is None, "an imported input names no run"
    assert run_of(f"{ROOT}/other/{RUN_A}/sft-4/{uuid.uuid4()}/model") is None, "another pipeline's layout"


def test_a_cached_stage_is_found_in_the_run_that_made_it(in_store, tmp_path):
    """weak_align ran in run A; run B's KFP cache answered it, so its outputs are run A's, and their records are
    beside them: the lineage task follows the records back from evaluate's results across both runs. A shard's
    record stands for nothing (the merged dataset does), and an input no stage made nor an importer registered (a
    placeholder) is left out."""
    config = load_config(preset="tiny").as_parameter()
    source = {"uri": WEAK_BASE["uri"], "digest": "sha256:01"}
    aligned_uri, aligned = output(RUN_A, "weak-align", "weak_aligned", "weak_align", {"weak_base": source})
    record_output(aligned_uri, aligned)

    from_a = {"uri": aligned_uri, "digest": "sha256:weak-align", "run_id": RUN_A}
    prompts = {"uri": PROMPTS["uri"], "digest": "sha256:02"}
    shard_uri, shard = output(RUN_B, "cd-sample-shard", "responses", "cd_sample", {"weak_aligned": from_a}, shard=0)
    shard_in = {"uri": shard_uri, "digest": "sha256:cd-sample-shard", "run_id": RUN_B}
    cd_uri, cd = output(
        RUN_B, "cd-sample", "responses", "cd_sample", {"weak_aligned": from_a, "train_prompts": prompts, "0": shard_in}
    )
    cd_in = {"uri": cd_uri, "digest": "sha256:cd-sample", "run_id": RUN_B}
    sft_uri, sft = output(RUN_B, "sft-4", "model", "sft", {"data": cd_in}, method="cong_s")
    placeholder = {"uri": f"{ROOT}/cong/{RUN_B}/not-selected/{uuid.uuid4()}/model"}
    sft_in = {"uri": sft_uri, "digest": "sha256:sft-4", "run_id": RUN_B}
    evaluate_uri, evaluate = output(
        RUN_B, "evaluate", "results", "evaluate", {"cong_s": sft_in, "cong": placeholder, "weak_aligned": from_a}
    )
    for uri, metadata in ((shard_uri, shard), (cd_uri, cd), (sft_uri, sft), (evaluate_uri, evaluate)):
        record_output(uri, metadata)

    # As the lineage component does: the task's run and store from one of its outputs.
    lineage_output = SimpleNamespace(uri=f"{ROOT}/cong/{RUN_B}/lineage/{uuid.uuid4()}/lineage")
    config, run_id = for_task(config, "lineage", lineage_output)
    assert run_id == RUN_B and config["storage"]["bucket"] == "mlpipeline"
    described = tmp_path / "described.json"
    described.write_text(json.dumps({"weak_base": WEAK_BASE, "train_prompts": PROMPTS}))
    tree = str(tmp_path / "lineage")
    result = stage.step(config, run_id=run_id, results=evaluate_uri, described=str(described), tree=tree)
    published = f"s3://mlpipeline/v2/artifacts/runs/{RUN_B}/results"
    assert result["metadata"]["lineage"]["published"] == published, "in the pipeline root's store"
    built = json.loads((tmp_path / "lineage" / LINEAGE_FILE).read_text())
    assert built == json.loads((fetch_dir(published) / LINEAGE_FILE).read_text())

    artifacts = built["artifacts"]
    assert set(artifacts) == {
        "inputs/weak_base",
        "inputs/train_prompts",
        "weak-align/weak_aligned",
        "cd-sample/responses",
        "sft-4/model",
        "evaluate/results",
    }
    assert artifacts["weak-align/weak_aligned"]["metadata"]["run_id"] == RUN_A
    assert artifacts["weak-align/weak_aligned"]["inputs"] == {"weak_base": "inputs/weak_base"}
    assert artifacts["cd-sample/responses"]["inputs"] == {
        "train_prompts": "inputs/train_prompts",
        "weak_aligned": "weak-align/weak_aligned",
    }
    assert artifacts["evaluate/results"]["inputs"] == {
        "cong_s": "sft-4/model",
        "weak_aligned": "weak-align/weak_aligned",
    }
    assert built["run"]["methods"] == {"weak_aligned": "weak-align/weak_aligned", "cong_s": "sft-4/model"}
    tree = render(built)
    assert "cong_s: sft-4/model" in tree and "weak_base: inputs/weak_base" in tree
    assert "stage=import, reference=testbed:weak, digest=sha256:01" in tree
