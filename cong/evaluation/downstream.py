"""The alignment tax: does a method keep the strong model's skills? Each model answers held-out task sets
greedily and is scored by exact match, so `base` is "before" and every other row "after"; optionally, tasks of
lm-evaluation-harness when that package is installed (the `lm-eval` extra).
"""

from __future__ import annotations

import re
import string
from typing import Any

from cong.config import DecodingSettings, DownstreamTask, SamplingSettings, WsdSettings
from cong.data import read_jsonl
from cong.errors import CongError
from cong.progress import log

STAGE = "evaluate"
TASK_FIELDS = ("id", "prompt", "answer")
# A run's per-prompt record of the alignment tax: every model's greedy correctness on every downstream row, one line
# per (task, prompt), which a study's paired tests read.
DOWNSTREAM_FILE = "downstream.jsonl"


def normalise(text: str) -> str:
    """Lower case, single spaces, no surrounding spaces or final punctuation."""
    return " ".join(text.lower().split()).strip().rstrip(string.punctuation).strip()


def matches(response: str, answer: str, rule: str) -> bool:
    """`exact`: the normalised response equals the normalised answer; `whole_word`: the normalised answer appears
    in the normalised response, not as part of a longer word or number."""
    response, answer = normalise(response), normalise(answer)
    if rule == "exact":
        return response == answer
    return re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", response) is not None


def task_rows(task: DownstreamTask, path: str) -> list[dict]:
    """The task's rows (`path`: its resolved data); every row needs a non-empty answer."""
    rows = read_jsonl(path, TASK_FIELDS, task.max_prompts)
    if not rows:
        raise CongError(f"the downstream task {task.name!r} ({path}) has no rows.")
    return rows


def correct(sampler: Any, task: DownstreamTask, rows: list[dict]) -> list[float]:
    """1.0 or 0.0 per row: `sampler` (cong.decoding.sampler.Sampler) answers greedily, scored by the task's rule."""
    greedy = SamplingSettings(max_new_tokens=task.max_new_tokens, greedy=True)
    responses = sampler(rows, greedy, STAGE)
    return [float(matches(y, r["answer"], task.match)) for y, r in zip(responses, rows, strict=True)]


def wsd_correct(
    weak_aligned: str, strong_base: str, settings: WsdSettings, task: DownstreamTask, path: str
) -> list[float]:
    """1.0 or 0.0 per row of the task, answered by Weak-to-Strong Decoding, greedily within the task's
    max_new_tokens as every model answers (draft at most `draft_max_new_tokens`): the WSD row has no model to ask."""
    from cong.decoding.wsd import respond

    rows = task_rows(task, path)
    answers = {r["id"]: r["answer"] for r in rows}
    greedy = {"response": (DecodingSettings(greedy=True), task.max_new_tokens)}
    responses, _ = respond(weak_aligned, strong_base, rows, settings, greedy, STAGE)
    return [float(matches(r["response"], answers[r["id"]], task.match)) for r in responses]


def lm_eval_scores(model_ref: str, tasks: list[str], limit: int | None) -> dict[str, float] | str:
    """lm-evaluation-harness metrics `<task>/<metric>` of a model, or the reason they were skipped."""
    try:
        import lm_eval
    except ImportError:
        return "skipped: lm-evaluation-harness is not installed (pip install 'cong[lm-eval]')"
    log(STAGE, f"lm-eval {', '.join(tasks)} on {model_ref}")
    out = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model_ref}", tasks=tasks, limit=limit)
    return {
        f"{task}/{metric.split(',')[0]}": float(value)
        for task, metrics in out["results"].items()
        for metric, value in metrics.items()
        if isinstance(value, int | float) and "stderr" not in metric
    }
