"""`cong bench cd` on the micro testbed: every row is timed, the engine's greedy tokens equal the one-prompt-at-a-time
reference's, and the JSON file has the shape other tools read."""

import json

from cong.bench_cd import run_bench, write_json
from cong.data import read_jsonl
from cong.decoding.generate import DecodeParams, decode
from cong.decoding.reference import naive_decode, reference_decode
from cong.models import load_model, load_tokenizer, prompt_ids


def test_bench_rows_ratios_and_json(micro_testbed, tmp_path):
    weak = str(micro_testbed / "weak")
    prompts = [r["prompt"] for r in read_jsonl(micro_testbed / "eval.jsonl", ("id", "prompt"), limit=6)]
    result = run_bench(weak, weak, prompts, max_new_tokens=6, batch_sizes=(1, 4), reference_prompts=3, repeats=1)
    assert result["same_tokens_as_reference"] is True
    rows = {(r["method"], r["batch_size"]): r for r in result["rows"]}
    assert set(rows) == {("reference", 1), ("naive", 1), ("cong", 1), ("single", 1), ("cong", 4), ("single", 4)}
    assert rows[("reference", 1)]["new_tokens"] == 3 * 6 and rows[("cong", 4)]["new_tokens"] == 6 * 6
    assert all(r["tokens_per_s"] > 0 and r["peak_mem_mb"] > 0 for r in rows.values())
    ratio = result["ratios"]["4"]
    assert ratio["cong/single"] == rows[("cong", 4)]["tokens_per_s"] / rows[("single", 4)]["tokens_per_s"]
    write_json(result, tmp_path / "bench.json")
    assert json.loads((tmp_path / "bench.json").read_text())["rows"][0]["method"] == "reference"


def test_reference_and_naive_decode_as_the_engine_does(micro_testbed):
    """Greedy CD of an expert and a different amateur: the reference and the naive port give the engine's tokens,
    batch 1 and a padded batch of prompts of different lengths."""
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
    batched = decode(expert, ids, params, eos_token_ids=[-1], pad_token_id=pad, amateur=amateur, batch_size=4)
    alone = decode(expert, ids, params, eos_token_ids=[-1], pad_token_id=pad, amateur=amateur, batch_size=1)
    reference = [reference_decode(expert, amateur, p, params, [-1], i) for i, p in enumerate(ids)]
    assert reference == alone == batched
    assert [naive_decode(expert, amateur, p, 8, pad) for p in ids] == reference
