"""Where a run's models and datasets came from: the graph of its artifacts, and that graph as a tree.

Every stage records on its outputs the URIs of the artifacts it read (`inputs`) beside its settings
(`cong.stages.step.record`). After a local run, `collect` gathers them from the kfp run folder into `lineage.json`,
which is published with the results; `render` prints the tree from each final model back to the base models
and prompt sets, with the settings of every step on the way.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cong.errors import CongError

LINEAGE_FILE = "lineage.json"
# The fields a reader needs to tell two models apart, in the order they are printed (the last two: a cluster
# run's task state and ML Metadata artifact id, see cong.cluster.kfp_runs).
SHOWN = (
    "stage",
    "method",
    "base_model",
    "weak_base",
    "weak_aligned",
    "strong_model",
    "reference",
    "split",
    "prompts",
    "source",
    "alpha",
    "relative_top",
    "score_form",
    "beta",
    "aux_coef",
    "window",
    "threshold",
    "learning_rate",
    "epochs",
    "seed",
    "rows",
    "train_rows",
    "sha256",
    "config",
    "code_version",
    "state",
    "artifact_id",
)


def run_outputs(run_root: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every result a finished kfp run folder holds, as `<task>/<output>` -> (local path, metadata). Metrics live
    in metadata only and a `not_selected` placeholder is not a result, so neither is listed."""
    found = {}
    for task in sorted(p for p in run_root.iterdir() if (p / "executor_output.json").is_file()):
        outputs = json.loads((task / "executor_output.json").read_text()).get("artifacts", {})
        for name, spec in sorted(outputs.items()):
            artifact = spec["artifacts"][0]
            metadata = artifact.get("metadata", {})
            if name != "metrics" and "not_selected" not in metadata and Path(artifact["uri"]).exists():
                found[f"{task.name}/{name}"] = (artifact["uri"], metadata)
    return found


def collect(
    run_root: Path, published: dict[str, str], inputs: dict[str, Any], run: dict[str, Any], sources: dict[str, str]
) -> dict:
    """The lineage of a finished kfp run folder: every output artifact (`<task>/<output>`) with its metadata,
    its published URI and the artifacts it was made from. `published` maps those keys to URIs, `inputs` the
    run's imported inputs, `sources` each method to the local path of its model (or responses)."""
    artifacts: dict[str, dict[str, Any]] = {}
    by_uri: dict[str, str] = {}
    for key, (local, metadata) in run_outputs(run_root).items():
        metadata = dict(metadata)
        artifacts[key] = {
            "uri": published.get(key),
            "local": local,
            "inputs": metadata.pop("inputs", {}),
            "metadata": metadata,
        }
        by_uri[local] = key
        if "location" in metadata:  # a pointer (cong.storage.handoff): evaluate names the folder it points to
            by_uri[metadata["location"]] = key
    for node in artifacts.values():
        # Inputs that no task made are placeholders of methods the run left out.
        node["inputs"] = {name: by_uri[uri] for name, uri in node["inputs"].items() if uri in by_uri}
    methods = {method: by_uri[path] for method, path in sources.items() if path in by_uri}
    kfp_ids = {node["metadata"]["run_id"] for node in artifacts.values() if "run_id" in node["metadata"]}
    run = {**run, "methods": methods, **({"kfp_run_id": kfp_ids.pop()} if len(kfp_ids) == 1 else {})}
    return {"run": run, "inputs": inputs, "artifacts": artifacts}


def load(target: str) -> tuple[dict, str | None]:
    """The lineage that `target` names, and where its tree starts: a run folder of `cong run --local` (every
    method), or the s3:// URI of a published run or of one of its artifacts (read from the run's results)."""
    if not target.startswith("s3://"):
        path = Path(target) / LINEAGE_FILE
        if not path.is_file():
            raise CongError(
                f"{target} has no {LINEAGE_FILE}: name the folder of a finished `cong run --local`, or the s3:// URI "
                "of a published model."
            )
        return json.loads(path.read_text()), None
    from cong.storage.folders import fetch_dir

    run = re.match(r"^(s3://.+?/runs/[^/]+)", target)
    if run is None:
        raise CongError(f"{target} is not inside a published run (s3://<bucket>/<prefix>/runs/<run id>/...).")
    lineage = json.loads((fetch_dir(f"{run.group(1)}/results") / LINEAGE_FILE).read_text())
    if target.rstrip("/") == run.group(1):
        return lineage, None
    start = start_of(lineage, target)
    if start is None:
        raise CongError(f"the run {run.group(1)} published no artifact at {target}.")
    return lineage, start


def start_of(lineage: dict, target: str) -> str | None:
    """The artifact key that `target` names: a key, a method of the run, or a published URI (None: the run)."""
    artifacts = lineage["artifacts"]
    if target in artifacts:
        return target
    if target in lineage["run"].get("methods", {}):
        return lineage["run"]["methods"][target]
    for key, node in artifacts.items():
        if node["uri"] and target.rstrip("/") in (node["uri"], node["uri"].rsplit("/", 1)[0]):
            return key
    return None


def render(lineage: dict, start: str | None = None) -> str:
    """The tree of one artifact (`start`, a key) or of every method's model, back to the run's inputs."""
    run = lineage["run"]
    origin = {entry["uri"]: entry["from"] for entry in lineage["inputs"].values()}
    kfp = f", kfp run id {run['kfp_run_id']}" if "kfp_run_id" in run else ""
    lines = [
        f"run {run['id']} (config {run['config']}{kfp})" + (f"  {run['published']}" if run.get("published") else "")
    ]
    if start is None:
        roots = [(method, key) for method, key in run.get("methods", {}).items() if key in lineage["artifacts"]]
    else:
        roots = [(start, start)]
    for label, key in roots:
        lines.append("")
        _tree(lineage["artifacts"], key, label, origin, "", "", lines)
    if lineage["inputs"]:
        lines += ["", "inputs:"]
        lines += [f"  {field}: {entry['uri']}  <- {entry['from']}" for field, entry in lineage["inputs"].items()]
    return "\n".join(lines)


def _tree(artifacts: dict, key: str, label: str, origin: dict, lead: str, indent: str, lines: list[str]) -> None:
    node = artifacts[key]
    lines.append(f"{lead}{label}: {key}" + (f"  {node['uri']}" if node["uri"] else ""))
    fields = []
    for name in SHOWN:
        if name in node["metadata"]:
            value = node["metadata"][name]
            value = f"{value[:16]}..." if name == "sha256" else value
            fields.append(f"{name}={value}" + (f" ({origin[value]})" if value in origin else ""))
    children = list(node["inputs"].items())
    bar = "│   " if children else "    "
    lines.append(f"{indent}{bar}{', '.join(fields)}")
    for i, (name, child) in enumerate(children):
        last = i == len(children) - 1
        _tree(
            artifacts,
            child,
            name,
            origin,
            indent + ("└── " if last else "├── "),
            indent + ("    " if last else "│   "),
            lines,
        )
