"""Each stage on the micro testbed, called as a plain function (no kfp), with real trl training."""

import json

import pytest

from cong.data import PAIR_FIELDS, RESPONSE_FIELDS, read_jsonl, write_jsonl
from cong.errors import CongError
from cong.refs import resolve
from cong.stages.cd_sample import cd_sample
from cong.stages.dpo import dpo
from cong.stages.evaluate import evaluate
from cong.stages.pair import pair
from cong.stages.sft import sft
from cong.stages.strong_sample import strong_sample
from cong.stages.weak_align import weak_align


@pytest.fixture(scope="module")
def world(micro_config, micro_testbed, tmp_path_factory):
    """Runs the stages in pipeline order once; each test checks one stage's outputs."""
    cfg, out = micro_config, tmp_path_factory.mktemp("stages")
    refs = {
        k: resolve(getattr(cfg.models if k.endswith("base") else cfg.data, k), cfg)
        for k in ("weak_base", "strong_base", "train_prompts", "eval_prompts")
    }
    s = cfg.stages
    m = {
        "weak_align": weak_align(
            refs["weak_base"],
            refs["train_prompts"],
            out / "wa_pairs.jsonl",
            out / "weak_aligned",
            s.weak_align,
            "testbed",
        )
    }
    m["cd_sample"] = cd_sample(
        refs["weak_base"], str(out / "weak_aligned"), refs["train_prompts"], out / "cd.jsonl", s.cd_sample
    )
    m["sft"] = sft(refs["strong_base"], str(out / "cd.jsonl"), out / "cong_s", s.sft.train)
    m["strong_sample"] = strong_sample(
        str(out / "cong_s"), refs["train_prompts"], out / "ss.jsonl", s.strong_sample.sampling
    )
    m["pair"] = pair(str(out / "cd.jsonl"), str(out / "ss.jsonl"), out / "pairs.jsonl")
    m["dpo"] = dpo(str(out / "cong_s"), str(out / "pairs.jsonl"), out / "cong", s.dpo.train)
    models = {
        "base": refs["strong_base"],
        "weak_aligned": str(out / "weak_aligned"),
        "cong_s": str(out / "cong_s"),
        "cong": str(out / "cong"),
    }
    m["evaluate"] = evaluate(
        models, refs["weak_base"], str(out / "weak_aligned"), refs["eval_prompts"], out / "eval", s.evaluate
    )
    return cfg, out, refs, m


def test_weak_align(world):
    cfg, out, refs, metrics = world
    pairs = read_jsonl(out / "wa_pairs.jsonl", PAIR_FIELDS)
    assert metrics["weak_align"]["pairs"] == len(pairs) > 0
    assert all(p["chosen_reward"] >= p["rejected_reward"] and p["chosen"] != p["rejected"] for p in pairs)
    assert (out / "weak_aligned" / "config.json").is_file()
    assert not (out / "weak_aligned" / "checkpoints").exists()
    assert metrics["weak_align"]["train_global_step"] >= 1


def test_cd_sample_one_response_per_prompt(world):
    cfg, out, refs, metrics = world
    prompts = read_jsonl(refs["train_prompts"], ("id", "prompt"))
    rows = read_jsonl(out / "cd.jsonl", RESPONSE_FIELDS[:2])
    assert [r["id"] for r in rows] == [p["id"] for p in prompts]
    assert metrics["cd_sample"]["alpha"] == 0.4


def test_sft_changes_the_strong_model(world):
    import torch
    from transformers import AutoModelForCausalLM

    cfg, out, refs, metrics = world
    before = AutoModelForCausalLM.from_pretrained(refs["strong_base"]).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out / "cong_s").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert metrics["sft"]["train_loss"] > 0


def test_strong_sample_pair_and_dpo(world):
    cfg, out, refs, metrics = world
    assert metrics["strong_sample"]["rows"] == cfg.testbed.n_train_prompts
    pairs = read_jsonl(out / "pairs.jsonl", PAIR_FIELDS)
    cd = {r["id"]: r["response"] for r in read_jsonl(out / "cd.jsonl", ("id", "prompt"))}
    assert all(p["chosen"] == cd[p["id"]] for p in pairs)
    assert metrics["pair"]["pairs"] == len(pairs)
    assert (out / "cong" / "model.safetensors").is_file()


def test_evaluate_writes_results_and_report(world):
    cfg, out, refs, metrics = world
    results = json.loads((out / "eval" / "results.json").read_text())
    assert set(results["methods"]) == {"base", "weak_aligned", "cong_s", "cong"}
    for row in results["methods"].values():
        assert 0 <= row["reward_mean"] <= 1 and 0 <= row["win_rate_vs_base"] <= 1
    assert results["methods"]["base"]["win_rate_vs_base"] == 0.5
    assert "<table" in (out / "eval" / "report.html").read_text()


def test_pair_rejects_mismatched_prompts(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"id": "1", "prompt": "p", "response": "x"}])
    write_jsonl(tmp_path / "b.jsonl", [{"id": "1", "prompt": "q", "response": "y"}])
    with pytest.raises(CongError, match="different prompts"):
        pair(str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), tmp_path / "out.jsonl")


def test_sft_with_lora_saves_a_merged_model(world, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from cong.config import LoraSettings

    cfg, out, refs, metrics = world
    settings = cfg.stages.sft.train.model_copy(update={"lora": LoraSettings(r=4, alpha=8)})
    sft(refs["strong_base"], str(out / "cd.jsonl"), tmp_path / "lora", settings)
    assert not (tmp_path / "lora" / "adapter_config.json").exists()
    before = AutoModelForCausalLM.from_pretrained(refs["strong_base"]).state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "lora").state_dict()
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
