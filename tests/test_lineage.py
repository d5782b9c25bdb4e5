"""The run's lineage.json as its lineage task builds it on a cluster: from the records the stages kept in a real
SeaweedFS, including those of a task that KFP's cache answered from an earlier run."""

import json

import pytest

from cong.config import load_config
from cong.stages import lineage as stage
from cong.stages.step import records_of
from cong.storage.folders import fetch_dir
from cong.storage.lineage import LINEAGE_FILE, record_output, render
from cong.storage.s3 import ensure_bucket

ROOT = "s3://kfp-root/cong"
WEAK_BASE = {"uri": "s3://cong/inputs/weak_base-01", "metadata": {"reference": "testbed:weak", "digest": "sha256:01"}}
PROMPTS = {
    "uri": "s3://cong/inputs/train-02/train.jsonl",
    "metadata": {"reference": "testbed:train", "digest": "sha256:02"},
}


@pytest.fixture
def in_store(store, monkeypatch):
    for key, value in store.env().items():
        monkeypatch.setenv(key, value)
    ensure_bucket("cong", store.settings())


def output(run: str, task: str, name: str, stage_name: str, inputs: dict, **extra) -> tuple[str, dict]:
    """An output's URI as KFP names it, and the metadata a stage records on it (cong.stages.step.record)."""
    uri = f"{ROOT}/{run}/{task}/{name}"
    metadata = {
        "stage": stage_name,
        "config": "tiny",
        "code_version": "0.1.0",
        "run_id": run,
        "digest": f"sha256:{task}",
    }
    return uri, {**metadata, "inputs": inputs, **extra}


def test_a_cached_stage_is_found_in_the_run_that_made_it(in_store, tmp_path):
    """weak_align ran in run-a; run-b's KFP cache answered it, so run-b's records lack it, but the outputs that read
    it name run-a: the lineage task fetches its record from there. A shard's record stands for nothing (the merged
    dataset does), and an input no stage made nor an importer registered (a placeholder) is left out."""
    config = load_config(preset="tiny").as_parameter()
    source = {"uri": WEAK_BASE["uri"], "digest": "sha256:01"}
    aligned_uri, aligned = output("run-a", "weak-align", "weak_aligned", "weak_align", {"weak_base": source})
    record_output(records_of(config, "run-a"), aligned_uri, aligned)

    from_a = {"uri": aligned_uri, "digest": "sha256:weak-align", "run_id": "run-a"}
    prompts = {"uri": PROMPTS["uri"], "digest": "sha256:02"}
    shard_uri, shard = output(
        "run-b", "for-loop-2/cd-sample-shard", "responses", "cd_sample", {"weak_aligned": from_a}, shard=0
    )
    cd_uri, cd = output(
        "run-b", "cd-sample", "responses", "cd_sample", {"weak_aligned": from_a, "train_prompts": prompts}
    )
    cd_in = {"uri": cd_uri, "digest": "sha256:cd-sample", "run_id": "run-b"}
    sft_uri, sft = output("run-b", "sft-4", "model", "sft", {"data": cd_in}, method="cong_s")
    placeholder = {"uri": f"{ROOT}/run-b/not-selected/model"}
    sft_in = {"uri": sft_uri, "digest": "sha256:sft-4", "run_id": "run-b"}
    evaluate_uri, evaluate = output(
        "run-b", "evaluate", "results", "evaluate", {"cong_s": sft_in, "cong": placeholder, "weak_aligned": from_a}
    )
    for uri, metadata in ((shard_uri, shard), (cd_uri, cd), (sft_uri, sft), (evaluate_uri, evaluate)):
        record_output(records_of(config, "run-b"), uri, metadata)

    imports = {"weak_base": WEAK_BASE, "train_prompts": PROMPTS}
    result = stage.step(config, run_id="run-b", imports=imports, tree=str(tmp_path / "lineage"))
    built = json.loads((tmp_path / "lineage" / LINEAGE_FILE).read_text())
    assert built == json.loads((fetch_dir("s3://cong/runs/run-b/results") / LINEAGE_FILE).read_text())
    assert result["metadata"]["lineage"]["published"] == "s3://cong/runs/run-b/results"

    artifacts = built["artifacts"]
    assert set(artifacts) == {
        "inputs/weak_base",
        "inputs/train_prompts",
        "weak-align/weak_aligned",
        "cd-sample/responses",
        "sft-4/model",
        "evaluate/results",
    }
    assert artifacts["weak-align/weak_aligned"]["metadata"]["run_id"] == "run-a"
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
