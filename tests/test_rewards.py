"""Reward backends chosen in the config: a Hugging Face sequence-classification reward model built here from a
config (random weights, the testbed's tokenizer and chat template), and the implicit rewards."""

from __future__ import annotations

import json

import pytest

from cong.config import EvaluateSettings, WeakAlignSettings
from cong.data import write_jsonl
from cong.errors import CongError
from cong.evaluation.rewards import ImplicitReward, RewardModel, reward_backend

PROMPTS = ["What is 2 + 3?", "Sort the digits 3 1 2.", "Reverse the letters c a t.", "What is 7 + 1?"]
RESPONSES = ["Sure! The answer is 5. I hope this helps!", "1 2 3", "Ugh, t a c. Obviously.", "8"]


@pytest.fixture(scope="module")
def reward_model(micro_testbed, tmp_path_factory) -> str:
    """A randomly initialised LlamaForSequenceClassification (one output) with the weak model's tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from cong.models import load_plain_tokenizer

    folder = tmp_path_factory.mktemp("reward-model")
    tokenizer = load_plain_tokenizer(str(micro_testbed / "weak"))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_reward_model_scores_chats_in_batches(reward_model):
    """Scores depend on the response, not on the batch a chat lands in (right padding, last real token)."""
    settings = EvaluateSettings(reward_backend="reward_model", reward_model=reward_model, reward_batch_size=3)
    backend = reward_backend(settings)
    assert isinstance(backend, RewardModel) and backend.name == "reward_model"
    batched = backend.score(PROMPTS, RESPONSES)
    backend.batch_size = 1
    assert backend.score(PROMPTS, RESPONSES) == pytest.approx(batched, abs=1e-5)
    assert len(set(batched)) == len(batched), "different chats, different scores"
    assert backend.score(PROMPTS[:1], ["another answer"]) != pytest.approx(batched[:1])
    assert backend.parts(PROMPTS, RESPONSES) == {}


def test_the_evaluate_stage_reports_reward_model_scores(reward_model, micro_testbed, tmp_path):
    """evaluate with reward_backend: reward_model, on responses already written (no sampling)."""
    from cong.stages.evaluate import evaluate

    prompts = [{"id": f"p{i}", "prompt": p} for i, p in enumerate(PROMPTS)]
    write_jsonl(tmp_path / "prompts.jsonl", prompts)
    sources = {}
    for method, responses in (("base", RESPONSES), ("cong", RESPONSES[::-1])):
        sources[method] = str(tmp_path / f"{method}.jsonl")
        rows = ({**p, "response": r, "greedy_response": r} for p, r in zip(prompts, responses, strict=True))
        write_jsonl(sources[method], rows)
    settings = EvaluateSettings(reward_backend="reward_model", reward_model=reward_model)
    weak = str(micro_testbed / "weak")
    prompts_path = str(tmp_path / "prompts.jsonl")
    results = evaluate({}, weak, weak, prompts_path, tmp_path / "eval", settings, responses_of=sources)
    expected = RewardModel(reward_model).score(PROMPTS, RESPONSES)
    base = results["methods"]["base"]
    assert results["reward_backend"] == "reward_model"
    assert base["reward_mean"] == pytest.approx(sum(expected) / len(expected), abs=1e-5)
    assert base["reward_mean_n"] == len(PROMPTS) and "accuracy" not in base
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["methods"]["cong"]["reward_mean_n"] == 4


def test_implicit_backends_sum_or_normalise(micro_testbed):
    weak = str(micro_testbed / "weak")
    per_token = reward_backend(EvaluateSettings(reward_backend="implicit"), (weak, weak))
    summed = reward_backend(EvaluateSettings(reward_backend="implicit_sum"), (weak, weak))
    assert isinstance(per_token, ImplicitReward) and (per_token.name, summed.name) == ("implicit", "implicit_sum")
    assert summed.score(PROMPTS, RESPONSES) == [0.0] * 4, "one model as both halves of the pair"


def test_reward_settings_are_checked():
    with pytest.raises(ValueError, match="reward_model names the reward model"):
        EvaluateSettings(reward_backend="reward_model")
    with pytest.raises(ValueError, match="reward_model names the reward model"):
        EvaluateSettings(reward_model="some/model")
    with pytest.raises(ValueError, match="needs the aligned weak model it makes"):
        WeakAlignSettings(reward_backend="implicit")
    with pytest.raises(CongError, match="needs the aligned weak model"):
        reward_backend(EvaluateSettings(reward_backend="implicit"))
