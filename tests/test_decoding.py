"""Contrastive scores against an independent float64 reference, and the batched KV-cached decoding loop."""

import math

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from cong.decoding.contrastive import cd_scores
from cong.decoding.generate import DecodeParams, apply_repetition_penalty, decode, top_p_probs

VOCAB, PAD, EOS = 64, 0, 1


def reference_scores(expert, amateur, alpha, relative_top):
    """method.md section 1 written out element by element in float64."""
    out = np.full(expert.shape, -np.inf)
    for r in range(expert.shape[0]):
        log_z_e = math.log(sum(math.exp(x) for x in expert[r]))
        log_z_a = math.log(sum(math.exp(x) for x in amateur[r]))
        p_e = [math.exp(x - log_z_e) for x in expert[r]]
        for v in range(expert.shape[1]):
            if p_e[v] >= relative_top * max(p_e):
                out[r, v] = (expert[r, v] - log_z_e) - (1 - alpha) * (amateur[r, v] - log_z_a)
    return out


@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
def test_cd_scores_match_float64_reference(alpha):
    gen = torch.Generator().manual_seed(0)
    expert, amateur = torch.randn(3, 50, generator=gen) * 3, torch.randn(3, 50, generator=gen) * 3
    got = cd_scores(expert, amateur, alpha)
    want = torch.from_numpy(reference_scores(expert.double().numpy(), amateur.double().numpy(), alpha, 0.1))
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    finite = torch.isfinite(want)
    torch.testing.assert_close(got[finite].double(), want[finite], rtol=1e-5, atol=1e-5)
    assert got.dtype == torch.float32 and got.shape == expert.shape


def test_relative_top_edges():
    expert = torch.tensor([[2.0, 2.0, 1.0, -3.0]])
    amateur = torch.zeros(1, 4)
    kept = torch.isfinite(cd_scores(expert, amateur, 0.4, relative_top=1.0))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(cd_scores(expert, amateur, 0.4, relative_top=1e-9)).all()
    logits = torch.randn(2, 30)
    alpha_one = cd_scores(logits, torch.randn(2, 30), 1.0)
    head = torch.isfinite(alpha_one)
    assert head.any(dim=-1).all()
    torch.testing.assert_close(alpha_one[head], torch.log_softmax(logits, dim=-1)[head])
    bf16 = cd_scores(logits.bfloat16(), logits.bfloat16(), 0.4)
    assert bf16.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs",
    [{"alpha": -0.1}, {"alpha": 1.1}, {"alpha": 0.4, "relative_top": 0.0}, {"alpha": 0.4, "relative_top": 1.5}],
)
def test_cd_scores_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        cd_scores(torch.zeros(1, 4), torch.zeros(1, 4), **kwargs)
    with pytest.raises(ValueError, match="shape"):
        cd_scores(torch.zeros(1, 4), torch.zeros(1, 5), 0.4)


def test_repetition_penalty_and_top_p():
    scores = torch.tensor([[-2.0, 3.0, float("-inf"), 1.0]])
    seen = torch.tensor([[True, True, True, False]])
    want = torch.tensor([[-2.4, 2.5, float("-inf"), 1.0]])
    torch.testing.assert_close(apply_repetition_penalty(scores, seen, 1.2), want)
    probs = top_p_probs(torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])), 1.0, 0.7)
    assert (probs > 0).tolist() == [[True, True, False, False]]
    assert (top_p_probs(torch.tensor([[5.0, 0.0]]), 1.0, 0.01) > 0).tolist() == [[True, False]]


def tiny_model(seed):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def pair():
    return tiny_model(1), tiny_model(2)


PROMPTS = [list(range(3, 3 + n)) for n in (3, 12, 5, 8, 4, 10)]


def _run(expert, amateur, batch_size, params, eos=EOS, seeds=None):
    return decode(
        expert,
        PROMPTS,
        params,
        eos_token_ids=[eos],
        pad_token_id=PAD,
        amateur=amateur,
        batch_size=batch_size,
        seeds=seeds,
    )


@pytest.mark.parametrize("contrastive", [True, False])
def test_batched_greedy_equals_one_at_a_time(pair, contrastive):
    expert, amateur = pair[0], pair[1] if contrastive else None
    params = DecodeParams(max_new_tokens=16, greedy=True, repetition_penalty=1.2)
    single = _run(expert, amateur, 1, params)
    # Use as eos a token that one row emits early, so that rows stop at different steps.
    eos = single[0][2]
    single = _run(expert, amateur, 1, params, eos=eos)
    batched = _run(expert, amateur, 4, params, eos=eos)
    assert batched == single
    assert min(len(s) for s in single) < 16 and max(len(s) for s in single) == 16


def test_plain_greedy_matches_transformers_generate(pair):
    expert = pair[0]
    prompt = torch.tensor([PROMPTS[1]])
    want = expert.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=12,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=PAD,
    )[0, prompt.shape[1] :].tolist()
    got = decode(
        expert, [PROMPTS[1]], DecodeParams(max_new_tokens=12, greedy=True), eos_token_ids=[VOCAB + 1], pad_token_id=PAD
    )
    assert got == [want]


def test_sampling_depends_on_seed_not_batch(pair):
    expert, amateur = pair
    params = DecodeParams(max_new_tokens=8, temperature=1.0, top_p=0.95, repetition_penalty=1.2)
    seeds = [11, 12, 13, 14, 15, 16]
    alone = _run(expert, amateur, 1, params, eos=VOCAB + 1, seeds=seeds)
    batched = _run(expert, amateur, 4, params, eos=VOCAB + 1, seeds=seeds)
    assert alone == batched
    other = _run(expert, amateur, 4, params, eos=VOCAB + 1, seeds=[s + 100 for s in seeds])
    assert other != batched


def test_each_step_feeds_one_token_to_both_caches(pair):
    expert, amateur = pair
    widths = {"expert": [], "amateur": []}
    hooks = [
        m.model.embed_tokens.register_forward_hook(lambda mod, inp, out, k=k: widths[k].append(inp[0].shape[1]))
        for k, m in (("expert", expert), ("amateur", amateur))
    ]
    try:
        decode(
            expert,
            PROMPTS[:3],
            DecodeParams(max_new_tokens=6, greedy=True),
            eos_token_ids=[VOCAB + 1],
            pad_token_id=PAD,
            amateur=amateur,
            batch_size=3,
        )
    finally:
        for h in hooks:
            h.remove()
    for k in widths:
        assert widths[k][0] == max(len(p) for p in PROMPTS[:3])
        assert widths[k][1:] == [1] * 5, k
