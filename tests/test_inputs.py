"""The run's external inputs as artifacts: what the plan says of each (cong.inputs), and how a task reads the ones
it was given (cong.stages.step.imported), against the micro testbed and a real SeaweedFS."""

import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest
from kfp import dsl

from cong.config import load_config
from cong.errors import CongError
from cong.inputs import artifact_uri, describe
from cong.refs import resolve
from cong.stages.step import for_task, location
from cong.storage.folders import publish_path
from cong.storage.s3 import ensure_bucket
from tests.conftest import MICRO


@pytest.fixture
def in_store(store, monkeypatch):
    for key, value in store.env().items():
        monkeypatch.setenv(key, value)
    ensure_bucket("cong", store.settings())
    return store


def test_an_input_has_one_digest_wherever_it_is_stored(micro_testbed, in_store):
    """The testbed's weak model and train prompts, described from the local folder and from their published copies:
    the same content digest either way (a published file's is its sha256), the tokenizer's vocabulary size read from
    the store without its weights, and the reference as the user gave it."""
    cfg = load_config(MICRO)
    local_model, local_prompts = resolve(cfg.models.weak_base, cfg), resolve(cfg.data.train_prompts, cfg)
    model_uri = publish_path(local_model, "s3://cong/inputs/weak")
    prompts_uri = publish_path(local_prompts, "s3://cong/inputs/train")
    stored = load_config(
        MICRO,
        overrides={
            "models": {"weak_base": model_uri},
            "data": {"train_prompts": prompts_uri},
            "input_origins": {"weak_base": "testbed:weak", "train_prompts": "testbed:train"},
        },
    )

    here, there = describe(cfg, "weak_base"), describe(stored, "weak_base")
    assert here["digest"] == there["digest"] and here["digest"].startswith("sha256:")
    assert here["vocab_size"] == there["vocab_size"] > 0
    assert (here["reference"], there["reference"]) == ("testbed:weak", "testbed:weak")
    assert (here["uri"], there["uri"]) == ("testbed:weak", model_uri)

    prompts = describe(stored, "train_prompts")
    assert prompts["digest"] == "sha256:" + hashlib.sha256(Path(local_prompts).read_bytes()).hexdigest()
    assert prompts == {**prompts, "uri": prompts_uri, "reference": "testbed:train"} and "vocab_size" not in prompts
    assert describe(cfg, "train_prompts")["digest"] == prompts["digest"]

    missing = load_config(MICRO, overrides={"models": {"weak_base": "s3://cong/inputs/never-published"}})
    with pytest.raises(CongError, match="never-published is not published"):
        describe(missing, "weak_base")


def test_importer_uris():
    assert artifact_uri("s3://cong/inputs/weak_base-0123") == "s3://cong/inputs/weak_base-0123"
    assert artifact_uri("Qwen/Qwen2.5-3B") == "hf://Qwen/Qwen2.5-3B", "a scheme KFP's launcher does not download"
    assert artifact_uri("testbed:weak") == "testbed:weak", "each task builds its own"
    assert artifact_uri("./models/weak") == str(Path("models/weak").resolve())


def test_a_stage_reads_only_the_inputs_it_was_given(tmp_path):
    """The config a stage runs with names its given artifacts (a local copy when the launcher made one, else the
    reference behind the URI), and an input it was not given fails when read, naming the stage and the field."""
    config = load_config(MICRO).as_parameter()
    copy = tmp_path / "strong"
    copy.mkdir()
    # As KFP's launcher hands an s3:// input over on a cluster: its URI, and the copy it downloaded.
    strong = SimpleNamespace(uri="s3://cong/inputs/strong_base-0123", path=str(copy))
    prompts = dsl.Dataset(uri="hf://org/prompts")
    run_id = "5b7e2a51-8f0c-4f53-9a38-8d1c3f6f0d2e"
    metrics = SimpleNamespace(uri=f"s3://mlpipeline/v2/artifacts/cong/{run_id}/sft/0d1e/metrics")

    given, found = for_task(config, "sft", metrics, strong_base=strong, train_prompts=prompts)
    assert found == run_id
    assert given["storage"]["bucket"] == "mlpipeline" and given["storage"]["prefix"] == "v2/artifacts"
    assert given["models"]["strong_base"] == str(copy)
    remote, _ = for_task(config, "sft", metrics, local_copies=False, strong_base=strong)
    assert remote["models"]["strong_base"] == strong.uri
    assert given["data"]["train_prompts"] == location(prompts) == "org/prompts"
    assert config["models"]["strong_base"] == "testbed:strong", "the task's parameter is left as it was"

    cfg = load_config(MICRO, overrides={"models": given["models"], "data": given["data"]})
    with pytest.raises(CongError, match=r"sft read the input weak_base, which the pipeline does not give it"):
        resolve(cfg.models.weak_base, cfg)
    with pytest.raises(CongError, match=r"STAGE_INPUTS\['sft'\]"):
        resolve(cfg.data.eval_prompts, cfg)
    with pytest.raises(CongError, match=r"not where a pipeline run writes"):
        for_task(config, "sft", SimpleNamespace(uri="s3://elsewhere/metrics"))
