"""evaluate: one row per method on the held-out prompts -> results.json and report.html.

Every row is decoded the same two ways: by `stages.evaluate.sampling` (the primary figures, `<metric>`: the
paper's sampled setting) and greedily (`greedy_<metric>`). A method row comes from a model (decoded here) or from
responses a decode-time method already wrote for these prompts under both decodings (WSD: `response` and
`greedy_response`). Metrics per method and decoding: reward_mean (reward backend), win_rate_vs_base (share of
prompts where the method's response out-scores the base strong model's; ties count one half), the reward backend's
parts (testbed: accuracy and style), implicit_reward (length-normalised, under the weak pair: (log pi_r(y|x) -
log pi_ref(y|x)) / |y|), and length in words; the performance gap recovered on the reward and on accuracy (PGR: 0
at the aligned weak model, 1 at the strong ceiling, when the run has both); with a judge configured, the judge's
win rate and the length-controlled one on the primary responses (cong.evaluation.judge); with downstream tasks,
each model's exact-match accuracy on them, answered greedily, and its change from the base's
(cong.evaluation.downstream). Each comes with a 95% bootstrap interval and its number of prompts
(cong.evaluation.stats.Estimate.fields); `paired_tests` compares ConG's primary rewards with every other row's,
prompt by prompt.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from cong.config import DownstreamTask, EvaluateSettings, WsdSettings, config_from_dict
from cong.data import PROMPT_FIELDS, read_jsonl, write_jsonl
from cong.decoding.sampler import Sampler
from cong.errors import CongError, stage_step
from cong.evaluation.downstream import DOWNSTREAM_FILE, correct, lm_eval_scores, task_rows, wsd_correct
from cong.evaluation.judge import PairwiseJudge
from cong.evaluation.rewards import ImplicitReward, reward_backend
from cong.evaluation.stats import bootstrap_mean, gap_recovered, length_controlled_win_rate, paired_test, win_rate
from cong.inputs.refs import resolve
from cong.models import TRAINING_LOG
from cong.progress import log
from cong.stages.step import StepResult, aligned_weak, lineage, rewards
from cong.storage.handoff import follow
from cong.vocabulary import METHODS

STAGE = "evaluate"
# The figures of a method's row that its Metrics artifact shows in the Kubeflow UI.
HEADLINE = ("reward_mean", "win_rate_vs_base")
# The scores whose gap between the aligned weak model and the strong ceiling each row's PGR measures: the reward, and
# the backend's accuracy where it has one (the testbed's).
PGR_METRICS = ("reward", "accuracy")


def _joined_responses(path: str, rows: list[dict], method: str, field: str) -> list[str]:
    """A decode-time method's responses to the eval rows, from `field` of its responses file (`response` under the
    primary decoding, `greedy_response` under greedy decoding)."""
    by_id = {r["id"]: r[field] for r in read_jsonl(path, ("id", "prompt", field))}
    missing = [r["id"] for r in rows if r["id"] not in by_id]
    if missing:
        raise CongError(
            f"evaluate: the {method} responses in {path} lack {len(missing)} eval prompts, e.g. {missing[0]!r}."
        )
    return [by_id[r["id"]] for r in rows]


def _scored(prompts: list[str], responses: dict[str, list[str]], rewards: dict, backend, implicit) -> dict[str, dict]:
    """Each method's figures under one decoding: reward, win rate against the base's responses under the same
    decoding, the backend's parts, implicit reward and length, each with its interval; and, when the run has both
    ends of the gap (the aligned weak model and the strong ceiling), the gap each row recovers on the reward and on
    the backend's accuracy (`pgr_reward`, `pgr_accuracy`)."""
    base = rewards.get("base")
    scores = {m: {"reward": rewards[m], **backend.parts(prompts, ys)} for m, ys in responses.items()}
    ends = "weak_aligned" in scores and "strong_ceiling" in scores
    table = {}
    for method, ys in responses.items():
        row = bootstrap_mean(rewards[method]).fields("reward_mean")
        if base is not None:
            row |= win_rate(rewards[method], base).fields("win_rate_vs_base")
        for name, values in scores[method].items():
            if name != "reward":
                row |= bootstrap_mean(values).fields(name)
        for name in PGR_METRICS if ends else ():
            if name in scores[method]:
                of = [scores[m][name] for m in (method, "weak_aligned", "strong_ceiling")]
                row |= gap_recovered(*of).fields(f"pgr_{name}")
        row |= bootstrap_mean(implicit.score(prompts, ys)).fields("implicit_reward")
        table[method] = row | bootstrap_mean([len(y.split()) for y in ys]).fields("length_words")
    return table


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
    run_settings: dict | None = None,
) -> dict:
    """Score every method (a model to sample, or a responses file in `responses_of`), compare with `base`.

    `downstream` pairs each task of `settings.downstream` with its resolved data; models answer them (and
    `settings.lm_eval_tasks`), and the WSD row, which has responses but no model, answers them by WSD itself
    when `wsd_decoder` (the strong base and the WSD settings) is given. `run_settings` (every stage's resolved
    settings) goes into results.json as `settings`."""
    from cong.evaluation.report import CURVES_FILE, build_report

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
    decodings = settings.decodings()
    # responses[prefix][method]: each row under each decoding ("" the primary, "greedy_").
    responses: dict[str, dict[str, list[str]]] = {prefix: {} for prefix in decodings}
    solved, lm_eval = {}, {}
    for method in methods:
        if method in models:
            log(STAGE, f"sampling {method} ({models[method]})")
            sampler = Sampler(models[method])
            decoded: dict = {}  # a primary decoding that is greedy already is decoded once
            for prefix, sampling in decodings.items():
                if sampling not in decoded:
                    decoded[sampling] = sampler(rows, sampling, STAGE)
                responses[prefix][method] = decoded[sampling]
            solved[method] = {task.name: correct(sampler, task, data) for task, data in tasks}
            if settings.lm_eval_tasks:
                lm_eval[method] = lm_eval_scores(models[method], settings.lm_eval_tasks, settings.lm_eval_limit)
        else:
            for prefix in decodings:
                responses[prefix][method] = _joined_responses(sources[method], rows, method, f"{prefix}response")
            if method == "wsd" and wsd_decoder is not None:
                strong, wsd_settings = wsd_decoder
                solved[method] = {
                    task.name: wsd_correct(weak_aligned, strong, wsd_settings, task, path)
                    for task, path in downstream or []
                }
    implicit = backend if backend.name == "implicit" else ImplicitReward.load(weak_base, weak_aligned)
    rewards = {prefix: {m: backend.score(prompts, ys[m]) for m in methods} for prefix, ys in responses.items()}
    table = {m: {} for m in methods}
    for prefix, of in responses.items():
        for method, row in _scored(prompts, of, rewards[prefix], backend, implicit).items():
            table[method] |= {f"{prefix}{k}": v for k, v in row.items()}
    primary = responses[""]
    words = {m: [len(y.split()) for y in primary[m]] for m in methods}
    for method, row in table.items():
        if judge is not None and "base" in primary:
            row |= _judged(judge, prompts, method, primary, words)
        if method in solved and tasks:
            row |= _downstream(solved[method], solved.get("base"))
    results = {
        "methods": table,
        "eval_prompts": len(rows),
        "decodings": {prefix.rstrip("_") or "primary": d.model_dump(mode="json") for prefix, d in decodings.items()},
        "reward_backend": backend.name,
        "sources": sources,
        "weak_pair": {"base": weak_base, "aligned": weak_aligned},
        "settings": run_settings or {},
    }
    if "cong" in methods:
        results["paired_tests"] = {
            "method": "cong",
            "metric": "reward",
            "against": {m: _paired(rewards[""]["cong"], rewards[""][m]) for m in methods if m != "cong"},
        }
    if lm_eval:
        skipped = {v for v in lm_eval.values() if isinstance(v, str)}
        results["lm_eval"] = {"skipped": skipped.pop()} if skipped else lm_eval
    if alpha_sweep_path:
        sweep = json.loads(Path(alpha_sweep_path).read_text())
        results["alpha_sweep"] = sweep["points"]
        results["alpha_sweep_rewards"] = sweep["rewards"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_jsonl(
        out_dir / "responses.jsonl",
        (
            {
                "id": r["id"],
                "prompt": r["prompt"],
                **{m: primary[m][i] for m in methods},
                "greedy": {m: responses["greedy_"][m][i] for m in methods},
                "reward": {m: rewards[""][m][i] for m in methods},
            }
            for i, r in enumerate(rows)
        ),
    )
    if tasks:
        # Per prompt, for paired tests of the alignment tax across runs (a study's non-inferiority hypothesis).
        write_jsonl(
            out_dir / DOWNSTREAM_FILE,
            (
                {"task": task.name, "id": r["id"], "correct": {m: solved[m][task.name][i] for m in solved}}
                for task, data in tasks
                for i, r in enumerate(data)
            ),
        )
    curves = {
        m: json.loads((Path(ref) / TRAINING_LOG).read_text())
        for m, ref in models.items()
        if (Path(ref) / TRAINING_LOG).is_file()
    }
    (out_dir / CURVES_FILE).write_text(json.dumps(curves, indent=2) + "\n")
    build_report(out_dir)
    return results


@stage_step
def step(
    config: dict,
    weak_aligned: str,
    models: dict[str, str],
    responses_of: dict[str, str],
    alpha_sweep_points: str | None,
    results: str,
    report: str,
    model_store: str = "",
) -> StepResult:
    """`models` and `responses_of` may hold every method's input; the config's `methods` picks the rows."""
    cfg = config_from_dict(config)
    aligned = aligned_weak(cfg, weak_aligned, model_store)
    candidates = {"base": resolve(cfg.models.strong_base, cfg), "weak_aligned": aligned}
    candidates.update({method: follow(path, model_store) for method, path in models.items()})
    chosen = [m for m in cfg.methods if m in candidates or m in responses_of]
    out = evaluate(
        {m: candidates[m] for m in chosen if m in candidates},
        resolve(cfg.models.weak_base, cfg),
        aligned,
        resolve(cfg.data.eval_prompts, cfg),
        Path(results),
        rewards(cfg.stages.evaluate, cfg),
        cfg.data.max_eval_prompts,
        responses_of={m: responses_of[m] for m in chosen if m in responses_of},
        alpha_sweep_path=alpha_sweep_points if cfg.stages.alpha_sweep.alphas else None,
        downstream=[(task, resolve(task.data, cfg)) for task in cfg.stages.evaluate.downstream],
        wsd_decoder=(resolve(cfg.models.strong_base, cfg), cfg.stages.wsd),
        run_settings=cfg.training_stages().model_dump(mode="json"),
    )
    shutil.copyfile(Path(results) / "report.html", report)
    # The UI's run comparison: the two figures the paper compares methods by, with their intervals, per method. The
    # whole table (57 figures per method) is in the `results` dataset and the report.
    metrics = {
        f"{m}.{figure}": row[figure]
        for m, row in out["methods"].items()
        for name in HEADLINE
        for figure in (name, f"{name}_ci95_low", f"{name}_ci95_high")
        if figure in row
    }
    return {
        "metrics": metrics,
        "metadata": {
            "results": lineage(cfg, "evaluate", eval_prompts=out["eval_prompts"], methods=list(out["methods"])),
            "report": lineage(cfg, "evaluate"),
        },
    }
