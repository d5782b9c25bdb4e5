"""JSONL datasets: prompts, responses and preference pairs, with row-level validation."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cong.errors import CongError

PROMPT_FIELDS = ("id", "prompt")
RESPONSE_FIELDS = ("id", "prompt", "response")
PAIR_FIELDS = ("id", "prompt", "chosen", "rejected")
# A model may answer with nothing; that is a (bad) response, not a malformed row.
MAY_BE_EMPTY = ("response",)


def read_jsonl(path: str | Path, required: tuple[str, ...], limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a malformed row stops with a message naming the file, line and fix."""
    path = Path(path)
    if not path.is_file():
        raise CongError(f"data file not found: {path}")
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    with path.open() as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CongError(
                    f"{path}, line {number}: not valid JSON ({exc.msg}). Each line must be one "
                    f"JSON object with the fields {', '.join(required)}."
                ) from None
            if not isinstance(row, dict):
                raise CongError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}.")
            problems = [
                k for k in required if not isinstance(row.get(k), str) or (k not in MAY_BE_EMPTY and not row[k].strip())
            ]
            if problems:
                raise CongError(
                    f"{path}, line {number}: field(s) {', '.join(problems)} missing or not a "
                    f"non-empty string. Each row needs {', '.join(required)}."
                )
            if row["id"] in seen:
                raise CongError(f"{path}, line {number}: duplicate id {row['id']!r}; ids must be unique.")
            seen.add(row["id"])
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    if not rows:
        raise CongError(f"{path} has no rows.")
    return rows


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
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
