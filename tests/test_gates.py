"""The gates (cong/evaluation/gates.py): each on a constructed world or weak pair that passes it and one that fails it,
the testbed world's balance, the stop with a message, and the one learning-rate rule of the tiny presets."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import yaml

from cong.config import load_config
from cong.errors import CongError
from cong.evaluation import gates
from cong.testbed import build as testbed_build
from cong.testbed import world


def test_capability_passes_a_strong_lead_and_fails_a_small_one():
    weak = [True] * 10 + [False] * 90
    assert gates.capability(weak, [True] * 40 + [False] * 60).passed  # lead 0.30
    failing = gates.capability(weak, [True] * 30 + [False] * 70)  # lead 0.20
    assert not failing.passed and failing.value == pytest.approx(0.2)


def test_latent_capability_is_the_share_of_the_lead_kept():
    weak, strong = [False] * 100, [True] * 50 + [False] * 50
    kept = gates.latent_capability(weak, strong, [True] * 45 + [False] * 55)
    assert kept.passed and kept.value == pytest.approx(0.9)
    lost = gates.latent_capability(weak, strong, [True] * 30 + [False] * 70)
    assert not lost.passed and lost.value == pytest.approx(0.6)
    assert not gates.latent_capability(weak, weak, weak).passed  # no lead, nothing kept


def test_no_shortcut_passes_the_testbed_worlds_families_and_fails_a_skewed_one():
    rng = random.Random(0)
    balanced = [world.make_example(rng, family) for family in world.FAMILIES for _ in range(3000)]
    triples = [(ex.family, ex.prompt, ex.answer) for ex in balanced]
    passing = gates.no_shortcut(triples, world.ANSWER_COUNTS, world.is_correct)
    assert passing.passed and passing.value < 0.02
    # The old world's counting family: the letter is drawn from the word, so the answer is mostly 1.
    skewed = [("largest", p, a) for p, a in [("Which is the largest of 9 1 2?", "9")] * 60]
    skewed += [("largest", f"Which is the largest of {d} 1 0?", str(d)) for d in range(2, 9) for _ in range(5)]
    failing = gates.no_shortcut(skewed, world.ANSWER_COUNTS, world.is_correct)
    assert not failing.passed and failing.value == pytest.approx(60 / 95 - 1 / 9, abs=1e-6)


def test_a_response_listing_every_candidate_is_not_correct():
    """Whole-word matching alone would let a constant list of every digit score on every digit family."""
    every_digit = " ".join("0123456789")
    assert not world.is_correct("Which is the largest of 3 7 1?", every_digit)
    assert not world.is_correct("Name the smallest digit in 3 8 1.", "1 or 3")
    assert world.is_correct("Which is the largest of 3 7 1?", "Sure! The answer is 7. I hope this helps!")
    assert world.is_correct("Sort the digits 3 1 2.", "Of course! The answer is 1 2 3. Enjoy your day!")


def test_the_tiny_worlds_prompt_sets_are_balanced_and_hold_the_strong_only_share():
    settings = load_config(preset="tiny").testbed
    sets = testbed_build._prompt_sets(settings)
    triples = [(ex.family, ex.prompt, ex.answer) for part in sets for ex in part]
    assert gates.no_shortcut(triples, world.ANSWER_COUNTS, world.is_correct).passed
    for part in sets:
        share = sum(ex.family in world.STRONG_ONLY_FAMILIES for ex in part) / len(part)
        assert share == pytest.approx(settings.strong_only_share, abs=1 / len(part))


def test_weak_signal_needs_a_significant_gain():
    rng = random.Random(0)
    base = [rng.random() for _ in range(200)]
    assert gates.weak_signal([b + 0.1 for b in base], base).passed
    noise = [b + rng.choice([-0.1, 0.1]) for b in base]
    assert not gates.weak_signal(noise, base).passed
    worse = gates.weak_signal([b - 0.1 for b in base], base)
    assert not worse.passed and worse.value == 1.0


def test_spearman_with_ties_and_the_implicit_reward_gate():
    assert gates.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert gates.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Ties take their average rank: ranks (1.5, 1.5, 3, 4) against (1, 2, 3, 4).
    assert gates.spearman([5, 5, 6, 7], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)
    assert gates.spearman([1, 1, 1], [1, 2, 3]) == 0.0
    rng = random.Random(1)
    explicit = [rng.random() for _ in range(300)]
    assert gates.implicit_reward([e + rng.gauss(0, 0.3) for e in explicit], explicit).passed
    assert not gates.implicit_reward([rng.random() for _ in explicit], explicit).passed


def test_mild_shift_measures_the_kl_of_a_constructed_weak_pair(micro_testbed, tmp_path):
    """The same model twice is 0 nats apart; a copy whose output layer is sharpened 20 times is far more, and the
    figure is the mean over response tokens of the full next-token KL, computed here one sequence at a time."""
    import torch
    from transformers import AutoModelForCausalLM

    from cong.evaluation.rewards import ImplicitReward
    from cong.models import prompt_ids

    weak = str(micro_testbed / "weak")
    shifted = tmp_path / "shifted"
    model = AutoModelForCausalLM.from_pretrained(weak)
    with torch.no_grad():
        model.lm_head.weight.mul_(20)  # tied to the embeddings; the logits scale and more
    model.save_pretrained(shifted)
    shutil.copy(micro_testbed / "weak" / "tokenizer.json", shifted)
    shutil.copy(micro_testbed / "weak" / "tokenizer_config.json", shifted)
    shutil.copy(micro_testbed / "weak" / "chat_template.jinja", shifted)
    prompts = ["Which is the largest of 3 7 1?", "Sort the digits 3 1 2."]
    responses = ["Sure! The answer is 7. I hope this helps!", "1 2 3"]

    same = ImplicitReward.load(weak, weak, batch_size=2).mean_token_kl(prompts, responses)
    assert same == 0.0 and gates.mild_shift(same).passed
    pair = ImplicitReward.load(weak, str(shifted), batch_size=2)
    kl = pair.mean_token_kl(prompts, responses)
    assert not gates.mild_shift(kl).passed

    tok = pair.tokenizer
    total, count = 0.0, 0
    for context, response in zip(prompt_ids(tok, prompts), responses, strict=True):
        answer = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = torch.tensor([context + answer])
        with torch.inference_mode():
            p, q = (torch.log_softmax(m(ids).logits[0, :-1].float(), -1) for m in (pair.expert, pair.amateur))
        per_position = (p.exp() * (p - q)).sum(-1)[len(context) - 1 :]
        total, count = total + float(per_position.sum()), count + len(answer)
    assert kl == pytest.approx(total / count, rel=1e-4)


def test_a_failed_gate_stops_with_its_name_and_value_unless_allowed():
    measured = [gates.mild_shift(1.6).as_dict(), gates.capability([False], [True]).as_dict()]
    with pytest.raises(CongError, match=r"mild_shift = 1\.6 \(threshold 0\.5\).*--allow-failed-gates"):
        gates.check(measured, "The weak pair", allowed=False)
    gates.check(measured, "The weak pair", allowed=True)
    gates.check(measured[1:], "The weak pair", allowed=False)


def test_a_local_run_on_a_world_that_fails_a_gate_stops_before_any_stage(micro_config, micro_testbed, tmp_path):
    """The micro world is too small to pass its gates; without --allow-failed-gates the run stops in preflight
    and leaves no run folder."""
    from pipelines.local import run_local

    strict = micro_config.model_copy(update={"allow_failed_gates": False})
    with pytest.raises(CongError, match=r"The testbed world [0-9a-f]{16} fails \d gate\(s\): capability = "):
        run_local(strict, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_tiny_presets_train_by_one_learning_rate_rule():
    """No tiny preset sets a stage's learning rate: each trains at its paper learning rate times one factor."""
    import cong.presets

    presets = Path(cong.presets.__file__).parent
    for name in ("tiny", "tiny-self"):
        text = (presets / f"{name}.yaml").read_text()
        assert "learning_rate:" not in text, name
    cfg = load_config(preset="tiny")
    paper = load_config(preset="qwen2.5-3b-to-7b")
    trained, paper_stages = cfg.training_stages(), paper.training_stages()
    assert cfg.learning_rate_scale == 100 and paper.learning_rate_scale == 1
    for stage in ("weak_align", "dpo", "weak_sft", "auxconf", "wspo", "icl_refine", "wsd"):
        got, want = getattr(trained, stage).train.learning_rate, getattr(paper_stages, stage).train.learning_rate
        assert got == pytest.approx(100 * want), stage
    assert trained.sft_train("cong_s").learning_rate == pytest.approx(1e-3)
    assert trained.weak_align.train.learning_rate == pytest.approx(8e-5)
    assert cfg.stages.dpo.train.learning_rate == pytest.approx(6e-7)  # the stated rate stays the paper's
    assert cfg.stage_settings("dpo")["train"]["learning_rate"] == pytest.approx(6e-5)  # lineage: as trained
    assert yaml.safe_load((presets / "tiny.yaml").read_text())["learning_rate_scale"] == 100


def test_world_gates_read_the_base_models_answers_on_the_strong_only_prompts():
    """capability and latent capability count only the strong-only families; a lead on a weak family is none."""
    rng = random.Random(2)
    eval_set = [world.make_example(rng, family) for family in ("largest", "sort") for _ in range(20)]
    right = ["Sure! The answer is " + ex.answer + ". I hope this helps!" for ex in eval_set]
    wrong = ["Ugh." for _ in eval_set]
    sets = (eval_set, [], [])
    strong_sorts = {"weak": wrong, "strong": wrong[:20] + right[20:], "strong_opened": wrong[:20] + right[20:]}
    measured = {g.name: g for g in testbed_build.world_gates(sets, strong_sorts)}
    assert measured["capability"].value == 1.0 and measured["latent_capability"].value == 1.0
    strong_largest = {"weak": wrong, "strong": right[:20] + wrong[20:], "strong_opened": right[:20] + wrong[20:]}
    measured = {g.name: g for g in testbed_build.world_gates(sets, strong_largest)}
    assert measured["capability"].value == 0.0 and not measured["capability"].passed


def test_the_shipped_tiny_world_passes_every_world_gate():
    """The default world's card: every gate it measured at build passed."""
    settings = load_config(preset="tiny").testbed
    card = testbed_build.SHIPPED_WORLDS / testbed_build.testbed_dir(settings).name / "card.json"
    measured = json.loads(card.read_text())["gates"]
    assert [g["name"] for g in measured] == ["capability", "latent_capability", "no_shortcut"]
    assert all(g["passed"] for g in measured), measured
