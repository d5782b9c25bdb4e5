"""pair: preference pairs from two response sets joined on prompt id (ConG: chosen = CD, rejected = ConG-S)."""

from __future__ import annotations

from pathlib import Path

from cong.config import config_from_dict
from cong.data import RESPONSE_FIELDS, read_jsonl, write_jsonl
from cong.errors import CongError, stage_step
from cong.stages.step import StepResult, lineage


def pair(chosen_path: str, rejected_path: str, out_path: Path) -> dict[str, float]:
    chosen = {r["id"]: r for r in read_jsonl(chosen_path, RESPONSE_FIELDS)}
    rejected = {r["id"]: r for r in read_jsonl(rejected_path, RESPONSE_FIELDS)}
    rows, identical, empty = [], 0, 0
    for row_id, c in chosen.items():
        r = rejected.get(row_id)
        if r is None:
            continue
        if not c["response"].strip():  # nothing to prefer
            empty += 1
            continue
        if r["prompt"] != c["prompt"]:
            raise CongError(f"pair: id {row_id!r} has different prompts in {chosen_path} and {rejected_path}.")
        if r["response"] == c["response"]:
            identical += 1
            continue
        rows.append({"id": row_id, "prompt": c["prompt"], "chosen": c["response"], "rejected": r["response"]})
    if not rows:
        raise CongError(
            f"pair: no usable pairs between {chosen_path} and {rejected_path} "
            "(no shared prompt ids, or every pair identical)."
        )
    write_jsonl(out_path, rows)
    return {
        "pairs": float(len(rows)),
        "dropped_identical": float(identical),
        "dropped_empty_chosen": float(empty),
        "dropped_unmatched": float(len(chosen) - len(rows) - identical - empty),
    }


@stage_step
def step(config: dict, chosen: str, rejected: str, pairs: str) -> StepResult:
    cfg = config_from_dict(config)
    metrics = pair(chosen, rejected, Path(pairs))
    return {"metrics": metrics, "metadata": {"pairs": lineage(cfg, "pair", rows=metrics["pairs"])}}
