"""Where a run's models and datasets came from: the graph of its artifacts, and that graph as a tree.

Every stage records on its outputs the URIs and digests of the artifacts it read (`inputs`) beside its settings
(`cong.stages.step.record`), and keeps a copy of each output's metadata beside the output itself (`record_output`):
KFP's API reports no artifact metadata, so this is how the run's last task (`lineage`) sees every output, following
the records back from evaluate's results (`read_records`). That task assembles them with the imported inputs into the
run's `lineage.json` (`assemble`) and publishes it at `<storage>/runs/<KFP run id>/results/`, where `cong lineage
RUN_ID` reads it. A local run adds each output's
published URI (`published_view`). `render` prints the tree from each final model back to the base models and
prompt sets, with the settings of every step on the way.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cong.errors import CongError
from cong.storage.runs import BUCKET_SCHEMES, run_of
from cong.vocabulary import METHODS

LINEAGE_FILE = "lineage.json"
# An output's record is kept beside it, under its URI with this ending (record_uri).
RECORD_SUFFIX = ".cong-record.json"
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
    "vocab_size",
    "digest",
    "config",
    "code_version",
    "state",
    "artifact_id",
)
IMPORT_STAGE = "import"


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


def record_uri(uri: str) -> str:
    """Where the record of the output at `uri` is kept: beside it, in the same store or folder. A task that KFP's cache
    answered hands on outputs of the run that made them, so their records are where those outputs are."""
    return f"{uri.rstrip('/')}{RECORD_SUFFIX}"


def record_output(uri: str, metadata: dict[str, Any]) -> None:
    """Keep an output's metadata beside it (`record_uri`): one small object, or a file for a local run's output."""
    from cong.storage.s3 import S3Settings, parse_s3_uri, storage_error

    body = json.dumps({"uri": uri, "metadata": metadata}, sort_keys=True).encode()
    target = record_uri(uri)
    if not target.startswith(BUCKET_SCHEMES):
        Path(target).write_bytes(body)
        return
    settings = S3Settings.from_env()
    where = parse_s3_uri(target)
    try:
        settings.client().put_object(Bucket=where.bucket, Key=where.prefix, Body=body)
    except Exception as exc:
        raise storage_error(exc, settings, f"recording the lineage of {uri}", where.bucket) from None


def read_records(roots: list[str]) -> list[dict[str, Any]]:
    """The records of the outputs at `roots` and of every output they were made from, following each record's
    `inputs` back: outputs of this run, and of earlier runs whose tasks KFP's cache answered. An input with no record
    (an imported input, a placeholder of a method the run leaves out) ends its branch."""
    from cong.storage.s3 import S3Settings, error_code, parse_s3_uri, storage_error

    settings = S3Settings.from_env()
    client = settings.client() if any(uri.startswith(BUCKET_SCHEMES) for uri in roots) else None

    def get(uri: str) -> dict[str, Any] | None:
        target = record_uri(uri)
        if not target.startswith(BUCKET_SCHEMES):
            return json.loads(Path(target).read_text()) if Path(target).is_file() else None
        where = parse_s3_uri(target)
        try:
            return json.loads(
                (client or settings.client()).get_object(Bucket=where.bucket, Key=where.prefix)["Body"].read()
            )
        except Exception as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise storage_error(exc, settings, f"reading the lineage record of {uri}", where.bucket) from None

    found: dict[str, dict[str, Any]] = {}
    pending = list(roots)
    while pending:
        uri = pending.pop()
        if uri in found:
            continue
        record = get(uri)
        if record is None:
            continue
        found[uri] = record
        pending += [source["uri"] for source in record["metadata"].get("inputs", {}).values()]
    return list(found.values())


def assemble(records: list[dict[str, Any]], imports: dict[str, dict[str, Any]], run: dict[str, Any]) -> dict:
    """A run's lineage: its imported inputs (`inputs/<field>`: URI and the importer's metadata) and every output its
    stages recorded (`<task>/<output>`, from the artifact's URI; a sampling shard is left out, its stage's merged
    dataset records what the shards read), each with the artifacts it was made from; `run["methods"]` the output
    of each method's row, as evaluate read them."""
    artifacts: dict[str, dict[str, Any]] = {}
    for field, imported in imports.items():
        metadata = {"stage": IMPORT_STAGE, **imported["metadata"]}
        if "vocab_size" in metadata:
            metadata["vocab_size"] = int(metadata["vocab_size"])  # a placeholder KFP may resolve as a string
        artifacts[f"inputs/{field}"] = {"uri": imported["uri"], "inputs": {}, "metadata": metadata}
    for record in sorted(records, key=lambda r: r["uri"]):
        metadata = dict(record["metadata"])
        if "shard" not in metadata:
            inputs = metadata.pop("inputs", {})
            artifacts[_key(record["uri"], artifacts)] = {"uri": record["uri"], "inputs": inputs, "metadata": metadata}
    by_uri = {node["uri"]: key for key, node in artifacts.items()}
    for node in artifacts.values():
        # Inputs that no stage made and no importer registered are placeholders of methods the run leaves out.
        node["inputs"] = {n: by_uri[s["uri"]] for n, s in node["inputs"].items() if s["uri"] in by_uri}
    evaluate = next((n for n in artifacts.values() if n["metadata"]["stage"] == "evaluate"), None)
    read = evaluate["inputs"] if evaluate else {}
    methods = {method: read[method] for method in METHODS if method in read}
    inputs = {f: {"uri": i["uri"], "from": i["metadata"].get("reference", i["uri"])} for f, i in imports.items()}
    return {"run": {**run, "methods": methods}, "inputs": inputs, "artifacts": artifacts}


def _key(uri: str, taken: dict[str, Any]) -> str:
    """`<task>/<output>`: of an output's URI (KFP writes outputs at `<pipeline root>/<pipeline>/<run id>/<task>/<uuid>/
    <output>`, kfp.local at `<root>/<pipeline>-<time>/<task>/<output>`, cong.storage.runs), longer where two would
    share it."""
    parts = uri.rstrip("/").split("/")
    if uri.startswith(BUCKET_SCHEMES) and run_of(uri) is not None:
        parts = parts[:-2] + parts[-1:]  # the driver's per-execution uuid says nothing to a reader
    for length in range(2, len(parts) + 1):
        key = "/".join(parts[-length:])
        if key not in taken:
            return key
    return uri


def published_view(lineage: dict, published: dict[str, str], run: dict[str, Any]) -> dict:
    """A local run's lineage: the DAG's own, each output's URI the copy the run published (`published`, by key),
    its local path kept as `local`, and the run's header (`run`) over the DAG's."""
    for key, node in lineage["artifacts"].items():
        if node["metadata"]["stage"] != IMPORT_STAGE:
            node["local"], node["uri"] = node["uri"], published.get(key)
    return {**lineage, "run": {**lineage["run"], **run}}


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
            value = f"{value[:23]}..." if name == "digest" and len(value) > 23 else value
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
