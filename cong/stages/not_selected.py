"""not_selected: empty placeholders for a branch the run's methods leave out (dsl.OneOf needs an output from
every branch, Else included)."""

from __future__ import annotations

from pathlib import Path

from cong.stages.step import StepResult


def step(method: str, *paths: str) -> StepResult:
    """Empty placeholders for a branch the run's methods leave out (dsl.OneOf needs an output from Else)."""
    for path in paths:
        Path(path).write_text("")
    return {"metrics": {}, "metadata": {"not_selected": method}}
