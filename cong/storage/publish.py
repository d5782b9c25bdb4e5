"""A run's inputs and outputs through S3-compatible storage (`cong.storage.folders`).

Before a run, every input that is a local folder or file (the base models, a supplied aligned model, the
prompt sets) is published under `s3://<bucket>/<prefix>/inputs/<field>-<content digest>/`, and the config the
pipeline gets names those URIs, so each stage loads its inputs from the store (fetched, verified, cached). An
input already published with the same content is not uploaded again.

After the run, every model and dataset the run made is published under
`s3://<bucket>/<prefix>/runs/<run id>/<task>/<output>/`, and its results under `.../results/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cong.config import Config, config_from_dict
from cong.progress import log
from cong.refs import resolve
from cong.storage.folders import find_manifest, folder_digest, publish_path
from cong.storage.lineage import run_outputs
from cong.storage.s3 import S3Settings, ensure_bucket
from cong.vocabulary import INPUT_FIELDS

RESULTS = "results"


def content_digest(path: Path) -> str:
    """A short sha256 over the relative names and contents of a folder's files (or of one file)."""
    return folder_digest(path)[:16]


def import_inputs(cfg: Config, settings: S3Settings) -> tuple[Config, dict[str, dict[str, str]]]:
    """Publish the config's local inputs to the store; returns the config naming them by URI, and per input
    field where it came from and where it is now. Hub ids and inputs already in S3 stay as they are."""
    storage = cfg.storage.located(cfg.pipeline_root)
    ensure_bucket(storage.bucket, settings)
    raw = cfg.model_dump(mode="json")
    imported = {}
    for section, field in INPUT_FIELDS:
        ref = raw[section][field]
        if ref is None or ref.startswith("s3://"):
            continue
        path = Path(resolve(ref, cfg))
        if not path.exists():  # a Hugging Face id: its library loads it
            continue
        uri = storage.uri("inputs", f"{field}-{content_digest(path)}")
        named = uri if path.is_dir() else f"{uri}/{path.name}"
        if find_manifest(uri, settings) is None:
            publish_path(path, uri, settings=settings)
        else:
            log("storage", f"{field}: {ref} is already in the store at {uri}")
        raw[section][field] = named
        raw["input_origins"][field] = ref
        imported[field] = {"from": ref, "uri": named}
    return config_from_dict(raw), imported


def publish_run(run_root: Path, cfg: Config, settings: S3Settings, sources: dict[str, str]) -> dict[str, Any]:
    """Publish every model and dataset of a finished kfp run folder; returns `results.json`'s `artifacts`:
    the run's URI, each method's model or responses, and every published task output.

    A model that went through a shared store (cong.storage.handoff) is not here: its stage published it while the
    run's workspace existed, and its artifact names that copy, or it was a model that no row shows."""
    base = cfg.storage.uri("runs", run_root.name)
    outputs: dict[str, str] = {}
    by_path: dict[str, str] = {}
    for key, (path, metadata) in run_outputs(run_root).items():
        if "location" in metadata:
            if "published" in metadata:
                outputs[key] = by_path[path] = by_path[metadata["location"]] = metadata["published"]
            continue
        outputs[key] = by_path[path] = publish_path(path, f"{base}/{key}", settings=settings)
    methods = {method: by_path[path] for method, path in sources.items() if path in by_path}
    # Rows whose model is an input of the run, not an output: the store's copy of that input.
    for method, ref in (("base", cfg.models.strong_base), ("weak_aligned", cfg.models.weak_aligned)):
        if method in sources and method not in methods and ref and ref.startswith("s3://"):
            methods[method] = ref
    return {"run": base, RESULTS: f"{base}/{RESULTS}", "methods": methods, "outputs": outputs}


def publish_results(out_dir: Path, files: tuple[str, ...], artifacts: dict[str, Any], settings: S3Settings) -> None:
    """The run folder's result files, as the folder `artifacts["results"]`."""
    staging = out_dir / "tmp" / RESULTS
    staging.mkdir(parents=True, exist_ok=True)
    for name in files:
        link = staging / name
        link.unlink(missing_ok=True)
        link.symlink_to((out_dir / name).resolve())
    publish_path(staging, artifacts[RESULTS], settings=settings)
