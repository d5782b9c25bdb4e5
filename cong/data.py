"""JSONL datasets: prompts, responses and preference pairs, with row-level validation.

A malformed file is reported whole: every bad row (not UTF-8, not JSON, not an object, a field missing or empty,
an id seen before, text no tokenizer can encode) in one message, so a user fixes a file once instead of once per
row.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cong.errors import CongError

PROMPT_FIELDS = ("id", "prompt")
RESPONSE_FIELDS = ("id", "prompt", "response")
PAIR_FIELDS = ("id", "prompt", "chosen", "rejected")
# A prompt row's optional preferred response (a preference set's chosen side): what the strong ceiling imitates.
REFERENCE_FIELD = "reference"
# A model may answer with nothing; that is a (bad) response, not a malformed row.
MAY_BE_EMPTY = ("response",)
# Problems one message lists before it only counts the rest.
LISTED_PROBLEMS = 20
SURROGATE = re.compile("[\ud800-\udfff]")


def problem_list(what: str, problems: list[str], fix: str) -> str:
    """One message for many problems of one file: a header, the first LISTED_PROBLEMS, a count of the rest."""
    shown = ["  " + p.replace("\n", "\n  ") for p in problems[:LISTED_PROBLEMS]]
    if len(problems) > LISTED_PROBLEMS:
        shown.append(f"  ... and {len(problems) - LISTED_PROBLEMS} more")
    noun = "problem" if len(problems) == 1 else "problems"
    return "\n".join([f"{what}: {len(problems)} {noun}:", *shown, fix])


def _row_problem(raw: bytes, required: tuple[str, ...], seen: set[str]) -> tuple[dict[str, Any] | None, str | None]:
    """The row on one line, or what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 (byte {exc.start}: {raw[exc.start : exc.start + 1]!r})"
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg})"
    if not isinstance(row, dict):
        return None, f"expected a JSON object, got {type(row).__name__}"
    bad = [k for k in required if not isinstance(row.get(k), str) or (k not in MAY_BE_EMPTY and not row[k].strip())]
    if bad:
        return None, f"field(s) {', '.join(bad)} missing or not a non-empty string"
    if row["id"] in seen:
        return None, f"duplicate id {row['id']!r}"
    unencodable = _unencodable(row)
    if unencodable:
        return None, f"id {row['id']!r}: {unencodable}"
    seen.add(row["id"])
    return row, None


def _unencodable(row: dict[str, Any]) -> str | None:
    """What no tokenizer can encode in a row's text: a lone UTF-16 surrogate, which JSON's `\\ud800` escapes
    allow but UTF-8 has no bytes for."""
    for key, value in row.items():
        if isinstance(value, str):
            bad = SURROGATE.search(value)
            if bad:
                return (
                    f"field {key} holds a lone surrogate (U+{ord(bad.group()):04X}) at character {bad.start()}, "
                    "which has no UTF-8 form and no tokenizer can encode; write the character itself, or pair the "
                    "\\u escape with its other half"
                )
    return None


def check_jsonl(
    path: str | Path, required: tuple[str, ...], limit: int | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """The good rows of a JSONL file (up to `limit`) and a `line N: ...` problem for every bad one before it."""
    path = Path(path)
    if not path.is_file():
        raise CongError(f"data file not found: {path}")
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    seen: set[str] = set()
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            row, problem = _row_problem(raw, required, seen)
            if problem:
                problems.append(f"line {number}: {problem}")
            else:
                rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    return rows, problems


def read_jsonl(path: str | Path, required: tuple[str, ...], limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of a JSONL file; any malformed row stops with a message naming the file, each bad line and the fix."""
    rows, problems = check_jsonl(path, required, limit)
    if problems:
        fix = (
            f"Each line must be one UTF-8 JSON object with the string fields {', '.join(required)} "
            "(non-empty), and every id unique."
        )
        raise CongError(problem_list(str(path), problems, fix))
    if not rows:
        raise CongError(f"{path} has no rows; give at least one JSON object per line with {', '.join(required)}.")
    return rows


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows whole or not at all: into a hidden sibling first, renamed over `path` once complete (a full disk
    or a killed process leaves no truncated file)."""

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    count = 0
    try:
        with partial.open("w") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return count


def write_responses(path: str | Path, rows: list[dict[str, Any]], responses: list[str]) -> int:
    """Response rows (`id`, `prompt`, `response`) for prompt rows and their responses, in order."""
    pairs = zip(rows, responses, strict=True)
    return write_jsonl(path, ({"id": r["id"], "prompt": r["prompt"], "response": y} for r, y in pairs))


def training_rows(path: str | Path, stage: str) -> list[dict[str, Any]]:
    """Response rows worth imitating: an empty response teaches nothing, so those rows are left out."""
    from cong.progress import log

    rows = read_jsonl(path, RESPONSE_FIELDS)
    kept = [r for r in rows if r["response"].strip()]
    if len(kept) < len(rows):
        log(stage, f"left out {len(rows) - len(kept)} of {len(rows)} rows with an empty response")
    if not kept:
        raise CongError(f"{path}: every response is empty; there is nothing to train {stage} on.")
    return kept


def reference_rows(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The prompt set's preferred responses as (id, prompt, response) rows, for the strong ceiling: each row's own
    `reference`, else, for a testbed prompt, its correct answer in the aligned style. A prompt with neither stops
    with a message naming it and the fix."""
    from cong.testbed.world import reference_response

    rows = read_jsonl(path, PROMPT_FIELDS, limit)
    out, missing = [], []
    for row in rows:
        reference = row.get(REFERENCE_FIELD)
        if not isinstance(reference, str) or not reference.strip():
            reference = reference_response(row["id"], row["prompt"])
        if reference is None:
            missing.append(row["id"])
        else:
            out.append({"id": row["id"], "prompt": row["prompt"], "response": reference})
    if missing:
        raise CongError(
            f"{path}: {len(missing)} of {len(rows)} train prompts have no reference response (e.g. id "
            f"{missing[0]!r}), which the strong ceiling is trained on. Give each row a non-empty "
            f"{REFERENCE_FIELD!r} field (a Hugging Face preference set's `chosen` side becomes it), or leave "
            "strong_ceiling out of `methods`."
        )
    return out
