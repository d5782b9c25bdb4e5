"""fetch: every input the config names as a copy in the run's store, whose URI the DAG's importers register
(cong.inputs.fetch); each input's description (reference, URI, digest, hub revision, vocabulary size) is this task's
`described` output, where the run records what it imported.

It runs in every run (never answered by the cache): a hub reference may stand for a new commit tonight, and the
importers must register exactly what the stages will read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cong.config import config_from_dict
from cong.errors import stage_step
from cong.inputs.fetch import fetch_input, in_root_scheme, reference, vocabulary_size
from cong.stages.step import StepResult, lineage
from cong.vocabulary import INPUT_FIELDS, MODEL_INPUTS


@stage_step
def step(config: dict, described: str, output_uri: str) -> StepResult:
    """Copy each input into the run's store (once per content or hub revision), write their descriptions to the file
    `described`, an output whose URI (`output_uri`) names the run and its pipeline root (cong.storage.runs); returns
    each input's importer URI as `uris` (`<field>_uri`, empty for an input the config leaves out)."""
    from cong.storage.runs import run_of

    run = run_of(output_uri)
    root = run.pipeline_root if run else None
    cfg = config_from_dict(config)
    cfg = cfg.model_copy(update={"storage": cfg.storage.located(root)})
    found: dict[str, dict[str, Any]] = {}
    for _, field in INPUT_FIELDS:
        ref = reference(cfg, field)
        if ref is None:
            continue
        got = fetch_input(ref, field, cfg)
        entry = {"reference": cfg.input_origins.get(field, ref), "uri": in_root_scheme(got.uri, root)}
        entry["digest"] = got.digest
        if got.revision:
            entry["revision"] = got.revision
        if field in MODEL_INPUTS:
            entry["vocab_size"] = vocabulary_size(got.uri)
        found[field] = entry
    Path(described).write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    uris = {f"{field}_uri": found.get(field, {}).get("uri", "") for _, field in INPUT_FIELDS}
    return {
        "uris": uris,
        "metrics": {"inputs": len(found)},
        "metadata": {"described": lineage(cfg, "fetch", described=found)},
    }
