"""A local run's outputs through S3-compatible storage (`cong.storage.folders`); its inputs went there before the run
(cong.inputs.publish).

After the run, every model and dataset the run made is published under
`s3://<bucket>/<prefix>/runs/<run id>/<task>/<output>/`, and its results under `.../results/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cong.config import Config
from cong.storage.folders import publish_path
from cong.storage.lineage import run_outputs
from cong.storage.s3 import S3Settings

RESULTS = "results"


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
