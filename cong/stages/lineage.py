"""lineage: the run's last task. It gathers the lineage records that every stage kept beside its outputs, from
evaluate's results back to the inputs (through earlier runs where KFP's cache answered a task), assembles them with the
imported inputs into the run's lineage.json (cong.storage.lineage) and publishes it at `<storage>/runs/<KFP run
id>/results/`, where `cong lineage RUN_ID` reads it: KFP's API reports no artifact metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cong.config import StorageSettings, config_from_dict
from cong.errors import stage_step
from cong.stages.step import StepResult, lineage
from cong.storage.folders import publish_path
from cong.storage.lineage import LINEAGE_FILE, assemble, read_records


def published_at(storage: StorageSettings, run_id: str) -> str:
    """Where a run's lineage.json is published: `<storage>/runs/<KFP run id>/results` (`storage` located)."""
    return storage.uri("runs", run_id, "results")


@stage_step
def step(config: dict, run_id: str, results: str, described: str, tree: str) -> StepResult:
    """Write the run's lineage.json into the folder `tree` and publish it: every output that evaluate's `results`
    (a URI) was made from, back to the inputs, which the file `described` (the fetch task's output) describes."""
    cfg = config_from_dict(config)
    inputs: dict[str, dict[str, Any]] = json.loads(Path(described).read_text())
    imports = {field: {"uri": entry["uri"], "metadata": entry} for field, entry in inputs.items()}
    records = read_records([results])
    built = assemble(records, imports, {"id": run_id, "config": cfg.name, "kfp_run_id": run_id})
    folder = Path(tree)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LINEAGE_FILE).write_text(json.dumps(built, indent=2) + "\n")
    published = publish_path(folder, published_at(cfg.storage, run_id))
    metadata = {**lineage(cfg, "lineage", artifacts=len(built["artifacts"])), "published": published}
    return {
        "metrics": {"artifacts": len(built["artifacts"]), "methods": len(built["run"]["methods"])},
        "metadata": {"lineage": metadata},
    }
