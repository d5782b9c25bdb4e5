"""The champion/challenger gate of scheduled retraining (cong.stages.promote), against a real SeaweedFS server on
127.0.0.1 with the micro testbed's models, and the promote task in the compiled DAG.

A copy of a model answers the eval prompts exactly as the model does (same weights, same per-prompt seeds), so
every prompt is a tie and the copy's win rate against it is exactly one half: that puts a challenger on either
side of a threshold without assuming which of two different models is better.
"""

import json
import shutil
from pathlib import Path

import pytest

from cong.config import load_config
from cong.errors import CongError
from cong.inputs.refs import resolve
from cong.stages.promote import RECORD_FILE, promote
from cong.storage import folders as storage
from cong.storage.folders import MANIFEST_NAME, NotPublished, fetch_dir, find_manifest
from cong.storage.s3 import ensure_bucket
from tests.conftest import MICRO, compiled_documents

PROMPTS = 6  # of the micro testbed's 12 eval prompts


@pytest.fixture(scope="module")
def world(micro_config, micro_testbed, store, tmp_path_factory):
    """The micro strong model, two copies of it (the second with a model card, so that the champion's files
    show which one won), and the eval prompts."""
    cfg = micro_config.model_copy(update={"storage": micro_config.storage.located()})  # as in a task
    strong = resolve(cfg.models.strong_base, cfg)
    root = tmp_path_factory.mktemp("challengers")
    copy = shutil.copytree(strong, root / "copy")
    carded = shutil.copytree(strong, root / "carded")
    (carded / "README.md").write_text("strong model, second training round\n")
    ensure_bucket(cfg.storage.bucket, store.settings())
    return cfg, {"strong": strong, "copy": str(copy), "carded": str(carded)}, resolve(cfg.data.eval_prompts, cfg)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch, world):
    """Fetched champions land in this test's cache (after `world` found the shared testbed)."""
    monkeypatch.setenv("CONG_CACHE_DIR", str(tmp_path / "cache"))


def gate(world, store, tmp_path, challenger, threshold, run_id, champion=None):
    cfg, models, prompts = world
    settings = cfg.promotion.model_copy(update={"enabled": True, "threshold": threshold, "prompts": PROMPTS})
    out = tmp_path / f"{run_id}.json"
    decision = promote(
        models[challenger],
        prompts,
        out,
        settings,
        cfg.stages.evaluate,
        champion or cfg.champion_uri(),
        {"run_id": run_id, "source": f"s3://kfp/{run_id}/dpo/aligned"},
        store=store.settings(),
    )
    assert json.loads(out.read_text()) == decision
    return decision


def files_of(folder) -> dict[str, bytes]:
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def champion_files(uri, store) -> dict[str, bytes]:
    found = files_of(fetch_dir(uri, settings=store.settings()))
    found.pop(MANIFEST_NAME)
    return found


def test_first_run_promotes_then_the_threshold_decides(world, store, tmp_path):
    cfg, models, _ = world
    uri = cfg.champion_uri()
    assert uri == "s3://cong/champion/micro"

    first = gate(world, store, tmp_path, "strong", 0.55, "run-1")
    assert first["promoted"] and first["champion"] is None and "no champion" in first["reason"]
    assert "win_rate" not in first, "nothing to compare with"
    published = champion_files(uri, store)
    record = json.loads(published.pop(RECORD_FILE))
    assert published == files_of(models["strong"])
    assert record["model"]["run_id"] == "run-1" and record["history"] == []

    below = gate(world, store, tmp_path, "copy", 0.55, "run-2")
    assert below["prompts"] == PROMPTS < cfg.testbed.n_eval_prompts
    assert (below["win_rate"], below["win_rate_ci95_low"], below["win_rate_ci95_high"]) == (0.5, 0.5, 0.5)
    assert not below["promoted"] and "published" not in below
    assert below["reason"] == (
        f"kept the champion: win rate 0.500 [0.500, 0.500] against the champion on {below['prompts']} prompts is below "
        "the threshold 0.55"
    )
    assert below["champion"]["digest"] == first["published"]["digest"]
    assert storage.read_manifest(uri, store.settings()).digest == first["published"]["digest"], "left untouched"

    at = gate(world, store, tmp_path, "carded", 0.5, "run-3")
    assert at["promoted"] and at["win_rate"] == 0.5 and "reaches the threshold 0.5" in at["reason"]
    assert at["champion"]["model"]["run_id"] == "run-1"
    assert storage.read_manifest(uri, store.settings()).digest == at["published"]["digest"]
    assert at["published"]["digest"] != first["published"]["digest"]
    published = champion_files(uri, store)
    record = json.loads(published.pop(RECORD_FILE))
    assert published == files_of(models["carded"])
    assert record["model"] == {"run_id": "run-3", "source": "s3://kfp/run-3/dpo/aligned"}
    assert record["decision"]["win_rate"] == 0.5 and record["decision"]["threshold"] == 0.5
    (previous,) = record["history"]
    assert previous["digest"] == first["published"]["digest"] and previous["model"]["run_id"] == "run-1"


def test_an_interrupted_promotion_leaves_no_partial_champion(world, store, tmp_path, monkeypatch):
    """The process dies after the new files went up and before the manifest: a reader of the champion location
    gets 'not published', never the mix of old and new files; the next run says why and promotes."""
    uri = "s3://cong/champion/interrupted"
    first = gate(world, store, tmp_path, "strong", 0.55, "run-1", champion=uri)

    def dies(files):
        raise RuntimeError("killed before the manifest")

    with monkeypatch.context() as patch:
        patch.setattr(storage.Manifest, "create", dies)
        with pytest.raises(CongError, match="killed before the manifest"):
            gate(world, store, tmp_path, "carded", 0.5, "run-2", champion=uri)
    assert find_manifest(uri, store.settings()) is None
    with pytest.raises(NotPublished):
        fetch_dir(uri, settings=store.settings())
    target = storage.parse_s3_uri(uri)
    keys = store.settings().client().list_objects_v2(Bucket=target.bucket, Prefix=f"{target.prefix}/")["Contents"]
    assert f"{target.prefix}/README.md" in {k["Key"] for k in keys}, "the new files did go up"

    healed = gate(world, store, tmp_path, "copy", 0.99, "run-3", champion=uri)
    assert healed["promoted"] and "an earlier promotion did not finish" in healed["reason"]
    assert healed["published"]["digest"] != first["published"]["digest"]
    assert json.loads(champion_files(uri, store)[RECORD_FILE])["model"]["run_id"] == "run-3"


def test_a_challenger_that_is_not_a_model_is_refused(world, store, tmp_path):
    """A method the run left out hands promote an empty placeholder: it must never become the champion."""
    cfg, models, prompts = world
    placeholder = tmp_path / "model"
    placeholder.write_text("")
    models = {**models, "placeholder": str(placeholder)}
    with pytest.raises(CongError, match="not a model folder"):
        gate((cfg, models, prompts), store, tmp_path, "placeholder", 0.55, "run-1", champion="s3://cong/champion/x")
    assert find_manifest("s3://cong/champion/x", store.settings()) is None


def test_the_challenger_must_be_one_of_the_runs_methods():
    overrides = {"methods": ["base", "cong_s"], "promotion": {"enabled": True}}
    with pytest.raises(CongError, match="promotion.method 'cong' is not among the run's methods"):
        load_config(MICRO, overrides=overrides)
    assert load_config(MICRO, overrides={**overrides, "promotion": {"enabled": False}}).promotion.method == "cong"
    with pytest.raises(CongError, match="promotion.threshold"):
        load_config(MICRO, overrides={"promotion": {"threshold": 1.0}})


def _tasks_and_executors(cfg, tmp_path):
    spec = compiled_documents(cfg, tmp_path / "p.yaml")[0]
    return spec["root"]["dag"]["tasks"], spec["deploymentSpec"]["executors"]


def test_the_promote_task_is_in_the_dag_only_when_enabled(tmp_path):
    """Read from the compiled IR (no KFP backend here): promote takes the challenger method's model (the OneOf
    of its branches), runs on evaluate's resources and is never cached."""
    tasks, executors = _tasks_and_executors(load_config(preset="qwen2.5-3b-to-7b"), tmp_path)
    assert "promote" not in tasks and "exec-promote" not in executors

    on = load_config(preset="qwen2.5-3b-to-7b", overrides={"promotion": {"enabled": True, "method": "cong_s"}})
    tasks, executors = _tasks_and_executors(on, tmp_path)
    promote_task = tasks["promote"]
    source = promote_task["inputs"]["artifacts"]["challenger"]["taskOutputArtifact"]
    assert source == tasks["evaluate"]["inputs"]["artifacts"]["cong_s"]["taskOutputArtifact"]
    assert "oneof" in source["outputArtifactKey"]
    assert promote_task["cachingOptions"] == {}
    resources = executors["exec-promote"]["container"]["resources"]
    assert resources == executors["exec-evaluate"]["container"]["resources"]
    assert resources["accelerator"]["resourceCount"] == "1"

    own = on.model_copy(update={"resources": {**on.resources, "promote": on.resources["plan"]}})
    tasks, executors = _tasks_and_executors(own, tmp_path)
    assert "accelerator" not in executors["exec-promote"]["container"]["resources"]
