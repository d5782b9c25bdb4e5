"""Each stage on the micro testbed, called as a plain function (no kfp), with real trl training."""

import json

import pytest

from cong.data import PAIR_FIELDS, RESPONSE_FIELDS, read_jsonl, write_jsonl
from cong.decoding.contrastive import CdParams
from cong.errors import CongError
from cong.inputs.refs import resolve
from cong.stages import weak_align
from cong.stages.cd_sample import cd_sample
from cong.stages.dpo import dpo
from cong.stages.evaluate import evaluate
from cong.stages.pair import pair
from cong.stages.sft import sft
from cong.stages.strong_sample import strong_sample
from tests.conftest import changed


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
        # What the weak_align component calls: sampling and pairing here, DPO through cong.training.distributed.
        "weak_align": weak_align.step(
            cfg.as_parameter(), pairs=str(out / "wa_pairs.jsonl"), weak_aligned=str(out / "weak_aligned")
        )["metrics"]
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
    assert metrics["weak_align"]["train_train_rows"] == len(pairs)
    assert changed(refs["weak_base"], out / "weak_aligned")


def test_cd_sample_one_response_per_prompt(world):
    cfg, out, refs, metrics = world
    prompts = read_jsonl(refs["train_prompts"], ("id", "prompt"))
    rows = read_jsonl(out / "cd.jsonl", RESPONSE_FIELDS[:2])
    assert [r["id"] for r in rows] == [p["id"] for p in prompts]
    assert metrics["cd_sample"]["alpha"] == 0.4


def test_sft_changes_the_strong_model(world):
    cfg, out, refs, metrics = world
    assert changed(refs["strong_base"], out / "cong_s")
    assert metrics["sft"]["train_loss"] > 0


def test_strong_sample_pair_and_dpo(world):
    cfg, out, refs, metrics = world
    assert metrics["strong_sample"]["rows"] == cfg.testbed.n_train_prompts
    pairs = read_jsonl(out / "pairs.jsonl", PAIR_FIELDS)
    cd = {r["id"]: r["response"] for r in read_jsonl(out / "cd.jsonl", ("id", "prompt"))}
    assert all(p["chosen"] == cd[p["id"]] for p in pairs)
    assert metrics["pair"]["pairs"] == len(pairs)
    assert changed(out / "cong_s", out / "cong")


def test_evaluate_writes_results_and_report(world):
    cfg, out, refs, metrics = world
    results = json.loads((out / "eval" / "results.json").read_text())
    assert set(results["methods"]) == {"base", "weak_aligned", "cong_s", "cong"}
    prompts = results["eval_prompts"]
    for row in results["methods"].values():
        for metric in ("reward_mean", "win_rate_vs_base", "implicit_reward", "length_words", "style"):
            low, value, high = row[f"{metric}_ci95_low"], row[metric], row[f"{metric}_ci95_high"]
            assert low <= value <= high and row[f"{metric}_n"] == prompts, metric
        assert 0 <= row["reward_mean"] <= 1 and 0 <= row["win_rate_vs_base"] <= 1
    assert results["methods"]["base"]["win_rate_vs_base"] == 0.5
    paired = results["paired_tests"]
    assert (paired["method"], set(paired["against"])) == ("cong", {"base", "weak_aligned", "cong_s"})
    for test in paired["against"].values():
        assert 0 < test["p_value"] <= 1 and test["difference_n"] == prompts
    assert "<table" in (out / "eval" / "report.html").read_text()


def test_pair_rejects_mismatched_prompts(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"id": "1", "prompt": "p", "response": "x"}])
    write_jsonl(tmp_path / "b.jsonl", [{"id": "1", "prompt": "q", "response": "y"}])
    with pytest.raises(CongError, match="different prompts"):
        pair(str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), tmp_path / "out.jsonl")


def test_sft_with_lora_saves_a_merged_model(world, tmp_path):
    from cong.config import LoraSettings

    cfg, out, refs, metrics = world
    settings = cfg.stages.sft.train.model_copy(update={"lora": LoraSettings(r=4, alpha=8)})
    sft(refs["strong_base"], str(out / "cd.jsonl"), tmp_path / "lora", settings)
    assert not (tmp_path / "lora" / "adapter_config.json").exists()
    assert changed(refs["strong_base"], tmp_path / "lora")


def test_implicit_reward(world):
    """Zero when the weak pair is one model; batching changes nothing; matches a one-sequence computation."""
    import torch

    from cong.evaluation.rewards import ImplicitReward
    from cong.models import prompt_ids

    cfg, out, refs, metrics = world
    prompts = ["What is 2 + 3?", "Sort the digits 3 1 2.", "Reverse the letters c a t."]
    responses = ["Sure! The answer is 5. I hope this helps!", "1 2 3", "Ugh, t a c. Obviously."]
    same = ImplicitReward.load(refs["weak_base"], refs["weak_base"], batch_size=3).score(prompts, responses)
    assert same == [0.0, 0.0, 0.0]
    pair_scorer = ImplicitReward.load(refs["weak_base"], str(out / "weak_aligned"), batch_size=3)
    batched = pair_scorer.score(prompts, responses)
    pair_scorer.batch_size = 1
    assert pair_scorer.score(prompts, responses) == pytest.approx(batched, abs=1e-5)

    tok = pair_scorer.tokenizer
    context = prompt_ids(tok, prompts[:1])[0]
    answer = tok(responses[0], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([context + answer])
    with torch.inference_mode():
        terms = [torch.log_softmax(m(ids).logits[0].float(), -1) for m in (pair_scorer.expert, pair_scorer.amateur)]
    total = sum(terms[0][len(context) - 1 + j, t] - terms[1][len(context) - 1 + j, t] for j, t in enumerate(answer))
    assert batched[0] == pytest.approx(total.item() / len(answer), abs=1e-5)


def test_contrastive_sampler_refuses_a_different_tokenizer(world, tmp_path):
    import shutil

    from cong.decoding.sampler import Sampler
    from cong.models import load_tokenizer

    cfg, out, refs, metrics = world
    other = tmp_path / "other"
    shutil.copytree(refs["weak_base"], other)
    tokenizer = load_tokenizer(str(other))
    tokenizer.add_tokens(["<|extra|>"])
    tokenizer.save_pretrained(other)
    with pytest.raises(CongError, match="do not share a tokenizer"):
        Sampler(str(out / "weak_aligned"), amateur_ref=str(other))


def test_alpha_sweep_and_evaluate_of_response_files(world, tmp_path, monkeypatch):
    """A responses file is a method row like a model; the sweep's points land in results.json and the report."""
    from cong.config import AlphaSweepSettings
    from cong.stages.alpha_sweep import alpha_sweep

    cfg, out, refs, metrics = world
    sweep = AlphaSweepSettings(alphas=[0.0, 1.0], prompts=3)
    scored = []
    real = CdParams.scores
    monkeypatch.setattr(CdParams, "scores", lambda cd, *a: scored.append((cd.alpha, cd.score_form)) or real(cd, *a))
    points = alpha_sweep(
        refs["weak_base"],
        str(out / "weak_aligned"),
        refs["eval_prompts"],
        tmp_path / "sweep.json",
        cfg.stages.cd_sample.model_copy(update={"score_form": "authors"}),
        sweep,
        cfg.stages.evaluate,
    )
    assert set(scored) == {(0.0, "authors"), (1.0, "authors")}, "each point decodes by cd_sample's score form"
    assert set(points) == {f"alpha_{a}.{k}" for a in ("0", "1") for k in ("reward_mean", "implicit_reward")}
    sampling = cfg.stages.strong_sample.sampling
    strong_sample(refs["strong_base"], refs["eval_prompts"], tmp_path / "sampled.jsonl", sampling)
    greedy = sampling.model_copy(update={"greedy": True})
    strong_sample(refs["strong_base"], refs["eval_prompts"], tmp_path / "greedy.jsonl", greedy)
    sampled_rows, greedy_rows = (read_jsonl(tmp_path / f"{d}.jsonl", RESPONSE_FIELDS) for d in ("sampled", "greedy"))
    both = [{**r, "greedy_response": g["response"]} for r, g in zip(sampled_rows, greedy_rows, strict=True)]
    write_jsonl(tmp_path / "wsd.jsonl", both)
    results = evaluate(
        {"base": refs["strong_base"]},
        refs["weak_base"],
        str(out / "weak_aligned"),
        refs["eval_prompts"],
        tmp_path / "eval",
        cfg.stages.evaluate,
        max_prompts=3,
        responses_of={"wsd": str(tmp_path / "wsd.jsonl")},
        alpha_sweep_path=str(tmp_path / "sweep.json"),
    )
    assert list(results["methods"]) == ["base", "wsd"]
    # A decode-time row's figures come from its file's field of each decoding.
    wsd_row = results["methods"]["wsd"]
    lengths = {
        d: [len(r["response"].split()) for r in rows[:3]] for d, rows in (("", sampled_rows), ("greedy_", greedy_rows))
    }
    for prefix, words in lengths.items():
        assert wsd_row[f"{prefix}length_words"] == pytest.approx(sum(words) / 3)
    assert [p["alpha"] for p in results["alpha_sweep"]] == [0.0, 1.0]
    assert all(p["prompts"] == 3 and "accuracy" in p for p in results["alpha_sweep"])
    assert 'id="alpha-sweep"' in (tmp_path / "eval" / "report.html").read_text()


def test_evaluate_names_a_responses_file_missing_eval_prompts(world, tmp_path):
    cfg, out, refs, metrics = world
    write_jsonl(tmp_path / "short.jsonl", [{"id": "nope", "prompt": "p", "response": "x", "greedy_response": "x"}])
    with pytest.raises(CongError, match="the wsd responses .* lack 2 eval prompts"):
        evaluate(
            {},
            refs["weak_base"],
            str(out / "weak_aligned"),
            refs["eval_prompts"],
            tmp_path / "eval",
            cfg.stages.evaluate,
            max_prompts=2,
            responses_of={"wsd": str(tmp_path / "short.jsonl")},
        )


def test_weak_align_with_lora_keeps_its_adapter_for_shared_weight_cd(world, tmp_path):
    """weak_align trained with LoRA saves the merged model and its adapter; cd_sample then decodes from one copy
    of the weak base and gives the two-model responses (greedy)."""
    cfg, out, refs, metrics = world
    config = cfg.as_parameter()
    config["stages"]["weak_align"]["train"]["lora"] = {"r": 4, "alpha": 8}
    weak_align.step(config, pairs=str(tmp_path / "pairs.jsonl"), weak_aligned=str(tmp_path / "aligned"))
    assert (tmp_path / "aligned" / "config.json").is_file()
    assert (tmp_path / "aligned" / "adapter" / "adapter_config.json").is_file()
    greedy = cfg.stages.cd_sample.model_copy(
        update={"sampling": cfg.stages.cd_sample.sampling.model_copy(update={"greedy": True})}
    )
    responses = {}
    for shared in (True, False):
        settings = greedy.model_copy(update={"shared_weights": shared})
        path = tmp_path / f"cd-{shared}.jsonl"
        m = cd_sample(refs["weak_base"], str(tmp_path / "aligned"), refs["train_prompts"], path, settings)
        assert m["shared_weights"] == float(shared)
        responses[shared] = [r["response"] for r in read_jsonl(path, RESPONSE_FIELDS)]
    assert responses[True] == responses[False]
    assert metrics["cd_sample"]["shared_weights"] == 0.0, "a model trained without LoRA keeps no adapter"
