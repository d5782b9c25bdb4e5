"""A pairwise LLM judge behind an OpenAI-compatible chat-completions endpoint (an in-cluster vLLM server, any
such server, or `cong serve`): which of two responses to a prompt is better.

Each pair is asked in both orders, the method's response first and then the base's first, and the verdicts are
averaged, so that a judge that favours a position cancels out: a prompt's preference is 1 (both orders pick the
method), 0.5 (the orders disagree, or a verdict could not be read) or 0. The endpoint and the API key come from
the environment (on a cluster, from a Secret), never from the config.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from cong.errors import CongError
from cong.progress import log

STAGE = "judge"

SYSTEM = (
    "You are a careful judge of answers to user requests. Compare two answers to the same request and decide "
    "which one is more helpful, correct and clear. Reply with one letter: A or B."
)
TEMPLATE = "Request:\n{prompt}\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}\n\nWhich answer is better? Reply A or B."
VERDICT = re.compile(r"\b([AB])\b")


@dataclass
class Verdicts:
    """Per prompt, the probability that the first response set beats the second; and how many verdicts (two per
    prompt) could not be read."""

    preferences: list[float]
    unreadable: int


class PairwiseJudge:
    def __init__(
        self, endpoint: str, model: str, api_key: str | None = None, max_tokens: int = 4, timeout: float = 300
    ):
        self.url = endpoint.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.max_tokens, self.timeout = model, api_key, max_tokens, timeout

    @classmethod
    def from_env(cls, model: str, endpoint_env: str, api_key_env: str, max_tokens: int = 4) -> PairwiseJudge:
        endpoint = os.environ.get(endpoint_env)
        if not endpoint:
            raise CongError(
                f"the judge's endpoint is not set: put its base URL (e.g. http://judge:8000/v1) in the environment "
                f"variable {endpoint_env}, or remove stages.evaluate.judge."
            )
        return cls(endpoint, model, os.environ.get(api_key_env) or None, max_tokens)

    def verdict(self, prompt: str, a: str, b: str) -> str | None:
        """ "A", "B", or None when the reply names neither (or both)."""
        import requests

        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": TEMPLATE.format(prompt=prompt, a=a, b=b)},
            ],
            "max_tokens": self.max_tokens,
            "temperature": 0,
        }
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            reply = requests.post(self.url, json=body, headers=headers, timeout=self.timeout)
        except requests.RequestException as e:
            raise CongError(f"the judge at {self.url} did not answer: {e}") from None
        if reply.status_code != 200:
            raise CongError(f"the judge at {self.url} answered {reply.status_code}: {reply.text[:300]}")
        # The first letter standing alone is the verdict ("A", "A:", "Answer B is better").
        found = VERDICT.search(reply.json()["choices"][0]["message"]["content"] or "")
        return found.group(1) if found else None

    def compare(self, prompts: list[str], first: list[str], second: list[str]) -> Verdicts:
        """P(first beats second) per prompt, from both orders."""
        preferences, unreadable = [], 0
        for i, (prompt, x, y) in enumerate(zip(prompts, first, second, strict=True)):
            forward, backward = self.verdict(prompt, x, y), self.verdict(prompt, y, x)
            unreadable += (forward is None) + (backward is None)
            votes = [1.0 if forward == "A" else 0.0 if forward == "B" else 0.5]
            votes.append(1.0 if backward == "B" else 0.0 if backward == "A" else 0.5)
            preferences.append(sum(votes) / 2)
            if (i + 1) % 16 == 0:
                log(STAGE, f"{i + 1}/{len(prompts)} pairs judged")
        return Verdicts(preferences, unreadable)
