"""Contrastive scores against an independent float64 reference, and the batched KV-cached decoding loop (two
models, one model, one shared-weight LoRA model)."""

import copy
import math

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from cong.config import CdSampleSettings
from cong.decoding.contrastive import CdParams, cd_scores
from cong.decoding.generate import (
    CHECK_EVERY,
    CPU_NUCLEUS_CANDIDATES,
    DecodeParams,
    _pick,
    apply_repetition_penalty,
    decode,
    draws,
    top_p_probs,
)
from cong.decoding.kv_cache import ReservedCache
from cong.decoding.reference import reference_decode
from cong.decoding.shared_lora import load_shared_pair
from cong.errors import CongError

VOCAB, PAD, EOS = 64, 0, 1
NO_EOS = VOCAB + 1  # an id no model can emit: rows run to max_new_tokens
INF = float("-inf")
CD = CdParams.of(CdSampleSettings())


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models gain nothing from threads, and on a busy 2-core machine OpenMP oversubscription is slow.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def reference_scores(expert: np.ndarray, amateur: np.ndarray, alpha: float, top: float) -> np.ndarray:
    """method.md section 1 written out element by element in float64."""
    out = np.full(expert.shape, -np.inf)
    for r in range(expert.shape[0]):
        log_z_e = math.log(sum(math.exp(x) for x in expert[r]))
        log_z_a = math.log(sum(math.exp(x) for x in amateur[r]))
        p_e = [math.exp(x - log_z_e) for x in expert[r]]
        for v in range(expert.shape[1]):
            if p_e[v] >= top * max(p_e):
                out[r, v] = (expert[r, v] - log_z_e) - (1 - alpha) * (amateur[r, v] - log_z_a)
    return out


@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
def test_cd_scores_match_float64_reference(alpha):
    gen = torch.Generator().manual_seed(0)
    expert, amateur = torch.randn(3, 50, generator=gen) * 3, torch.randn(3, 50, generator=gen) * 3
    got = cd_scores(expert, amateur, alpha, CD.relative_top)
    want = torch.from_numpy(reference_scores(expert.double().numpy(), amateur.double().numpy(), alpha, 0.1))
    assert got.dtype == torch.float32 and got.shape == expert.shape
    assert torch.equal(torch.isneginf(got), torch.isneginf(want))
    assert torch.isfinite(want).sum() < want.numel()  # the head really cuts something
    finite = torch.isfinite(want)
    torch.testing.assert_close(got[finite].double(), want[finite], rtol=1e-5, atol=1e-5)


def test_relative_top_edges():
    expert = torch.tensor([[2.0, 2.0, 1.0, -3.0], [0.0, 5.0, 1.0, 4.9]])
    amateur = torch.zeros(2, 4)
    kept = torch.isfinite(cd_scores(expert, amateur, 0.4, relative_top=1.0))
    assert kept.tolist() == [[True, True, False, False], [False, True, False, False]]
    assert torch.isfinite(cd_scores(expert, amateur, 0.4, relative_top=1e-9)).all()


def test_alpha_one_is_expert_log_softmax_on_head():
    gen = torch.Generator().manual_seed(1)
    logits, amateur = torch.randn(2, 30, generator=gen) * 3, torch.randn(2, 30, generator=gen)
    scores = cd_scores(logits, amateur, 1.0, CD.relative_top)
    head = torch.isfinite(scores)
    assert head.any(dim=-1).all() and not head.all()
    assert torch.equal(scores[head], torch.log_softmax(logits, dim=-1)[head])
    # bf16 logits are scored in float32.
    assert cd_scores(logits.bfloat16(), amateur.bfloat16(), 0.4, CD.relative_top).dtype == torch.float32
    # Leading dims are free.
    assert cd_scores(logits.view(2, 1, 30), amateur.view(2, 1, 30), 0.4, CD.relative_top).shape == (2, 1, 30)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha": -0.1, "relative_top": 0.1},
        {"alpha": 1.1, "relative_top": 0.1},
        {"alpha": 0.4, "relative_top": 0.0},
        {"alpha": 0.4, "relative_top": 1.5},
    ],
)
def test_cd_scores_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="alpha|relative_top"):
        cd_scores(torch.zeros(1, 4), torch.zeros(1, 4), **kwargs)


def test_cd_scores_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        cd_scores(torch.zeros(1, 4), torch.zeros(1, 5), 0.4, CD.relative_top)


def released_cd_step(expert, amateur, input_ids, alpha, relative_top, penalty):
    """The released code's CD step written out in float64 numpy, as its patched transformers (4.51) has it:
    `_relative_top_filter`, the mixing line of `_contrastive_decoding`, then `RepetitionPenaltyLogitsProcessor` over
    every id of prompt + response (gather, sign-dependent penalty, scatter)."""

    def log_softmax(x):
        m = x.max(axis=-1, keepdims=True)
        return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))

    scores_normalized = log_softmax(expert)
    baseline_normalized = log_softmax(amateur)
    min_thresh = -np.sort(-scores_normalized, axis=-1)[..., 0]
    probs_thresh = np.minimum(min_thresh, scores_normalized.max(axis=-1) + np.log(relative_top))[..., None]
    baseline_normalized[scores_normalized < probs_thresh] = -1e-3
    scores_normalized[scores_normalized < probs_thresh] = -np.inf
    next_token_logits = scores_normalized - (1 - alpha) * log_softmax(baseline_normalized)
    for row, ids in enumerate(input_ids):
        score = next_token_logits[row, ids]
        next_token_logits[row, ids] = np.where(score < 0, score * penalty, score / penalty)
    return next_token_logits


@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
def test_authors_form_is_the_released_code(alpha):
    """Random logits over a 600-token vocabulary; each row's prompt + response repeats tokens inside V_head and
    outside it. The authors' form, then the engine's repetition penalty, give the released code's scores."""
    gen = torch.Generator().manual_seed(3)
    expert, amateur = torch.randn(4, 600, generator=gen) * 1.5, torch.randn(4, 600, generator=gen) * 3
    head = torch.isfinite(cd_scores(expert, amateur, alpha, CD.relative_top))
    input_ids = []
    for row in range(4):
        inside, outside = head[row].nonzero().squeeze(1), (~head[row]).nonzero().squeeze(1)
        ids = [*inside[:2].tolist(), *outside[:3].tolist(), *inside[:1].tolist(), *outside[:1].tolist()]
        assert len(ids) == 7 and len(set(ids)) == 5  # repeated ids, inside and outside the head
        input_ids.append(ids)
    seen = torch.zeros_like(head)
    for row, ids in enumerate(input_ids):
        seen[row, ids] = True
    cd = CdParams(alpha=alpha, relative_top=0.1, score_form="authors")
    got = apply_repetition_penalty(cd.scores(expert, amateur), seen, 1.2)
    want = torch.from_numpy(
        released_cd_step(expert.double().numpy(), amateur.double().numpy(), input_ids, alpha, 0.1, 1.2)
    )
    assert torch.equal(torch.isneginf(got), torch.isneginf(want)) and torch.equal(torch.isfinite(got), head)
    torch.testing.assert_close(got[head].double(), want[head], rtol=1e-5, atol=1e-4)
    # Before the penalty, the released scores are F plus one constant per row: (1 - alpha) times the log of the
    # amateur's head probabilities plus e^-0.001 for each of the other tokens, about (1 - alpha) * log|V|.
    shift = cd.scores(expert, amateur) - cd_scores(expert, amateur, alpha, CD.relative_top)
    p_amateur = torch.softmax(amateur.double(), dim=-1)
    for row in range(4):
        on_head = shift[row][head[row]]
        outside = (~head[row]).sum().item()
        constant = (1 - alpha) * math.log(p_amateur[row][head[row]].sum().item() + outside * math.exp(-1e-3))
        torch.testing.assert_close(on_head.double(), torch.full_like(on_head.double(), constant), rtol=0, atol=1e-4)
        assert constant == pytest.approx((1 - alpha) * math.log(600), abs=0.2)


def test_the_forms_differ_where_the_penalty_meets_a_repeated_token():
    """Token 0 leads token 1 by 0.1 in F and has been said before. Under the spec form its score is near 0 and the
    penalty costs it little: it stays first. Under the authors' form every head score is about 2.7 higher, the
    penalty takes a sixth of that, and token 1 overtakes it."""
    expert = torch.tensor([[3.0, 2.9, 0.0, -1.0] + [-5.0] * 96])
    amateur = torch.tensor([[1.5, 1.5, 0.0, 0.0] + [-5.0] * 96])
    seen = torch.zeros(1, 100, dtype=torch.bool)
    seen[0, 0] = True
    for form, first in (("spec", 0), ("authors", 1)):
        scores = CdParams(0.4, 0.1, form).scores(expert, amateur)
        assert scores.argmax().item() == 0
        assert apply_repetition_penalty(scores, seen, 1.2).argmax().item() == first, form


def test_repetition_penalty():
    scores = torch.tensor([[-2.0, 3.0, INF, 1.0, -1.0]])
    seen = torch.tensor([[True, True, True, False, False]])
    want = torch.tensor([[-2.4, 2.5, INF, 1.0, -1.0]])
    torch.testing.assert_close(apply_repetition_penalty(scores, seen, 1.2), want)
    assert apply_repetition_penalty(scores, seen, 1.0) is scores


def test_top_p():
    probs = top_p_probs(torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])), 1.0, 0.7)
    assert (probs > 0).tolist() == [[True, True, False, False]]
    torch.testing.assert_close(probs[0, :2], torch.tensor([0.5, 0.3]))
    # Reaching top_p exactly stops the nucleus; a tiny top_p still keeps the top token.
    assert (top_p_probs(torch.log(torch.tensor([[0.5, 0.5]])), 1.0, 0.5) > 0).tolist() == [[True, False]]
    assert (top_p_probs(torch.tensor([[0.0, 5.0]]), 1.0, 0.01) > 0).tolist() == [[False, True]]
    assert (top_p_probs(torch.tensor([[0.0, 5.0, INF]]), 1.0, 1.0) > 0).tolist() == [[True, True, False]]


def test_decode_params_validation():
    for bad in ({"temperature": 0.0}, {"top_p": 0.0}, {"top_p": 1.1}, {"max_new_tokens": -1}):
        with pytest.raises(ValueError):
            DecodeParams(**bad)


def tiny_model(seed: int) -> LlamaForCausalLM:
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


PROMPTS = [[(7 * i + 5 * j) % (VOCAB - 3) + 3 for j in range(n)] for i, n in enumerate((3, 12, 5, 8, 4, 10))]


def _run(expert, amateur, batch_size, params, eos=EOS, seeds=None, prompts=PROMPTS, cd=CD, **kw):
    contrastive = amateur is not None or kw.get("shared", False)
    return decode(
        expert,
        prompts,
        params,
        eos_token_ids=[eos],
        pad_token_id=PAD,
        amateur=amateur,
        batch_size=batch_size,
        seeds=seeds,
        cd=cd if contrastive else None,
        **kw,
    )


@pytest.mark.parametrize("contrastive", [True, False])
def test_batched_greedy_equals_one_at_a_time(pair, contrastive):
    expert, amateur = pair[0], pair[1] if contrastive else None
    params = DecodeParams(max_new_tokens=16, greedy=True, repetition_penalty=1.2)
    free = _run(expert, amateur, 1, params, eos=NO_EOS)
    # As eos, a token that the shortest prompt's row emits at its third step, so rows stop at different steps.
    eos = free[0][2]
    single = _run(expert, amateur, 1, params, eos=eos)
    assert eos not in sum(single, [])
    assert min(len(s) for s in single) < 16 and max(len(s) for s in single) == 16
    calls = []
    for batch_size in (4, 6):  # two padded batches; one batch holding every row
        batched = _run(expert, amateur, batch_size, params, eos=eos, on_batch=lambda *a: calls.append(a))
        assert batched == single, batch_size
    assert calls == [(4, 6), (6, 6), (6, 6)]


def test_left_padding_positions_with_absolute_position_embeddings():
    # RoPE only sees relative positions, so Llama would not notice pad-shifted position ids; GPT-2 does.
    torch.manual_seed(3)
    config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=256)
    gpt2 = GPT2LMHeadModel(config).eval()
    params = DecodeParams(max_new_tokens=8, greedy=True)
    assert _run(gpt2, None, 6, params, eos=NO_EOS) == _run(gpt2, None, 1, params, eos=NO_EOS)


def test_contrastive_differs_from_plain(pair):
    params = DecodeParams(max_new_tokens=8, greedy=True)
    assert _run(pair[0], pair[1], 6, params, eos=NO_EOS) != _run(pair[0], None, 6, params, eos=NO_EOS)


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
        expert,
        [PROMPTS[1]],
        DecodeParams(max_new_tokens=12, greedy=True),
        eos_token_ids=[NO_EOS],
        pad_token_id=PAD,
    )
    assert got == [want]


def test_sampling_depends_on_seed_not_batch(pair):
    expert, amateur = pair
    params = DecodeParams(max_new_tokens=8, temperature=1.0, top_p=0.95, repetition_penalty=1.2)
    seeds = [11, 12, 13, 14, 15, 16]
    alone = _run(expert, amateur, 1, params, eos=NO_EOS, seeds=seeds)
    batched = _run(expert, amateur, 4, params, eos=NO_EOS, seeds=seeds)
    assert alone == batched
    # The same prompt and seed inside a different batch (other neighbours, other position).
    moved = _run(expert, amateur, 4, params, eos=NO_EOS, seeds=seeds[::-1], prompts=PROMPTS[::-1])
    assert moved == batched[::-1]
    other = _run(expert, amateur, 4, params, eos=NO_EOS, seeds=[s + 100 for s in seeds])
    assert other != batched
    assert all(len(o) == 8 for o in batched)


def test_each_step_feeds_one_token_to_both_caches(pair):
    expert, amateur = pair
    calls = {"expert": [], "amateur": []}

    def recorder(name):
        def hook(module, args, kwargs):
            cache = kwargs["past_key_values"]
            calls[name].append((kwargs["input_ids"].shape, 0 if cache is None else cache.get_seq_length()))

        return hook

    hooks = [
        model.register_forward_pre_hook(recorder(name), with_kwargs=True)
        for name, model in (("expert", expert), ("amateur", amateur))
    ]
    try:
        prompts = PROMPTS[:3]
        _run(expert, amateur, 3, DecodeParams(max_new_tokens=6, greedy=True), eos=NO_EOS, prompts=prompts)
    finally:
        for h in hooks:
            h.remove()
    width = max(len(p) for p in prompts)
    for name, seen in calls.items():
        assert seen[0] == ((3, width), 0), name  # the prefill, with an empty cache
        # Then one token per row per step, on top of a cache that grows by one each step.
        assert seen[1:] == [((3, 1), width + k) for k in range(5)], name


def test_reserved_cache_holds_what_a_concatenating_cache_holds(pair):
    """The engine's KV cache writes each step into reserved room; the logits are bit for bit those of
    transformers' DynamicCache, which concatenates, through the prefill, growths of the room and rows leaving."""
    from transformers import DynamicCache

    model = pair[0]
    ids = torch.tensor([p[:3] for p in PROMPTS[:4]])
    caches = [DynamicCache(), ReservedCache(model.config, reserve=2)]
    with torch.inference_mode():
        for step in range(7):
            if step == 3:
                for cache in caches:
                    cache.batch_select_indices(torch.tensor([0, 2]))
                ids = ids[[0, 2]]
            logits = [model(input_ids=ids, past_key_values=c, use_cache=True).logits for c in caches]
            assert torch.equal(*logits), step
            ids = logits[0][:, -1:].argmax(dim=-1)
    (layer, *_), length = caches[1].layers, caches[1].get_seq_length()
    assert length == 3 + 6 == caches[0].get_seq_length()
    assert layer.keys.shape[-2] == length < layer.key_room.shape[-2], "keys are a view of a larger buffer"


def test_decoding_through_growths_of_the_cache_room(pair, monkeypatch):
    """Room for one position ahead: the engine's caches grow at every other step, and the tokens stay the
    reference's."""
    monkeypatch.setattr("cong.decoding.generate.KV_RESERVE", 1)
    expert, amateur = pair
    params = DecodeParams(max_new_tokens=10, greedy=True)
    reference = [reference_decode(expert, amateur, p, params, [NO_EOS], i, CD) for i, p in enumerate(PROMPTS)]
    rooms = []

    def room(module, args, kwargs):
        layer = kwargs["past_key_values"].layers[0]
        if layer.is_initialized:
            rooms.append(layer.key_room.shape[-2])

    hook = expert.register_forward_pre_hook(room, with_kwargs=True)
    try:
        assert _run(expert, amateur, 4, params, eos=NO_EOS) == reference
    finally:
        hook.remove()
    # Two batches of 9 steps after the prefill; each batch's room grew from its prefill's width + 1.
    assert len(rooms) == 2 * 9 and len(set(rooms)) > 4


def test_empty_inputs(pair):
    assert _run(pair[0], pair[1], 4, DecodeParams(max_new_tokens=0), prompts=[[3], [4, 5]]) == [[], []]
    assert _run(pair[0], pair[1], 4, DecodeParams(max_new_tokens=4), prompts=[]) == []
    with pytest.raises(ValueError, match="alpha"):
        CdParams(2.0, 0.1, "spec")
    with pytest.raises(ValueError, match="score_form"):
        CdParams(0.4, 0.1, "paper")
    with pytest.raises(ValueError, match="needs CdParams"):
        _run(pair[0], pair[1], 4, DecodeParams(max_new_tokens=4), cd=None)
    with pytest.raises(ValueError, match="seeds"):
        _run(pair[0], None, 4, DecodeParams(max_new_tokens=4), seeds=[1])


def _batch_sizes(model, run) -> list[int]:
    """The batch size of every forward `model` makes while `run()` decodes."""
    sizes = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: sizes.append(kw["input_ids"].shape[0]), with_kwargs=True)
    try:
        run()
    finally:
        hook.remove()
    return sizes


def test_finished_rows_leave_the_batch(pair):
    """Rows that have emitted eos are dropped at the next look (every CHECK_EVERY steps); the others decode on
    unchanged."""
    expert, amateur = pair
    params = DecodeParams(max_new_tokens=24, greedy=True)
    eos = _run(expert, amateur, 1, params, eos=NO_EOS)[0][2]  # the shortest prompt's row stops at its third step
    single = _run(expert, amateur, 1, params, eos=eos)
    assert sum(len(s) < CHECK_EVERY for s in single) >= 1 and max(len(s) for s in single) == 24
    sizes = _batch_sizes(expert, lambda: _run(expert, amateur, 6, params, eos=eos))
    assert _run(expert, amateur, 6, params, eos=eos) == single
    # Forward 0 is the prefill, forward k + 1 feeds step k's token. The look after step CHECK_EVERY - 1 keeps the
    # rows that have not emitted eos in steps 0 .. CHECK_EVERY - 1.
    assert sizes[:CHECK_EVERY] == [6] * CHECK_EVERY
    assert sizes[CHECK_EVERY] == sum(len(s) >= CHECK_EVERY for s in single) < 6
    assert sizes == sorted(sizes, reverse=True)


@pytest.fixture(scope="module")
def adapted(pair, tmp_path_factory):
    """pair[1] saved as a base model, a random LoRA adapter on it (every linear layer), and the two merged."""
    from peft import LoraConfig, get_peft_model

    folder = tmp_path_factory.mktemp("shared")
    base = pair[1]
    base.save_pretrained(folder / "base")
    torch.manual_seed(4)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    lora = get_peft_model(copy.deepcopy(base), config)
    lora.save_pretrained(folder / "adapter")
    adapter_numel = sum(p.numel() for name, p in lora.named_parameters() if "lora_" in name)
    return folder, lora.merge_and_unload().eval(), adapter_numel


def test_shared_lora_decodes_as_two_models(pair, adapted):
    """One copy of the base weights, the adapter on the expert's rows only, gives the tokens of two separate
    models (the merged expert and the base) and of the one-prompt-at-a-time reference, greedy and sampled."""
    folder, merged, adapter_numel = adapted
    base = pair[1]
    shared = load_shared_pair(str(folder / "base"), str(folder / "adapter"))
    # One copy of the base weights and the adapter's, where two models hold two copies.
    assert sum(p.numel() for p in shared.parameters()) == sum(p.numel() for p in base.parameters()) + adapter_numel
    # Layers that read the same input share one down-projection product; the others have their own.
    layer = shared.model.layers[0]
    attention, mlp = layer.self_attn, layer.mlp
    assert attention.q_proj.down is attention.k_proj.down is attention.v_proj.down is not attention.o_proj.down
    assert mlp.gate_proj.down is mlp.up_proj.down is not mlp.down_proj.down
    greedy = DecodeParams(max_new_tokens=16, greedy=True, repetition_penalty=1.2)
    two = _run(merged, base, 1, greedy, eos=NO_EOS)
    eos = two[0][2]
    two = _run(merged, base, 1, greedy, eos=eos)
    assert two == [reference_decode(merged, base, p, greedy, [eos], 0, CD) for p in PROMPTS]
    assert two != _run(base, base, 1, greedy, eos=eos), "the adapter changes the expert"
    for batch_size in (1, 4):
        assert _run(shared, None, batch_size, greedy, eos=eos, shared=True) == two, batch_size
    sampled = DecodeParams(max_new_tokens=12, temperature=1.0, top_p=0.9)
    seeds = [21, 22, 23, 24, 25, 26]
    assert _run(shared, None, 4, sampled, eos=eos, seeds=seeds, shared=True) == _run(
        merged, base, 4, sampled, eos=eos, seeds=seeds
    )


def test_shared_lora_rejects_what_is_not_plain_lora(pair, tmp_path):
    from peft import LoraConfig, get_peft_model

    pair[1].save_pretrained(tmp_path / "base")
    dora = get_peft_model(copy.deepcopy(pair[1]), LoraConfig(r=4, target_modules=["q_proj"], use_dora=True))
    dora.save_pretrained(tmp_path / "dora")
    with pytest.raises(CongError, match="not plain LoRA on linear layers at .*q_proj"):
        load_shared_pair(str(tmp_path / "base"), str(tmp_path / "dora"))
    with pytest.raises(ValueError, match="pass no amateur"):
        _run(pair[0], pair[1], 4, DecodeParams(max_new_tokens=4), shared=True)


def test_inverse_cdf_pick_draws_from_the_nucleus_in_proportion():
    """Sampling by one vectorised inverse-CDF search: frequencies follow the nucleus probabilities, a token outside
    it is never drawn, and u = 1 (the edge of (0, 1]) lands on the last token that has probability."""
    scores = torch.log(torch.tensor([[0.5, 0.0, 0.3, 0.15, 0.05]]))
    params = DecodeParams(temperature=1.0, top_p=0.9)  # the nucleus: tokens 0, 2 and 3 (0.5 + 0.3 + 0.15 >= 0.9)
    uniforms = draws([7], 20000, torch.device("cpu"))[0]
    picks = torch.stack([_pick(scores, params, u[None]) for u in uniforms[:4000]])
    counts = torch.bincount(picks.flatten(), minlength=5).float() / 4000
    assert counts[1] == 0 and counts[4] == 0
    assert torch.allclose(counts[[0, 2, 3]], torch.tensor([0.5, 0.3, 0.15]) / 0.95, atol=0.03)
    assert _pick(scores, params, torch.ones(1)).item() == 3
    assert 0 < uniforms.min() and uniforms.max() <= 1
    assert torch.equal(draws([7, 8], 5, torch.device("cpu"))[0], uniforms[:5]), "a row's draws depend on its seed only"


def test_top_p_ranks_the_whole_vocabulary_when_a_nucleus_reaches_past_the_candidates():
    """On a CPU the nucleus is first sought among the top CPU_NUCLEUS_CANDIDATES tokens: a flat row (nucleus of
    hundreds of tokens) and a peaked row in one batch give what a full sort gives."""
    torch.manual_seed(5)
    flat = torch.randn(1, 600) * 0.01
    peaked = torch.randn(1, 600) * 8
    for scores in (torch.cat([flat, peaked]), peaked):
        probs = top_p_probs(scores, 1.0, 0.9)
        full = torch.softmax(scores, dim=-1)
        ranked, order = full.sort(dim=-1, descending=True)
        want = torch.zeros_like(full).scatter(-1, order, ranked.masked_fill(ranked.cumsum(-1) - ranked >= 0.9, 0))
        torch.testing.assert_close(probs, want, rtol=0, atol=0)
    assert (top_p_probs(torch.cat([flat, peaked]), 1.0, 0.9)[0] > 0).sum() > CPU_NUCLEUS_CANDIDATES
