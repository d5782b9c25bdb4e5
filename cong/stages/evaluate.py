"""evaluate: one row per method on the held-out prompts -> results.json and report.html.

Metrics per method: reward_mean (reward backend), win_rate_vs_base (share of prompts where the method's
response out-scores the base strong model's; ties count one half), accuracy (testbed prompts: the answer is
right), implicit_reward (length-normalised, under the weak pair: (log pi_r(y|x) - log pi_ref(y|x)) / |y|),
and response length in words.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from cong.config import EvaluateSettings
from cong.data import PROMPT_FIELDS, read_jsonl, write_jsonl
from cong.models import Sampler, load_model, load_tokenizer, prompt_ids
from cong.progress import log
from cong.rewards import reward_backend

STAGE = "evaluate"


class ImplicitReward:
    """Length-normalised implicit reward under the weak pair (method.md section 1):
    (log pi_r(y|x) - log pi_ref(y|x)) / |y|, with the eos token counted as part of y."""

    def __init__(self, weak_base: str, weak_aligned: str):
        self.tokenizer = load_tokenizer(weak_aligned)
        self.expert, self.amateur = load_model(weak_aligned), load_model(weak_base)

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        import torch

        scores = []
        with torch.inference_mode():
            for context, response in zip(prompt_ids(self.tokenizer, prompts), responses, strict=True):
                answer = self.tokenizer(response, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
                ids = torch.tensor([context + answer], device=self.expert.device)
                span = slice(len(context) - 1, ids.shape[1] - 1)
                targets = ids[0, len(context) :, None]
                total = 0.0
                for model, sign in ((self.expert, 1.0), (self.amateur, -1.0)):
                    logp = torch.log_softmax(model(ids).logits[0, span].float(), dim=-1)
                    total += sign * logp.gather(-1, targets).sum().item()
                scores.append(total / len(answer))
        return scores


def _mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of a normal 95% interval."""
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / max(n - 1, 1)
    return mean, 1.96 * math.sqrt(var / n)


def evaluate(
    models: dict[str, str],
    weak_base: str,
    weak_aligned: str,
    prompts_path: str,
    out_dir: Path,
    settings: EvaluateSettings,
    max_prompts: int | None = None,
) -> dict:
    """Sample every method's model on the eval prompts, score, compare with `base`, write the results."""
    from cong.report import write_report
    from cong.testbed.world import is_correct, solve

    out_dir = Path(out_dir)
    rows = read_jsonl(prompts_path, PROMPT_FIELDS, max_prompts)
    prompts = [r["prompt"] for r in rows]
    backend = reward_backend(settings.reward_backend)
    responses, rewards = {}, {}
    for method, ref in models.items():
        log(STAGE, f"sampling {method} ({ref})")
        responses[method] = Sampler(ref)(rows, settings.sampling, STAGE)
        rewards[method] = backend.score(prompts, responses[method])
    base = rewards.get("base")
    testbed_rows = [i for i, p in enumerate(prompts) if solve(p) is not None]
    implicit = ImplicitReward(weak_base, weak_aligned)
    table = {}
    for method in models:
        mean, ci = _mean_ci(rewards[method])
        row = {"reward_mean": mean, "reward_ci95": ci}
        if base is not None:
            wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(rewards[method], base, strict=True)]
            row["win_rate_vs_base"], row["win_rate_ci95"] = _mean_ci(wins)
        if testbed_rows:
            row["accuracy"] = sum(is_correct(prompts[i], responses[method][i]) for i in testbed_rows) / len(
                testbed_rows
            )
        row["implicit_reward"] = sum(implicit.score(prompts, responses[method])) / len(rows)
        row["length_words"] = sum(len(y.split()) for y in responses[method]) / len(rows)
        table[method] = row
    results = {
        "methods": table,
        "eval_prompts": len(rows),
        "reward_backend": backend.name,
        "models": models,
        "weak_pair": {"base": weak_base, "aligned": weak_aligned},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_jsonl(
        out_dir / "responses.jsonl",
        ({"id": r["id"], "prompt": r["prompt"], **{m: responses[m][i] for m in models}} for i, r in enumerate(rows)),
    )
    write_report(results, responses, prompts, out_dir / "report.html")
    return results
