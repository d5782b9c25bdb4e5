"""JSONL rows: malformed rows stop with the file, the line and the fix."""

import pytest

from cong.data import PROMPT_FIELDS, read_jsonl, reference_rows, write_jsonl
from cong.errors import CongError


def test_round_trip(tmp_path):
    rows = [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}]
    write_jsonl(tmp_path / "p.jsonl", rows)
    assert read_jsonl(tmp_path / "p.jsonl", PROMPT_FIELDS) == rows
    assert read_jsonl(tmp_path / "p.jsonl", PROMPT_FIELDS, limit=1) == rows[:1]


@pytest.mark.parametrize(
    "line, expected",
    [
        ("{not json", "line 2: not valid JSON"),
        ('["a"]', "line 2: expected a JSON object"),
        ('{"id": "b"}', "line 2: field(s) prompt missing"),
        ('{"id": "b", "prompt": ""}', "line 2: field(s) prompt missing"),
        ('{"id": "a", "prompt": "again"}', "line 2: duplicate id 'a'"),
    ],
)
def test_malformed_rows(tmp_path, line, expected):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "prompt": "x"}\n' + line + "\n")
    with pytest.raises(CongError) as info:
        read_jsonl(path, PROMPT_FIELDS)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_missing_and_empty(tmp_path):
    assert "not found" in str(pytest.raises(CongError, read_jsonl, tmp_path / "none.jsonl", PROMPT_FIELDS).value)
    (tmp_path / "e.jsonl").write_text("\n")
    assert "no rows" in str(pytest.raises(CongError, read_jsonl, tmp_path / "e.jsonl", PROMPT_FIELDS).value)


def test_reference_rows_are_the_rows_own_else_the_testbeds_correct_aligned_answer(tmp_path):
    """What the strong ceiling imitates: a row's `reference` when it has one; for a testbed prompt, its answer in the
    aligned style, which scores the testbed's full reward and is the same in every run."""
    from cong.testbed.world import reward, style_checks

    rows = [
        {"id": "a", "prompt": "Sort the digits 3 1 2."},
        {"id": "b", "prompt": "Which is the largest of 4 9 1?", "reference": "Nine."},
        {"id": "c", "prompt": "Name the smallest digit in 5 7 2."},
    ]
    write_jsonl(tmp_path / "p.jsonl", rows)
    out = reference_rows(tmp_path / "p.jsonl")
    assert [r["id"] for r in out] == ["a", "b", "c"] and out[1]["response"] == "Nine."
    for row in (out[0], out[2]):
        assert reward(row["prompt"], row["response"]) == 1.0 and all(style_checks(row["response"]).values())
    assert "1 2 3" in out[0]["response"] and out == reference_rows(tmp_path / "p.jsonl")
    assert reference_rows(tmp_path / "p.jsonl", limit=1) == out[:1]


def test_a_prompt_without_a_reference_stops_the_ceiling_with_the_fix(tmp_path):
    write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "Write a poem.", "reference": " "}])
    message = str(pytest.raises(CongError, reference_rows, tmp_path / "p.jsonl").value)
    assert "1 of 1 train prompts have no reference response (e.g. id 'a')" in message
    assert "'reference'" in message and "strong_ceiling out of `methods`" in message


def test_a_preference_sets_chosen_side_is_the_reference():
    from cong.inputs.refs import chosen_response

    chat = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    assert chosen_response(chat) == "Hello." and chosen_response("Plain.") == "Plain."
    assert chosen_response(None) is None and chosen_response([{"role": "user", "content": "Hi?"}]) is None


def test_a_hub_preference_set_keeps_its_chosen_side(tmp_path, monkeypatch):
    """A real `datasets` load (a local dataset folder, as the hub's would be cached): each prompt row keeps the chosen
    chat's last assistant turn as its `reference`."""
    from cong.inputs.refs import hf_prompts

    folder = tmp_path / "org" / "prefs"
    rows = [
        {
            "prompt_id": "p1",
            "prompt": "Hi?",
            "chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}],
        },
        {
            "prompt_id": "p2",
            "prompt": "Bye?",
            "chosen": [{"role": "user", "content": "Bye?"}, {"role": "assistant", "content": "Bye."}],
        },
    ]
    write_jsonl(folder / "train_prefs.jsonl", rows)
    splits = "configs:\n- config_name: default\n  data_files:\n  - split: train_prefs\n    path: train_prefs.jsonl\n"
    (folder / "README.md").write_text(f"---\n{splits}---\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = read_jsonl(hf_prompts("hf:org/prefs:train_prefs"), PROMPT_FIELDS)
    assert loaded == [
        {"id": "p1", "prompt": "Hi?", "reference": "Hello."},
        {"id": "p2", "prompt": "Bye?", "reference": "Bye."},
    ]
