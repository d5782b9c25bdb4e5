"""evaluate: one row per method on the held-out prompts -> results.json and report.html.

A method row comes from a model (sampled here with the evaluation's seed and settings) or from responses
a decode-time method already wrote for these prompts (WSD). Metrics per method: reward_mean (reward
backend), win_rate_vs_base (share of prompts where the method's response out-scores the base strong
model's; ties count one half), the reward backend's parts (testbed: accuracy and style), implicit_reward
(length-normalised, under the weak pair: (log pi_r(y|x) - log pi_ref(y|x)) / |y|), and length in words;
with a judge configured, the judge's win rate and the length-controlled one (cong.judge); with downstream
tasks, each model's exact-match accuracy on them and its change from the base's (cong.downstream). Each comes
with a 95% bootstrap interval and its number of prompts (cong.stats.Estimate.fields); `paired_tests` compares
ConG's rewards with every other row's, prompt by prompt.
"""

from __future__ import annotations

import json
from pathlib import Path

from cong.config import METHODS, DownstreamTask, EvaluateSettings, WsdSettings
from cong.data import PROMPT_FIELDS, RESPONSE_FIELDS, read_jsonl, write_jsonl
from cong.downstream import correct, lm_eval_scores, task_rows, wsd_correct
from cong.errors import CongError
from cong.judge import PairwiseJudge
from cong.models import TRAINING_LOG, Sampler
from cong.progress import log
from cong.rewards import ImplicitReward, reward_backend
from cong.stats import bootstrap_mean, length_controlled_win_rate, paired_test, win_rate

STAGE = "evaluate"


def _joined_responses(path: str, rows: list[dict], method: str) -> list[str]:
    by_id = {r["id"]: r["response"] for r in read_jsonl(path, RESPONSE_FIELDS)}
    missing = [r["id"] for r in rows if r["id"] not in by_id]
    if missing:
        raise CongError(
            f"evaluate: the {method} responses in {path} lack {len(missing)} eval prompts, e.g. {missing[0]!r}."
        )
    return [by_id[r["id"]] for r in rows]


def _judged(judge: PairwiseJudge, prompts: list[str], method: str, responses: dict, words: dict) -> dict:
    """The judge's win rate against the base (both orders asked) and AlpacaEval 2's length-controlled one; the
    base against itself is 0.5 by definition and is not asked."""
    if method == "base":
        return {"lc_win_rate_vs_base": 0.5}
    log(STAGE, f"judging {method} against base on {len(prompts)} prompts, both orders")
    verdicts = judge.compare(prompts, responses[method], responses["base"])
    return bootstrap_mean(verdicts.preferences).fields("judge_win_rate_vs_base") | {
        "lc_win_rate_vs_base": length_controlled_win_rate(verdicts.preferences, words[method], words["base"]),
        "judge_unreadable": verdicts.unreadable,
    }


def _downstream(solved: dict[str, list[float]], base: dict[str, list[float]] | None) -> dict[str, float | int]:
    """Accuracy on each task and on all pooled (`downstream_accuracy`), and the change from the base's."""
    row = bootstrap_mean([x for scores in solved.values() for x in scores]).fields("downstream_accuracy")
    for name, scores in solved.items():
        row |= bootstrap_mean(scores).fields(f"downstream_{name}")
        if base is not None:
            row[f"downstream_{name}_vs_base"] = row[f"downstream_{name}"] - sum(base[name]) / len(base[name])
    return row


def _paired(a: list[float], b: list[float]) -> dict[str, float | int]:
    test = paired_test(a, b)
    return test.difference.fields("difference") | {"p_value": test.p_value}


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
    downstream: list[tuple[DownstreamTask, str]] | None = None,
    wsd_decoder: tuple[str, WsdSettings] | None = None,
) -> dict:
    """Score every method (a model to sample, or a responses file in `responses_of`), compare with `base`.

    `downstream` pairs each task of `settings.downstream` with its resolved data; models answer them (and
    `settings.lm_eval_tasks`), and the WSD row, which has responses but no model, answers them by WSD itself
    when `wsd_decoder` (the strong base and the WSD settings) is given."""
    from cong.report import CURVES_FILE, build_report

    out_dir = Path(out_dir)
    rows = read_jsonl(prompts_path, PROMPT_FIELDS, max_prompts)
    prompts = [r["prompt"] for r in rows]
    sources = {**models, **(responses_of or {})}
    methods = [m for m in METHODS if m in sources]
    judge = None
    if settings.judge is not None:  # before any sampling: a missing endpoint fails at once
        j = settings.judge
        judge = PairwiseJudge.from_env(j.model, j.endpoint_env, j.api_key_env, j.max_tokens)
    backend = reward_backend(settings, (weak_base, weak_aligned))
    tasks = [(task, task_rows(task, path)) for task, path in downstream or []]
    responses, rewards, solved, lm_eval = {}, {}, {}, {}
    for method in methods:
        if method in models:
            log(STAGE, f"sampling {method} ({models[method]})")
            sampler = Sampler(models[method])
            responses[method] = sampler(rows, settings.sampling, STAGE)
            solved[method] = {task.name: correct(sampler, task, data) for task, data in tasks}
            if settings.lm_eval_tasks:
                lm_eval[method] = lm_eval_scores(models[method], settings.lm_eval_tasks, settings.lm_eval_limit)
        else:
            responses[method] = _joined_responses(sources[method], rows, method)
            if method == "wsd" and wsd_decoder is not None:
                strong, wsd_settings = wsd_decoder
                solved[method] = {
                    task.name: wsd_correct(weak_aligned, strong, wsd_settings, task, path)
                    for task, path in downstream or []
                }
        rewards[method] = backend.score(prompts, responses[method])
    base = rewards.get("base")
    implicit = backend if backend.name == "implicit" else ImplicitReward.load(weak_base, weak_aligned)
    words = {m: [len(y.split()) for y in responses[m]] for m in methods}
    table = {}
    for method in methods:
        row = bootstrap_mean(rewards[method]).fields("reward_mean")
        if base is not None:
            row |= win_rate(rewards[method], base).fields("win_rate_vs_base")
        for name, values in backend.parts(prompts, responses[method]).items():
            row |= bootstrap_mean(values).fields(name)
        row |= bootstrap_mean(implicit.score(prompts, responses[method])).fields("implicit_reward")
        row |= bootstrap_mean(words[method]).fields("length_words")
        if judge is not None and "base" in responses:
            row |= _judged(judge, prompts, method, responses, words)
        if method in solved and tasks:
            row |= _downstream(solved[method], solved.get("base"))
        table[method] = row
    results = {
        "methods": table,
        "eval_prompts": len(rows),
        "reward_backend": backend.name,
        "sources": sources,
        "weak_pair": {"base": weak_base, "aligned": weak_aligned},
    }
    if "cong" in rewards:
        results["paired_tests"] = {
            "method": "cong",
            "metric": "reward",
            "against": {m: _paired(rewards["cong"], rewards[m]) for m in methods if m != "cong"},
        }
    if lm_eval:
        skipped = {v for v in lm_eval.values() if isinstance(v, str)}
        results["lm_eval"] = {"skipped": skipped.pop()} if skipped else lm_eval
    if alpha_sweep_path:
        results["alpha_sweep"] = json.loads(Path(alpha_sweep_path).read_text())["points"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_jsonl(
        out_dir / "responses.jsonl",
        ({"id": r["id"], "prompt": r["prompt"], **{m: responses[m][i] for m in methods}} for i, r in enumerate(rows)),
    )
    curves = {
        m: json.loads((Path(ref) / TRAINING_LOG).read_text())
        for m, ref in models.items()
        if (Path(ref) / TRAINING_LOG).is_file()
    }
    (out_dir / CURVES_FILE).write_text(json.dumps(curves, indent=2) + "\n")
    build_report(out_dir)
    return results
