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

    def __init__(self, weak_base: str, weak_aligned: str, batch_size: int = 8):
        self.tokenizer = load_tokenizer(weak_aligned)
        self.expert, self.amateur = load_model(weak_aligned), load_model(weak_base)
        self.batch_size = batch_size

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        import torch

        contexts = prompt_ids(self.tokenizer, prompts)
        eos = self.tokenizer.eos_token_id
        answers = [self.tokenizer(r, add_special_tokens=False)["input_ids"] + [eos] for r in responses]
        scores: list[float] = []
        for start in range(0, len(answers), self.batch_size):
            batch = list(
                zip(contexts[start : start + self.batch_size], answers[start : start + self.batch_size], strict=True)
            )
            width = max(len(c) + len(a) for c, a in batch)
            # Right padding: positions count from 0 in every row, and padding sits after each answer.
            ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            scored = torch.zeros((len(batch), width - 1), dtype=torch.bool)  # position t predicts token t+1
            for i, (context, answer) in enumerate(batch):
                ids[i, : len(context) + len(answer)] = torch.tensor(context + answer)
                mask[i, : len(context) + len(answer)] = 1
                scored[i, len(context) - 1 : len(context) + len(answer) - 1] = True
            total = torch.zeros(len(batch))
            with torch.inference_mode():
                for model, sign in ((self.expert, 1.0), (self.amateur, -1.0)):
                    logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
                    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).cpu()
                    token_logp = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
                    total += sign * (token_logp * scored).sum(dim=-1)
            scores += (total / torch.tensor([len(a) for _, a in batch])).tolist()
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
