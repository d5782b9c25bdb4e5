"""evaluate: one row per method on the held-out prompts -> results.json and report.html.

A method row comes from a model (sampled here with the evaluation's seed and settings) or from responses
a decode-time method already wrote for these prompts (WSD). Metrics per method: reward_mean (reward
backend), win_rate_vs_base (share of prompts where the method's response out-scores the base strong
model's; ties count one half), the reward backend's parts (testbed: accuracy and style), implicit_reward
(length-normalised, under the weak pair: (log pi_r(y|x) - log pi_ref(y|x)) / |y|), and length in words.
"""

from __future__ import annotations

import json
from pathlib import Path

from cong.config import METHODS, EvaluateSettings
from cong.data import PROMPT_FIELDS, RESPONSE_FIELDS, read_jsonl, write_jsonl
from cong.errors import CongError
from cong.models import Sampler
from cong.progress import log
from cong.rewards import ImplicitReward, reward_backend
from cong.stats import mean_ci, win_rate

STAGE = "evaluate"


def _joined_responses(path: str, rows: list[dict], method: str) -> list[str]:
    by_id = {r["id"]: r["response"] for r in read_jsonl(path, RESPONSE_FIELDS)}
    missing = [r["id"] for r in rows if r["id"] not in by_id]
    if missing:
        raise CongError(
            f"evaluate: the {method} responses in {path} lack {len(missing)} eval prompts, e.g. {missing[0]!r}."
        )
    return [by_id[r["id"]] for r in rows]


def evaluate(
    models: dict[str, str],
    weak_base: str,
    weak_aligned: str,
    prompts_path: str,
    out_dir: Path,
    settings: EvaluateSettings,
    max_prompts: int | None = None,
    responses_of: dict[str, str] | None = None,
    alpha_sweep_path: str | None = None,
) -> dict:
    """Score every method (a model to sample, or a responses file in `responses_of`), compare with `base`."""
    from cong.report import write_report

    out_dir = Path(out_dir)
    rows = read_jsonl(prompts_path, PROMPT_FIELDS, max_prompts)
    prompts = [r["prompt"] for r in rows]
    sources = {**models, **(responses_of or {})}
    methods = [m for m in METHODS if m in sources]
    backend = reward_backend(settings.reward_backend)
    responses, rewards = {}, {}
    for method in methods:
        if method in models:
            log(STAGE, f"sampling {method} ({models[method]})")
            responses[method] = Sampler(models[method])(rows, settings.sampling, STAGE)
        else:
            responses[method] = _joined_responses(sources[method], rows, method)
        rewards[method] = backend.score(prompts, responses[method])
    base = rewards.get("base")
    implicit = ImplicitReward.load(weak_base, weak_aligned)
    table = {}
    for method in methods:
        mean, ci = mean_ci(rewards[method])
        row = {"reward_mean": mean, "reward_ci95": ci}
        if base is not None:
            row["win_rate_vs_base"], row["win_rate_ci95"] = win_rate(rewards[method], base)
        for name, values in backend.parts(prompts, responses[method]).items():
            row[name] = mean_ci(values)[0]
        row["implicit_reward"] = mean_ci(implicit.score(prompts, responses[method]))[0]
        row["length_words"] = sum(len(y.split()) for y in responses[method]) / len(rows)
        table[method] = {k: v for k, v in row.items() if v == v}  # NaN: the metric does not apply
    results = {
        "methods": table,
        "eval_prompts": len(rows),
        "reward_backend": backend.name,
        "sources": sources,
        "weak_pair": {"base": weak_base, "aligned": weak_aligned},
    }
    if alpha_sweep_path:
        results["alpha_sweep"] = json.loads(Path(alpha_sweep_path).read_text())["points"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_jsonl(
        out_dir / "responses.jsonl",
        ({"id": r["id"], "prompt": r["prompt"], **{m: responses[m][i] for m in methods}} for i, r in enumerate(rows)),
    )
    write_report(results, responses, prompts, out_dir / "report.html")
    return results
