"""ICL refinement (method.md 4.2): exact prompt construction, the answer cut, and the stage on the micro testbed."""

import pytest

from cong.config import DecodingSettings, IclRefineSettings
from cong.data import RESPONSE_FIELDS, read_jsonl, write_jsonl
from cong.stages.icl_refine import (
    batches,
    cut_answer,
    cut_style,
    icl_chats,
    icl_prompts,
    icl_refine,
    respond_prompt,
    style_prompt,
)

ROWS = [{"id": f"r{i}", "prompt": f"q{i}?", "response": f"a{i}."} for i in range(7)]


def test_batches_are_consecutive_and_the_last_is_short():
    assert [[r["id"] for r in b] for b in batches(ROWS, 3)] == [["r0", "r1", "r2"], ["r3", "r4", "r5"], ["r6"]]


def test_icl_prompts_leave_one_out_within_consecutive_batches():
    prompts = icl_prompts(ROWS, 3)
    assert prompts == [
        "Question: q1?\nAnswer: a1.\n\nQuestion: q2?\nAnswer: a2.\n\nQuestion: q0?\nAnswer:",
        "Question: q0?\nAnswer: a0.\n\nQuestion: q2?\nAnswer: a2.\n\nQuestion: q1?\nAnswer:",
        "Question: q0?\nAnswer: a0.\n\nQuestion: q1?\nAnswer: a1.\n\nQuestion: q2?\nAnswer:",
        "Question: q4?\nAnswer: a4.\n\nQuestion: q5?\nAnswer: a5.\n\nQuestion: q3?\nAnswer:",
        "Question: q3?\nAnswer: a3.\n\nQuestion: q5?\nAnswer: a5.\n\nQuestion: q4?\nAnswer:",
        "Question: q3?\nAnswer: a3.\n\nQuestion: q4?\nAnswer: a4.\n\nQuestion: q5?\nAnswer:",
        "Question: q6?\nAnswer:",  # alone in its batch: no context (the stage keeps its weak label)
    ]
    for row, prompt in zip(ROWS, prompts, strict=True):
        assert row["response"] not in prompt  # never its own weak answer


def test_icl_prompts_short_last_batch_of_two():
    rows = ROWS[:5]
    assert icl_prompts(rows, 3)[3:] == [
        "Question: q4?\nAnswer: a4.\n\nQuestion: q3?\nAnswer:",
        "Question: q3?\nAnswer: a3.\n\nQuestion: q4?\nAnswer:",
    ]


def test_icl_chats_are_the_same_leave_one_out_pairs_as_turns():
    chats = icl_chats(ROWS, 3)
    assert chats[1] == [
        {"role": "user", "content": "q0?"},
        {"role": "assistant", "content": "a0."},
        {"role": "user", "content": "q2?"},
        {"role": "assistant", "content": "a2."},
        {"role": "user", "content": "q1?"},
    ]
    assert chats[6] == [{"role": "user", "content": "q6?"}]
    assert len(chats) == len(ROWS)
    for row, chat in zip(ROWS, chats, strict=True):
        assert chat[-1] == {"role": "user", "content": row["prompt"]}
        assert {"role": "assistant", "content": row["response"]} not in chat


def test_infer_and_respond_prompts():
    assert style_prompt(ROWS[:2]) == (
        "Below are questions with answers. All the answers are written in the same style.\n\n"
        "Question: q0?\nAnswer: a0.\n\nQuestion: q1?\nAnswer: a1.\n\n"
        "Describe the style of the answers above in one sentence.\nStyle:"
    )
    assert respond_prompt("Terse answers ending in a period.", "q9?") == (
        "Terse answers ending in a period.\n\nQuestion: q9?\nAnswer:"
    )
    assert respond_prompt("", "q9?") == "Question: q9?\nAnswer:"


def test_cuts():
    assert cut_answer(" 12\n\nQuestion: What is 1 + 1?\nAnswer: 2") == "12"
    assert cut_answer(" two lines\nof answer \nQuestion: next") == "two lines\nof answer"
    assert cut_answer("no next example ") == "no next example"
    assert cut_answer("\nQuestion: straight on") == ""
    assert cut_style("\n Short and formal.\nQuestion: x") == "Short and formal."
    assert cut_style("  \n") == ""


@pytest.fixture(scope="module")
def weak_labels(micro_testbed, tmp_path_factory):
    """7 weak labels (batches 3, 3, 1 at B=3): the testbed's prompts with terse, wrong-ish answers."""
    prompts = read_jsonl(micro_testbed / "train.jsonl", ("id", "prompt"), limit=7)
    path = tmp_path_factory.mktemp("icl") / "weak.jsonl"
    write_jsonl(path, ({"id": r["id"], "prompt": r["prompt"], "response": f"{i}"} for i, r in enumerate(prompts)))
    return path, read_jsonl(path, RESPONSE_FIELDS)


@pytest.mark.parametrize(
    ("variant", "fmt"),
    [("refine", "text"), ("infer_and_respond", "text"), ("refine", "chat"), ("infer_and_respond", "chat")],
)
def test_icl_refine_stage(micro_testbed, weak_labels, tmp_path, variant, fmt):
    path, weak = weak_labels
    settings = IclRefineSettings(
        batch_size=3, variant=variant, format=fmt, max_new_tokens=12, style_max_new_tokens=8, decode_batch_size=4
    )
    runs = []
    for name in ("a", "b"):
        metrics = icl_refine(str(micro_testbed / "strong"), str(path), tmp_path / f"{name}.jsonl", settings)
        runs.append((metrics, read_jsonl(tmp_path / f"{name}.jsonl", RESPONSE_FIELDS)))
    (metrics, rows), (metrics_b, rows_b) = runs
    assert rows == rows_b and metrics == metrics_b  # greedy: identical across runs
    assert [(r["id"], r["prompt"]) for r in rows] == [(r["id"], r["prompt"]) for r in weak]
    assert all(set(r) == {"id", "prompt", "response"} and r["response"].strip() for r in rows)
    assert all("\nQuestion:" not in r["response"] for r in rows)
    assert metrics["rows"] == 7 and metrics["batches"] == 3
    assert 0 <= metrics["changed_share"] <= 1 and metrics["empty_refinements"] >= 0
    if variant == "refine":
        assert metrics["single_rows_kept"] == 1
        assert rows[-1]["response"] == weak[-1]["response"]
    else:
        assert "empty_styles" in metrics and metrics["mean_style_words"] >= 0


def test_icl_refine_labels_follow_the_stages_decoding(micro_testbed, weak_labels, tmp_path):
    """`decoding` is how the labels are written: sampled, each row draws from its own seeded generator (a rerun is
    the same, another seed is not), and the labels differ from the greedy default's."""
    path, _ = weak_labels
    base = IclRefineSettings(batch_size=3, format="chat", max_new_tokens=12, decode_batch_size=4)
    labels = {}
    for name, decoding in (
        ("greedy", base.decoding),
        ("sampled", DecodingSettings(temperature=1.5, top_p=1.0, seed=3)),
        ("again", DecodingSettings(temperature=1.5, top_p=1.0, seed=3)),
        ("other seed", DecodingSettings(temperature=1.5, top_p=1.0, seed=4)),
    ):
        out = tmp_path / f"{name}.jsonl"
        icl_refine(str(micro_testbed / "strong"), str(path), out, base.model_copy(update={"decoding": decoding}))
        labels[name] = [r["response"] for r in read_jsonl(out, RESPONSE_FIELDS)]
    assert base.decoding.greedy and labels["sampled"] == labels["again"]
    assert labels["sampled"] != labels["greedy"] and labels["sampled"] != labels["other seed"]
