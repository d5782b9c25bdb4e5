"""Weak-to-Strong Decoding (method.md 4.1): the switch rule, the draft split, and the stage on the micro testbed."""

import math
import shutil

import pytest
import torch

import cong.decoding.wsd as wsd_decoding
import cong.stages.wsd as wsd_stage
from cong.config import DecodingSettings, WsdSettings
from cong.data import PROMPT_FIELDS, RESPONSE_FIELDS, read_jsonl
from cong.decoding.generate import DecodeParams
from cong.decoding.wsd import (
    PLAIN_STOP_MARKERS,
    cut_at_markers,
    draft_token_probs,
    split_draft,
    switch_point,
    weak_to_strong,
    window_scores,
)
from cong.errors import CongError

METRICS = {
    "rows",
    "empty_drafts",
    "mean_draft_tokens",
    "mean_kept_draft_tokens",
    "mean_cut_fraction",
    "mean_response_tokens",
    "draft_seconds",
    "strong_seconds",
    "decode_seconds",
}


def test_draft_shorter_than_the_window_is_kept_whole():
    assert window_scores([1.0, 1.0, 1.0], 6) == [0.0, 0.0, 0.0]
    assert switch_point([1.0, 1.0, 1.0], window=6, threshold=0.8) == 2


def test_never_confident_keeps_the_whole_draft():
    assert switch_point([0.5] * 10, window=6, threshold=0.8) == 9


def test_confident_at_once_cuts_at_the_first_full_window():
    assert switch_point([1.0] * 8, window=6, threshold=0.8) == 5


def test_mid_case_geometric_means():
    probs = [0.9, 0.1, 0.2, 0.9, 0.8, 0.7, 0.1]
    # By hand: (0.9*0.1*0.2)^(1/3) = 0.018^(1/3), then 0.018^(1/3), 0.144^(1/3), 0.504^(1/3), 0.056^(1/3).
    expected = [0.0, 0.0, 0.26207, 0.26207, 0.52415, 0.79581, 0.38259]
    assert window_scores(probs, 3) == pytest.approx(expected, abs=1e-5)
    assert switch_point(probs, window=3, threshold=0.5) == 4
    assert switch_point(probs, window=3, threshold=0.7) == 5
    assert switch_point(probs, window=3, threshold=0.9) == 6


def test_zero_probability_and_window_one():
    assert window_scores([0.0, 1.0, 1.0], 2) == [0.0, 0.0, 1.0]
    assert switch_point([0.3, 0.85, 0.9], window=1, threshold=0.8) == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one"):
        switch_point([], window=6, threshold=0.8)
    with pytest.raises(ValueError, match="window"):
        switch_point([1.0], window=0, threshold=0.8)


def test_cut_at_markers():
    assert cut_at_markers("4.\n\n[User]\nnext [Assistant]", ("[User]", "[Assistant]")) == "4.\n\n"
    assert cut_at_markers("a [System] b [User]", ("[User]", "[System]")) == "a "
    assert cut_at_markers("no marker", ("[User]",)) == "no marker"


class WordTokenizer:
    """Whitespace-separated words, each an id: `Answer:` + `yes` is one word, unlike `Answer:` alone."""

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [self.vocab.setdefault(w, len(self.vocab)) for w in text.split()]}


def test_split_draft_needs_the_prompt_as_a_prefix():
    tokenizer = WordTokenizer()
    prompt_ids, draft_ids = split_draft(tokenizer, "Q: hi Answer: ", "yes sir", add_special_tokens=False)
    assert prompt_ids == tokenizer("Q: hi Answer:")["input_ids"] and draft_ids == tokenizer("yes sir")["input_ids"]
    with pytest.raises(CongError, match="prefix"):
        split_draft(tokenizer, "Q: hi Answer:", "yes", add_special_tokens=False)


@pytest.fixture(scope="module")
def strong(micro_testbed):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = micro_testbed / "strong"
    return AutoModelForCausalLM.from_pretrained(ref).eval(), AutoTokenizer.from_pretrained(ref)


def chat(tokenizer, query):
    messages = [{"role": "user", "content": query}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def test_split_draft_retokenises_foreign_text(strong):
    _, tokenizer = strong
    prompt = chat(tokenizer, "Add 17 and 8.")
    draft = "The sum is 25, so the answer is 25."  # text, as another vocabulary's drafter would hand it over
    prompt_ids, draft_ids = split_draft(tokenizer, prompt, draft, add_special_tokens=False)
    assert prompt_ids == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(draft_ids) == draft


def test_draft_token_probs_match_one_unpadded_forward_per_row(strong):
    model, tokenizer = strong
    prompts = [tokenizer(chat(tokenizer, q), add_special_tokens=False)["input_ids"] for q in ("Add 1 and 2.", "Hi")]
    drafts = [tokenizer("3 is it")["input_ids"], tokenizer("Hello there, how are you")["input_ids"]]
    batched = draft_token_probs(model, prompts + [prompts[0]], drafts + [[]], pad_token_id=tokenizer.pad_token_id)
    assert batched[2] == []
    for p, d, got in zip(prompts, drafts, batched, strict=False):
        with torch.no_grad():
            logits = model(torch.tensor([p + d])).logits[0, len(p) - 1 : -1]
        want = logits.softmax(-1)[torch.arange(len(d)), d]
        assert got == pytest.approx(want.tolist(), abs=1e-5)


@pytest.mark.parametrize(("threshold", "kept"), [(1e-9, 6), (1.0, None)])
def test_weak_to_strong_keeps_the_cut_and_continues(strong, threshold, kept):
    model, tokenizer = strong
    prompts = [chat(tokenizer, "Add 17 and 8."), chat(tokenizer, "Reverse the letters o t c l.")]
    drafts = ["The sum of 17 and 8 is 25.", "l c t o, that is the reversed order."]
    results = weak_to_strong(
        model,
        tokenizer,
        prompts,
        drafts,
        window=6,
        threshold=threshold,
        params=DecodeParams(max_new_tokens=24, greedy=True),
        eos_token_ids=[tokenizer.eos_token_id],
        add_special_tokens=False,
    )
    for result, prompt, draft in zip(results, prompts, drafts, strict=True):
        _, draft_ids = split_draft(tokenizer, prompt, draft, add_special_tokens=False)
        assert result.draft_tokens == len(draft_ids)
        # A threshold no window misses cuts at the first full window; one no window reaches keeps it all.
        assert result.kept_ids == draft_ids[: kept or len(draft_ids)]
        assert result.response.startswith(result.kept_text.strip())
        assert len(tokenizer(result.response, add_special_tokens=False)["input_ids"]) <= 24


def plain_copy(src, dst):
    """The strong model without its chat template, as a base model would come."""
    shutil.copytree(src, dst)
    (dst / "chat_template.jinja").unlink()
    return dst


@pytest.mark.parametrize("template", ["chat", "plain"])
def test_wsd_stage(micro_testbed, tmp_path, monkeypatch, template):
    strong_ref = micro_testbed / "strong"
    if template == "plain":
        strong_ref = plain_copy(strong_ref, tmp_path / "strong")
    seen = []

    def spy(*args, **kwargs):
        seen.extend(weak_to_strong(*args, **kwargs))
        return seen

    monkeypatch.setattr(wsd_decoding, "weak_to_strong", spy)
    # The micro strong model is rarely confident in the micro weak drafts; a low threshold makes it take over.
    settings = WsdSettings(threshold=0.3, draft_max_new_tokens=16, max_total_tokens=32, batch_size=4)
    out = tmp_path / "wsd.jsonl"
    metrics = wsd_stage.wsd(
        str(micro_testbed / "weak"), str(strong_ref), str(micro_testbed / "train.jsonl"), out, settings, max_prompts=5
    )
    rows = read_jsonl(out, RESPONSE_FIELDS)
    prompts = read_jsonl(micro_testbed / "train.jsonl", PROMPT_FIELDS, limit=5)
    assert [(r["id"], r["prompt"]) for r in rows] == [(p["id"], p["prompt"]) for p in prompts]
    assert [r["response"] for r in rows] == [s.response for s in seen]
    for row, result in zip(rows, seen, strict=True):
        assert set(row) == {"id", "prompt", "response"}
        assert row["response"].startswith(result.kept_text.strip())
        assert len(result.kept_ids) <= result.draft_tokens
    if template == "plain":
        assert not any(m in r["response"] for r in rows for m in PLAIN_STOP_MARKERS)
    assert set(metrics) == METRICS and metrics["rows"] == 5
    assert metrics["mean_kept_draft_tokens"] <= metrics["mean_draft_tokens"]
    assert 0 <= metrics["mean_cut_fraction"] <= 1 and metrics["mean_response_tokens"] <= 32
    assert math.isclose(metrics["decode_seconds"], metrics["draft_seconds"] + metrics["strong_seconds"])


def test_wsd_eval_rows_are_decoded_as_every_row(micro_testbed, tmp_path):
    """The eval split writes one field per decoding of the table: a sampled `response` (seeded by row, so a rerun
    draws the same) and a `greedy_response` that is exactly the greedy labels' decoding at the same budget."""
    settings = WsdSettings(threshold=0.3, draft_max_new_tokens=16, max_total_tokens=32, batch_size=4)
    sampled = DecodingSettings(temperature=0.8, top_p=0.95, seed=7)
    decodings = {"response": (sampled, 32), "greedy_response": (DecodingSettings(greedy=True), 32)}
    refs = (str(micro_testbed / "weak"), str(micro_testbed / "strong"), str(micro_testbed / "eval.jsonl"))
    outs = [tmp_path / f"{name}.jsonl" for name in ("eval", "again", "labels", "sampled labels")]
    metrics = wsd_stage.wsd(*refs, outs[0], settings, decodings, max_prompts=6)
    wsd_stage.wsd(*refs, outs[1], settings, decodings, max_prompts=6)
    wsd_stage.wsd(*refs, outs[2], settings, max_prompts=6)
    wsd_stage.wsd(*refs, outs[3], settings.model_copy(update={"decoding": sampled}), max_prompts=6)
    rows, again, labels, sampled_labels = (read_jsonl(o, ("id", "prompt", "response")) for o in outs)
    assert all(set(r) == {"id", "prompt", "response", "greedy_response"} for r in rows)
    assert rows == again
    # The training labels follow `stages.wsd.decoding` and `max_total_tokens`: greedy by default, else as set.
    assert [r["greedy_response"] for r in rows] == [r["response"] for r in labels]
    assert [r["response"] for r in rows] == [r["response"] for r in sampled_labels]
    assert [r["response"] for r in rows] != [r["greedy_response"] for r in rows]
    assert METRICS <= set(metrics) and {"greedy_mean_cut_fraction", "greedy_strong_seconds"} <= set(metrics)


@pytest.fixture(scope="module")
def foreign_drafter(micro_testbed, tmp_path_factory):
    """A tiny untrained chat model with its own byte-level BPE vocabulary, unlike the testbed's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [r["prompt"] for r in read_jsonl(micro_testbed / "train.jsonl", PROMPT_FIELDS)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=320,
            special_tokens=["<pad>", "<start>", "<end>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<end>", pad_token="<pad>")
    tokenizer.chat_template = (
        "{% for m in messages %}<start>{{ m['role'] }}: {{ m['content'] }}<end>{% endfor %}"
        "{% if add_generation_prompt %}<start>assistant: {% endif %}"
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    out = tmp_path_factory.mktemp("foreign") / "drafter"
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    return out, tokenizer


def test_wsd_stage_across_vocabularies(micro_testbed, foreign_drafter, strong, tmp_path, monkeypatch):
    drafter, drafter_tokenizer = foreign_drafter
    assert drafter_tokenizer.get_vocab() != strong[1].get_vocab()
    seen = []

    def spy(*args, **kwargs):
        seen.extend(weak_to_strong(*args, **kwargs))
        return seen

    monkeypatch.setattr(wsd_decoding, "weak_to_strong", spy)
    out = tmp_path / "wsd.jsonl"
    # Random bytes take more strong tokens than drafter tokens; the budget leaves room to continue after them.
    settings = WsdSettings(draft_max_new_tokens=12, max_total_tokens=64, batch_size=4)
    metrics = wsd_stage.wsd(
        str(drafter), str(micro_testbed / "strong"), str(micro_testbed / "eval.jsonl"), out, settings, max_prompts=4
    )
    rows = read_jsonl(out, RESPONSE_FIELDS)
    assert metrics["rows"] == len(rows) == 4 and metrics["mean_draft_tokens"] > 0
    for row, result in zip(rows, seen, strict=True):
        assert row["response"] == result.response and row["response"].startswith(result.kept_text.strip())
