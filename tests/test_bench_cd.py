"""`cong bench cd` on the micro testbed: every row is timed, the engine's greedy tokens equal the one-prompt-at-a-time
reference's, and the JSON file has the shape other tools read."""

import json
from pathlib import Path

import pytest

from cong.config import CdSampleSettings
from cong.data import read_jsonl
from cong.decoding.bench import format_bench, random_lora_expert, run_bench, write_json
from cong.decoding.contrastive import CdParams
from cong.decoding.generate import DecodeParams, decode
from cong.decoding.reference import naive_decode, reference_decode
from cong.models import load_model, load_tokenizer, prompt_ids

CD = CdParams.of(CdSampleSettings())


def test_bench_rows_ratios_and_json(micro_testbed, tmp_path, monkeypatch):
    import cong.decoding.reference

    weak = str(micro_testbed / "weak")
    expert = random_lora_expert(weak, tmp_path / "expert", rank=4)
    prompts = [r["prompt"] for r in read_jsonl(micro_testbed / "eval.jsonl", ("id", "prompt"), limit=6)]
    calls = []
    real = cong.decoding.reference.reference_decode
    monkeypatch.setattr(cong.decoding.reference, "reference_decode", lambda *a: calls.append(1) or real(*a))
    result = run_bench(
        expert, weak, prompts, max_new_tokens=6, batch_sizes=(1, 4), reference_prompts=3, repeats=1, cd=CD
    )
    # A warm-up and a timed run of the 3 reference prompts: in the one-at-a-time turns, and again at each batch size,
    # taking turns with the engine (so cong/reference compares runs made back to back).
    assert len(calls) == 3 * 2 * (1 + 2)
    assert result["same_tokens_as_reference"] == {"cong": True, "cong_lora": True}
    rows = {(r["method"], r["batch_size"]): r for r in result["rows"]}
    engine = {(m, b) for m in ("cong", "cong_lora", "single") for b in (1, 4)}
    assert set(rows) == {("reference", 1), ("naive", 1)} | engine
    assert rows[("reference", 1)]["new_tokens"] == 3 * 6 and rows[("cong_lora", 4)]["new_tokens"] == 6 * 6
    assert all(r["tokens_per_s"] > 0 and r["peak_mem_mb"] > 0 for r in rows.values())
    ratio = result["ratios"]["4"]
    # One repetition: the median of the per-turn ratios is the ratio of the rows (the reference's, from its own run
    # in the batch-4 turn, is not a row).
    single = rows[("single", 4)]["tokens_per_s"]
    assert ratio["cong/reference"] > 0
    assert ratio["cong/single"] == pytest.approx(rows[("cong", 4)]["tokens_per_s"] / single)
    assert ratio["cong_lora/single"] == pytest.approx(rows[("cong_lora", 4)]["tokens_per_s"] / single)
    write_json(result, tmp_path / "bench.json")
    assert json.loads((tmp_path / "bench.json").read_text())["rows"][0]["method"] == "reference"
    assert "cong_lora/single" in format_bench(result)


def test_bench_of_an_expert_without_adapter_has_no_lora_rows(micro_testbed):
    weak = str(micro_testbed / "weak")
    prompts = [r["prompt"] for r in read_jsonl(micro_testbed / "eval.jsonl", ("id", "prompt"), limit=2)]
    result = run_bench(weak, weak, prompts, max_new_tokens=2, batch_sizes=(2,), reference_prompts=1, repeats=1, cd=CD)
    assert {r["method"] for r in result["rows"]} == {"reference", "naive", "cong", "single"}
    assert result["same_tokens_as_reference"] == {"cong": True}


@pytest.mark.parametrize("score_form", ["spec", "authors"])
def test_reference_and_naive_decode_as_the_engine_does(micro_testbed, score_form):
    """Greedy CD of an expert and a different amateur: the reference and the naive port give the engine's tokens,
    batch 1 and a padded batch of prompts of different lengths, under either score form."""
    cd = CdParams(alpha=0.4, relative_top=0.1, score_form=score_form)
    expert, amateur = load_model(str(micro_testbed / "strong")), load_model(str(micro_testbed / "strong"))
    import torch

    with torch.no_grad():
        for p in amateur.parameters():
            p.mul_(0.9)
    tokenizer = load_tokenizer(str(micro_testbed / "strong"))
    prompts = [r["prompt"] for r in read_jsonl(micro_testbed / "eval.jsonl", ("id", "prompt"), limit=4)]
    ids = prompt_ids(tokenizer, prompts)
    assert len({len(p) for p in ids}) > 1, "prompts of different lengths, so the batch is padded"
    params = DecodeParams(max_new_tokens=8, greedy=True)
    pad = tokenizer.pad_token_id
    engine = dict(eos_token_ids=[-1], pad_token_id=pad, amateur=amateur, cd=cd)
    batched = decode(expert, ids, params, batch_size=4, **engine)
    alone = decode(expert, ids, params, batch_size=1, **engine)
    reference = [reference_decode(expert, amateur, p, params, [-1], i, cd) for i, p in enumerate(ids)]
    assert reference == alone == batched
    assert [naive_decode(expert, amateur, p, 8, pad, cd) for p in ids] == reference


def test_bench_command_builds_a_lora_expert_when_no_aligned_model_is_set(micro_testbed, tmp_path, capsys):
    """`cong bench cd` on a config without models.weak_aligned: the expert is the weak base plus a random adapter,
    so every row, cong_lora included, is timed; the table is printed and the JSON written."""
    from pipelines.cli import main

    config = Path(__file__).parent / "configs" / "micro.yaml"
    argv = ["bench", "cd", "--config", str(config), "--prompts", "3", "--max-new-tokens", "3", "--batch-sizes", "3"]
    argv += ["--reference-prompts", "1", "--repeats", "1", "--lora-rank", "2", "--json", str(tmp_path / "b.json")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "cong_lora/single" in out and "random rank-2 LoRA adapter" in out
    result = json.loads((tmp_path / "b.json").read_text())
    assert {(r["method"], r["batch_size"]) for r in result["rows"]} >= {("cong_lora", 3), ("single", 3)}
