"""Sampling stages split over shards (cong.stages.shards): the split, the merge, the resume after a kill (simulated, and
the CD stage's process killed), the compiled ParallelFor, and a local run with two shards against the unsplit
stage functions."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cong.config import load_config
from cong.data import read_jsonl, write_jsonl
from cong.decoding.generate import length_batches
from cong.decoding.sampler import Sampler
from cong.errors import CongError
from cong.inputs.refs import resolve
from cong.stages import cd_sample as cd_sample_stage
from cong.stages.cd_sample import cd_sample
from cong.stages.shards import FinishedBatches, Shard, merge, shard_batches, shard_items
from cong.stages.strong_sample import strong_sample
from cong.storage.embedded import EmbeddedObjectStore
from cong.storage.s3 import ensure_bucket
from cong.vocabulary import SHARDED_STAGES
from tests.conftest import MICRO, compiled_documents
from tests.test_compile import _tasks
from tests.test_pipeline_local import run_config

LENGTHS = [9, 3, 7, 3, 12, 5, 5, 8, 3, 10, 6, 4, 11]


def test_a_shard_takes_whole_batches_of_the_unsplit_order():
    """Every prompt lands in exactly one shard, inside the very batch (same neighbours, same order) that one
    unsplit call decodes it in: left padding moves logits by float rounding, so only that keeps responses
    bitwise equal."""
    unsplit = length_batches(LENGTHS, 3)
    assert [LENGTHS[i] for batch in unsplit for i in batch] == sorted(LENGTHS)
    for count in (1, 2, 3, 5, 6):
        shards = [shard_batches(LENGTHS, 3, Shard(i, count)) for i in range(count)]
        numbered = sorted(b for shard in shards for b in shard)
        assert [batch for _, batch in numbered] == unsplit, count
        assert [number for number, _ in numbered] == list(range(len(unsplit)))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1, "shards differ by at most one batch"
        for i, shard in enumerate(shards):
            assert [number for number, _ in shard] == list(range(i, len(unsplit), count)), "round robin"
    assert shard_batches(LENGTHS, 3, Shard(5, 6)) == [], "a shard beyond the batches has nothing to do"
    with pytest.raises(CongError, match="shard 2 of 2"):
        Shard(2, 2)


def test_plan_lists_each_sampling_stage_shard_indices():
    cfg = load_config(MICRO, overrides={"stages": {"cd_sample": {"shards": 3}}})
    assert shard_items(cfg) == {"weak_sample_shards": [0], "cd_sample_shards": [0, 1, 2], "strong_sample_shards": [0]}


def test_greedy_is_refused_where_samples_must_differ():
    cfg = load_config(MICRO, overrides={"stages": {"cd_sample": {"sampling": {"greedy": True}}}})
    assert cfg.stages.cd_sample.sampling.greedy
    with pytest.raises(CongError, match="stages.weak_align.sampling.*greedy decoding gives one answer per prompt"):
        load_config(MICRO, overrides={"stages": {"weak_align": {"sampling": {"greedy": True}}}})


def _responses(ids, tag=""):
    return [{"id": i, "prompt": f"prompt {i}", "response": f"answer {i}{tag}"} for i in ids]


def test_merge_restores_prompt_order_and_names_missing_and_duplicate_ids(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    ids = [f"p{i}" for i in range(7)]
    write_jsonl(prompts, [{"id": i, "prompt": f"prompt {i}"} for i in ids])
    parts = [tmp_path / f"shard-{i}.jsonl" for i in range(3)]
    write_jsonl(parts[0], _responses(["p5", "p0", "p3"]))
    write_jsonl(parts[1], _responses(["p6", "p1", "p4", "p2"]))
    write_jsonl(parts[2], [])  # a shard beyond the batches
    metrics = merge(str(prompts), None, [str(p) for p in parts], tmp_path / "out.jsonl", "cd_sample")
    assert [r["id"] for r in read_jsonl(tmp_path / "out.jsonl", ("id",))] == ids
    assert metrics["rows"] == 7 and metrics["shards"] == 3

    write_jsonl(parts[1], _responses(["p6", "p1", "p4", "p0"], tag=" again") + _responses(["stray"]))
    with pytest.raises(CongError) as caught:
        merge(str(prompts), None, [str(p) for p in parts], tmp_path / "bad.jsonl", "cd_sample")
    message = str(caught.value)
    assert "missing 1 id(s): 'p2'" in message and "duplicate 1 id(s): 'p0'" in message
    assert "not in the prompt set 1 id(s): 'stray'" in message and "stages.cd_sample.shards" in message
    assert not (tmp_path / "bad.jsonl").exists()
    # A limit on the prompt set (data.max_train_prompts) is the set the shards must cover.
    write_jsonl(parts[1], _responses(["p1", "p2"]))
    write_jsonl(parts[0], _responses(["p0"]))
    merge(str(prompts), 3, [str(p) for p in parts], tmp_path / "first3.jsonl", "strong_sample")
    assert [r["id"] for r in read_jsonl(tmp_path / "first3.jsonl", ("id",))] == ["p0", "p1", "p2"]


@pytest.fixture(scope="module")
def pair_refs(micro_config, micro_testbed):
    """A real contrastive pair of the micro testbed (same tokenizer): strong as expert, weak as amateur."""
    return {
        "weak": resolve(micro_config.models.weak_base, micro_config),
        "strong": resolve(micro_config.models.strong_base, micro_config),
        "prompts": resolve(micro_config.data.train_prompts, micro_config),
    }


@pytest.mark.parametrize("where", ["s3", "folder"])
def test_finished_batches_are_kept_whole_and_cleared(store, tmp_path, where):
    settings = store.settings()
    ensure_bucket("progress", settings)
    stage = "s3://progress/run-1/cd_sample" if where == "s3" else str(tmp_path / "cd_sample")
    shards = [FinishedBatches(f"{stage}/shard-{i}-of-2", settings) for i in range(2)]
    assert shards[0].load() == {}
    shards[0].save(4, _responses(["a", "b"]))
    shards[0].save(0, _responses(["c"]))
    shards[1].save(1, _responses(["d"], tag=" é"))
    shards[0].save(4, _responses(["a", "b"], tag=" again"))  # a batch decoded again replaces the old one
    assert shards[0].load() == {0: _responses(["c"]), 4: _responses(["a", "b"], tag=" again")}
    assert shards[1].load() == {1: _responses(["d"], tag=" é")}
    FinishedBatches(stage, settings).clear()
    assert shards[0].load() == {} and shards[1].load() == {}


def test_a_prompt_draws_from_a_generator_seeded_by_its_id(micro_config, pair_refs, tmp_path):
    """Batches of one (no padding): a prompt's sample stays the same when other prompts come before it."""
    rows = read_jsonl(pair_refs["prompts"], ("id", "prompt"), 3)
    sampling = micro_config.stages.strong_sample.sampling.model_copy(update={"batch_size": 1})
    answers = []
    for order in (rows, rows[::-1]):
        write_jsonl(tmp_path / "prompts.jsonl", order)
        strong_sample(pair_refs["strong"], str(tmp_path / "prompts.jsonl"), tmp_path / "out.jsonl", sampling)
        answers.append({r["id"]: r["response"] for r in read_jsonl(tmp_path / "out.jsonl", ("id", "prompt"))})
    assert answers[0] == answers[1] and len(set(answers[0].values())) == 3


class Killed(Exception):
    """Stands for the pod dying: nothing in the stage catches it."""


def test_a_shard_killed_halfway_resumes_and_the_shards_merge_to_the_unsplit_file(
    micro_config, pair_refs, store, tmp_path
):
    """Sampling with temperature, 12 prompts in 6 batches of 2, two shards. Shard 1 dies while decoding its
    second batch; run again, it decodes only its batches not saved in the store (a real SeaweedFS). Merged with
    shard 0, it gives the unsplit stage's file byte for byte: each prompt's generator is seeded by the sampling
    seed and its id, and it keeps its batch."""
    sampling = micro_config.stages.strong_sample.sampling.model_copy(update={"batch_size": 2})
    model, prompts = pair_refs["strong"], pair_refs["prompts"]
    strong_sample(model, prompts, tmp_path / "unsplit.jsonl", sampling, 12)
    strong_sample(model, prompts, tmp_path / "shard-0.jsonl", sampling, 12, shard=Shard(0, 2))

    ensure_bucket("progress", store.settings())
    kept = Shard(1, 2, progress="s3://progress/run-2/strong_sample/shard-1-of-2")
    decoded = []
    real = Sampler.decode

    def dies_at_second_batch(self, ids, *args, **kwargs):
        decoded.append(len(ids))
        if len(decoded) == 2:
            raise Killed
        return real(self, ids, *args, **kwargs)

    mp = pytest.MonkeyPatch()
    for name, value in store.env().items():
        mp.setenv(name, value)
    mp.setattr(Sampler, "decode", dies_at_second_batch)
    try:
        with pytest.raises(Killed):
            strong_sample(model, prompts, tmp_path / "shard-1.jsonl", sampling, 12, shard=kept)
        assert list(FinishedBatches(kept.progress).load()) == [1], "its first batch (batch 1 of 0..5) was saved"
        decoded.clear()
        mp.setattr(Sampler, "decode", lambda self, ids, *a, **k: decoded.append(len(ids)) or real(self, ids, *a, **k))
        metrics = strong_sample(model, prompts, tmp_path / "shard-1.jsonl", sampling, 12, shard=kept)
        assert sorted(FinishedBatches(kept.progress).load()) == [1, 3, 5]
    finally:
        mp.undo()
    assert metrics["resumed_batches"] == 1 and decoded == [2, 2], "only the two unsaved batches were decoded"
    parts = [str(tmp_path / f"shard-{i}.jsonl") for i in range(2)]
    merge(prompts, 12, parts, tmp_path / "merged.jsonl", "strong_sample")
    assert (tmp_path / "merged.jsonl").read_bytes() == (tmp_path / "unsplit.jsonl").read_bytes()
    responses = [r["response"] for r in read_jsonl(tmp_path / "unsplit.jsonl", ("id", "prompt"))]
    assert len(set(responses)) > 6, "the draws differ from prompt to prompt (a row in the wrong place would show)"


def test_the_cd_stage_killed_halfway_resumes_to_the_uninterrupted_dataset(micro_config, pair_refs, store, tmp_path):
    """The cd_sample step as its component runs it (with a KFP run id, so finished batches go to the store), in
    its own process, killed with SIGKILL once a few of its 12 batches are in SeaweedFS. Run again with the same
    run id, it decodes only the missing batches, and its dataset equals an uninterrupted run's byte for byte
    (sampling with temperature: each prompt's generator is seeded by its id)."""
    config = micro_config.as_parameter()
    config["stages"]["cd_sample"]["sampling"].update(batch_size=2, max_new_tokens=64)
    config["data"]["max_train_prompts"] = 24
    config["storage"]["bucket"] = "progress"
    ensure_bucket("progress", store.settings())
    env = {**os.environ, **store.env()}
    step = f"from cong.stages.cd_sample import step; step(json.loads({json.dumps(config)!r}), {pair_refs['strong']!r}, "
    uninterrupted = tmp_path / "uninterrupted.jsonl"
    subprocess.run([sys.executable, "-c", f"import json; {step}{str(uninterrupted)!r})"], env=env, check=True)

    progress = FinishedBatches("s3://progress/progress/run-kill/cd_sample/shard-0-of-1", store.settings())
    resumed = tmp_path / "resumed.jsonl"
    code = f"import json; {step}{str(resumed)!r}, run_id='run-kill')"
    stage = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        while len(progress.load()) < 3:
            assert stage.poll() is None, "the stage ended before it could be killed"
            time.sleep(0.02)
        stage.kill()
        stage.wait()
    finally:
        stage.kill()
    saved = len(progress.load())
    assert 3 <= saved < 12 and not resumed.exists(), "killed halfway: some batches kept, no dataset written"

    mp = pytest.MonkeyPatch()
    for name, value in store.env().items():
        mp.setenv(name, value)
    try:
        result = cd_sample_stage.step(config, pair_refs["strong"], str(resumed), run_id="run-kill")
    finally:
        mp.undo()
    assert result["metrics"]["resumed_batches"] == saved
    assert resumed.read_bytes() == uninterrupted.read_bytes()
    assert len(read_jsonl(resumed, ("id", "response"))) == 24


def test_compiled_dag_fans_each_sampling_stage_out_over_gpu_shards(tmp_path):
    """The compiled IR (no KFP backend here): each sampling stage is a ParallelFor over the plan's shard list
    whose task asks for the stage's GPUs, then a merge task without GPU that collects the loop's outputs."""
    gpus = {"gpus": 2, "cpu": "8", "memory": "64Gi"}
    cfg = load_config(
        preset="qwen2.5-3b-to-7b",
        overrides={
            "stages": {stage: {"shards": 4} for stage in SHARDED_STAGES},
            "resources": {stage: gpus for stage in SHARDED_STAGES},
        },
    )
    docs = compiled_documents(cfg, tmp_path / "p.yaml")
    spec = docs[0]
    executors = spec["deploymentSpec"]["executors"]
    tasks = _tasks(spec)
    assert (
        spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]["stages"]["cd_sample"]["shards"] == 4
    )
    for stage in SHARDED_STAGES:
        name = stage.replace("_", "-")
        loop_dag, shard_task = tasks[f"{name}-shard"]
        assert loop_dag.startswith("comp-for-loop-"), stage
        (loop_name,) = [t for t, (_, body) in tasks.items() if body["componentRef"]["name"] == loop_dag]
        parent, loop = tasks[loop_name]
        iterator = loop["parameterIterator"]
        assert iterator["items"]["inputParameter"] == f"pipelinechannel--plan-{stage}_shards", stage
        accelerator = executors[f"exec-{name}-shard"]["container"]["resources"]["accelerator"]
        assert accelerator["resourceType"] == "nvidia.com/gpu" and accelerator["resourceCount"] == "2", stage
        # Each prompt's draws are seeded by its id: a shard's responses are a function of its inputs, and cached.
        assert shard_task["cachingOptions"] == {"enableCache": True}, stage
        merge_dag, merge_task = tasks[name]
        assert merge_dag == parent, "the merge sits beside its loop"
        collected = merge_task["inputs"]["artifacts"]["shards"]["taskOutputArtifact"]
        assert collected == {"producerTask": loop_name, "outputArtifactKey": f"pipelinechannel--{name}-shard-responses"}
        assert "accelerator" not in executors[f"exec-{name}"]["container"]["resources"], stage
        assert merge_task["cachingOptions"] == {"enableCache": True}, stage
    # kfp-kubernetes settings reach every shard as any other task.
    kubernetes = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert kubernetes["exec-cd-sample-shard"]["secretAsEnv"][0]["secretName"] == "cong-s3-credentials"


def random_model(like: str, out: Path, seed: int) -> str:
    """`like`'s tokenizer and shape with random weights: unlike the trained micro models, which answer every
    prompt with the same phrase under greedy decoding, its greedy responses differ from prompt to prompt."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    shutil.copytree(like, out)
    config = AutoConfig.from_pretrained(like)
    config.initializer_range = 0.2
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    return str(out)


@pytest.mark.extended  # a whole local pipeline run: about two minutes
def test_local_run_with_two_shards_gives_the_unsplit_datasets(tmp_path, pair_refs):
    """`cong run --local` with cd_sample and strong_sample in two shards each, greedy: the merged datasets
    equal the stage functions run unsplit in this process, and the shards' kept batches are gone from the run's
    store. The aligned weak model and the strong model have random weights, so greedy responses vary by prompt
    (a response in the wrong row would show)."""
    expert = random_model(pair_refs["strong"], tmp_path / "expert", seed=1)
    raw = yaml.safe_load(MICRO.read_text())
    raw.update(name="sharded", methods=["base", "cong"])
    raw["models"] = {
        "weak_base": "testbed:weak",
        "weak_aligned": expert,
        "strong_base": random_model(pair_refs["strong"], tmp_path / "strong", seed=2),
    }
    raw["data"] = {"max_train_prompts": 12, "max_eval_prompts": 2}
    greedy = {"greedy": True, "batch_size": 3, "max_new_tokens": 12}
    raw["stages"].update(
        cd_sample={"shards": 2, "sampling": greedy},
        strong_sample={"shards": 2, "sampling": greedy},
        evaluate={"sampling": {"max_new_tokens": 4}},
        alpha_sweep={"alphas": []},
    )
    out, _ = run_config(raw, tmp_path)
    (run,) = (out / "kfp").glob("cong-*")
    shards = sorted(p.relative_to(run).parts[1] for p in run.glob("for-loop-*/*") if "group-done" not in p.name)
    assert shards == ["cd-sample-shard"] * 2 + ["strong-sample-shard"] * 2
    assert len(list(run.glob("for-loop-*/group-done*"))) == 4, "each shard ends with the task that closes it"
    for shard in run.glob("for-loop-*/*-shard/executor_output.json"):
        metrics = json.loads(shard.read_text())["artifacts"]["metrics"]["artifacts"][0]["metadata"]
        assert metrics["rows"] == 6 and metrics["resumed_batches"] == 0, shard

    cfg = load_config(tmp_path / "c.yaml")
    prompts = pair_refs["prompts"]
    cd_sample(pair_refs["weak"], expert, prompts, tmp_path / "cd-sample.jsonl", cfg.stages.cd_sample, 12)
    cong_s = str(next(run.glob("sft*/model")))
    strong_sample(cong_s, prompts, tmp_path / "strong-sample.jsonl", cfg.stages.strong_sample.sampling, 12)
    for task in ("cd-sample", "strong-sample"):
        unsplit = read_jsonl(tmp_path / f"{task}.jsonl", ("id", "prompt"))
        assert len({r["response"] for r in unsplit}) == 12, "every prompt has its own greedy response"
        assert (run / task / "responses").read_bytes() == (tmp_path / f"{task}.jsonl").read_bytes(), task
        executor = json.loads((run / task / "executor_output.json").read_text())["artifacts"]
        metadata = executor["responses"]["artifacts"][0]["metadata"]
        assert metadata["stage"] == task.replace("-", "_") and metadata["shards"] == 2 and metadata["greedy"]
    strong = json.loads((run / "strong-sample" / "executor_output.json").read_text())["artifacts"]["responses"]
    read = strong["artifacts"][0]["metadata"]["inputs"]
    assert set(read) == {"model", "train_prompts"} and read["model"]["uri"] == cong_s, (
        "the merge's lineage is the shards'"
    )

    with EmbeddedObjectStore(out / "objectstore") as server:
        keys = [o["Key"] for o in server.settings().client().list_objects_v2(Bucket="cong").get("Contents", [])]
    assert keys and not [k for k in keys if k.startswith("progress/")], "the merges deleted the kept batches"
