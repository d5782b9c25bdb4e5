"""JSONL rows: malformed rows stop with the file, the line and the fix."""

import pytest

from cong.data import PROMPT_FIELDS, read_jsonl, write_jsonl
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
