"""The alignment tax: exact-match accuracy of each model on held-out task sets, and lm-eval skipped cleanly."""

from __future__ import annotations

import sys

import pytest

from cong.config import DecodingSettings, DownstreamTask, EvaluateSettings, SamplingSettings, WsdSettings
from cong.data import read_jsonl, write_jsonl
from cong.evaluation.downstream import matches, normalise


def test_matching_rules():
    assert normalise("  The Answer  is 5. ") == "the answer is 5"
    assert matches("5.", "5", "exact") and matches(" 5 ", "5", "exact")
    assert not matches("The answer is 5.", "5", "exact")
    assert matches("Sure! The answer is 5. I hope this helps!", "5", "whole_word")
    assert not matches("The answer is 15.", "5", "whole_word") and not matches("t a cat", "t a c", "whole_word")
    assert matches("Sorted: 1 2 3!", "1 2 3", "whole_word")


def test_evaluate_reports_each_models_downstream_accuracy(micro_testbed, micro_config, tmp_path, monkeypatch):
    """Two models on the testbed's held-out rows (they carry answers) and a user task file: accuracies equal a
    direct greedy computation, the change from the base is reported, lm-eval is skipped without the package."""
    from cong.decoding.sampler import Sampler
    from cong.stages.evaluate import evaluate
    from cong.stages.wsd import wsd

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as when the extra is not installed
    testbed_rows = read_jsonl(str(micro_testbed / "eval.jsonl"), ("id", "prompt", "answer"))
    user = tmp_path / "user.jsonl"
    write_jsonl(
        user,
        [{"id": "u1", "prompt": "What is 2 + 3?", "answer": "5"}, {"id": "u2", "prompt": "Say hi.", "answer": "hi"}],
    )
    tasks = [
        (
            DownstreamTask(name="testbed", data="testbed:eval", match="whole_word", max_new_tokens=16),
            str(micro_testbed / "eval.jsonl"),
        ),
        (DownstreamTask(name="mine", data=str(user), max_new_tokens=8), str(user)),
    ]
    settings = EvaluateSettings(sampling=SamplingSettings(max_new_tokens=8), lm_eval_tasks=["arc_easy"])
    models = {"base": str(micro_testbed / "strong"), "weak_aligned": str(micro_testbed / "weak")}
    weak = str(micro_testbed / "weak")
    # The WSD row has responses but no model: it answers the tasks by decoding them itself.
    wsd_rows = tmp_path / "wsd.jsonl"
    write_jsonl(wsd_rows, ({**r, "response": "x", "greedy_response": "y"} for r in testbed_rows))
    strong, wsd_settings = models["base"], WsdSettings(draft_max_new_tokens=8, max_total_tokens=16)
    results = evaluate(
        models,
        weak,
        weak,
        str(micro_testbed / "eval.jsonl"),
        tmp_path / "eval",
        settings,
        responses_of={"wsd": str(wsd_rows)},
        downstream=tasks,
        wsd_decoder=(strong, wsd_settings),
    )
    decoded = tmp_path / "wsd-answers.jsonl"
    # Greedily within the task's budget, as every model answers (not by the WSD labels' own budget).
    greedy = {"response": (DecodingSettings(greedy=True), 16)}
    wsd(weak, strong, str(micro_testbed / "eval.jsonl"), decoded, wsd_settings, greedy)
    by_wsd = [
        matches(r["response"], a["answer"], "whole_word")
        for r, a in zip(read_jsonl(str(decoded), ("id", "response")), testbed_rows, strict=True)
    ]
    assert results["methods"]["wsd"]["downstream_testbed"] == pytest.approx(sum(by_wsd) / len(by_wsd))
    assert results["methods"]["wsd"]["downstream_mine_n"] == 2

    for method, model in models.items():
        answers = Sampler(model)(testbed_rows, SamplingSettings(max_new_tokens=16, greedy=True), "test")
        expected = [matches(y, r["answer"], "whole_word") for y, r in zip(answers, testbed_rows, strict=True)]
        row = results["methods"][method]
        assert row["downstream_testbed"] == pytest.approx(sum(expected) / len(expected)), method
        assert row["downstream_testbed_n"] == len(testbed_rows) and row["downstream_mine_n"] == 2
        assert row["downstream_accuracy_n"] == len(testbed_rows) + 2
    base, weak_row = results["methods"]["base"], results["methods"]["weak_aligned"]
    assert weak_row["downstream_testbed_vs_base"] == pytest.approx(
        weak_row["downstream_testbed"] - base["downstream_testbed"]
    )
    assert base["downstream_testbed_vs_base"] == 0
    assert results["lm_eval"] == {
        "skipped": "skipped: lm-evaluation-harness is not installed (pip install 'cong[lm-eval]')"
    }


def test_downstream_settings_are_checked():
    with pytest.raises(ValueError, match="names must differ"):
        EvaluateSettings(downstream=[{"name": "a", "data": "x.jsonl"}, {"name": "a", "data": "y.jsonl"}])
    with pytest.raises(ValueError, match="match"):
        DownstreamTask(name="a", data="x.jsonl", match="fuzzy")
