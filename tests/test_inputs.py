"""The run's external inputs: the fetch task copies each into the run's store and describes it (cong.inputs.fetch,
cong.stages.fetch), and a task reads the ones it was given (cong.stages.step.for_task), against the micro testbed and
a real SeaweedFS."""

import hashlib
import json
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from kfp import dsl

from cong.config import load_config
from cong.errors import CongError
from cong.inputs.refs import resolve
from cong.stages import fetch
from cong.stages.step import for_task, location
from cong.storage.folders import find_manifest, publish_path
from cong.storage.s3 import ensure_bucket
from tests.conftest import MICRO

ROOT = "minio://mlpipeline/private-artifacts/team-a/v2/artifacts"


@pytest.fixture
def in_store(store, monkeypatch):
    for key, value in store.env().items():
        monkeypatch.setenv(key, value)
    for bucket in ("cong", "mlpipeline", "models"):
        ensure_bucket(bucket, store.settings())
    return store


def fetched(config: dict, tmp_path: Path) -> dict:
    """The fetch task's step as it runs on a cluster whose pipeline root is ROOT: its described inputs."""
    described = tmp_path / f"described-{uuid.uuid4()}.json"
    output = f"{ROOT}/cong/{uuid.uuid4()}/fetch/{uuid.uuid4()}/described"
    result = fetch.step(config, str(described), output)
    found = json.loads(described.read_text())
    assert result["uris"] == {f"{field}_uri": found.get(field, {}).get("uri", "") for field in result_fields(result)}
    return found


def result_fields(result: dict) -> list[str]:
    return [key.removesuffix("_uri") for key in result["uris"]]


def test_an_input_has_one_digest_wherever_it_was(micro_testbed, in_store, tmp_path):
    """The testbed's weak model and train prompts, fetched as the testbed builds them and from a copy in another
    bucket: the same content digest either way (a file's is its sha256), each copied once into the pipeline root's
    store and named there in the root's scheme, the tokenizer's vocabulary size read from the store without its
    weights, and the reference as the user gave it."""
    cfg = load_config(MICRO)
    local_model, local_prompts = resolve(cfg.models.weak_base, cfg), resolve(cfg.data.train_prompts, cfg)
    built = fetched(cfg.as_parameter(), tmp_path)
    model_uri = publish_path(local_model, "s3://models/weak")
    prompts_uri = publish_path(local_prompts, "s3://models/train")
    elsewhere = load_config(
        MICRO,
        overrides={
            "models": {"weak_base": model_uri},
            "data": {"train_prompts": prompts_uri},
            "input_origins": {"weak_base": "testbed:weak", "train_prompts": "testbed:train"},
        },
    )
    copied = fetched(elsewhere.as_parameter(), tmp_path)

    here, there = built["weak_base"], copied["weak_base"]
    assert here["digest"] == there["digest"] and here["digest"].startswith("sha256:")
    assert here["vocab_size"] == there["vocab_size"] > 0
    assert (here["reference"], there["reference"]) == ("testbed:weak", "testbed:weak")
    assert here["uri"] == there["uri"], "the same content is kept once"
    assert here["uri"].startswith(f"{ROOT}/inputs/weak_base-"), "in the pipeline root's store, in its scheme"
    assert find_manifest("s3://" + here["uri"].removeprefix("minio://")) is not None

    prompts = copied["train_prompts"]
    assert prompts["digest"] == "sha256:" + hashlib.sha256(Path(local_prompts).read_bytes()).hexdigest()
    assert prompts["uri"].endswith("/train.jsonl") and "vocab_size" not in prompts
    assert built["train_prompts"]["digest"] == prompts["digest"]

    missing = load_config(MICRO, overrides={"models": {"weak_base": "s3://cong/inputs/never-published"}})
    with pytest.raises(CongError, match="never-published is not published"):
        fetched(missing.as_parameter(), tmp_path)


def test_a_stage_reads_only_the_inputs_it_was_given(tmp_path):
    """The config a stage runs with names its given artifacts (a local copy when the launcher made one, else the
    reference behind the URI), and an input it was not given fails when read, naming the stage and the field."""
    config = load_config(MICRO).as_parameter()
    copy = tmp_path / "strong"
    copy.mkdir()
    # As KFP's launcher hands an s3:// input over on a cluster: its URI, and the copy it downloaded.
    strong = SimpleNamespace(uri="s3://cong/inputs/strong_base-0123", path=str(copy))
    prompts = dsl.Dataset(uri="minio://mlpipeline/v2/artifacts/inputs/train_prompts-0123/train.jsonl")
    run_id = "5b7e2a51-8f0c-4f53-9a38-8d1c3f6f0d2e"
    metrics = SimpleNamespace(uri=f"s3://mlpipeline/v2/artifacts/cong/{run_id}/sft/0d1e/metrics")

    given, found = for_task(config, "sft", metrics, strong_base=strong, train_prompts=prompts)
    assert found == run_id
    assert given["storage"]["bucket"] == "mlpipeline" and given["storage"]["prefix"] == "v2/artifacts"
    assert given["models"]["strong_base"] == str(copy)
    remote, _ = for_task(config, "sft", metrics, local_copies=False, strong_base=strong)
    assert remote["models"]["strong_base"] == strong.uri
    assert given["data"]["train_prompts"] == location(prompts) == prompts.uri, "no copy here: the store's"
    assert config["models"]["strong_base"] == "testbed:strong", "the task's parameter is left as it was"

    cfg = load_config(MICRO, overrides={"models": given["models"], "data": given["data"]})
    with pytest.raises(CongError, match=r"sft read the input weak_base, which the pipeline does not give it"):
        resolve(cfg.models.weak_base, cfg)
    with pytest.raises(CongError, match=r"STAGE_INPUTS\['sft'\]"):
        resolve(cfg.data.eval_prompts, cfg)
    with pytest.raises(CongError, match=r"not where a pipeline run writes"):
        for_task(config, "sft", SimpleNamespace(uri="s3://elsewhere/metrics"))
