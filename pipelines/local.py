"""Run the DAG without a cluster: kfp.local with SubprocessRunner(use_venv=False), every stage a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from cong.config import Config
from cong.data import PROMPT_FIELDS, read_jsonl
from cong.errors import CongError
from cong.progress import log
from cong.refs import resolve

RUN_FILES = ("results.json", "report.html", "responses.jsonl")


def preflight(cfg: Config) -> None:
    """Fail fast, before any stage starts: build the testbed, read every prompt file, check the models."""
    from cong.testbed import build_testbed

    if cfg.uses_testbed():
        build_testbed(cfg.testbed, progress=lambda m: log("testbed", m.removeprefix("testbed: ")))
    for ref, limit in (
        (cfg.data.train_prompts, cfg.data.max_train_prompts),
        (cfg.data.eval_prompts, cfg.data.max_eval_prompts),
    ):
        read_jsonl(resolve(ref, cfg), PROMPT_FIELDS, limit)
    for ref in (cfg.models.weak_base, cfg.models.strong_base, cfg.models.weak_aligned):
        path = resolve(ref, cfg) if ref else None
        if path and (path.startswith(("/", ".")) or Path(path).exists()) and not (Path(path) / "config.json").is_file():
            raise CongError(f"model {ref!r}: {path} is not a Hugging Face model folder (no config.json).")


def run_local(cfg: Config, out_dir: Path) -> dict:
    """Run the whole pipeline locally; copies results.json, report.html and responses.jsonl to `out_dir`."""
    from kfp import local

    from pipelines.pipeline import PIPELINE_NAME, build_pipeline

    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    # Each task writes its component source under TMPDIR and never deletes it; keep that inside the run.
    (out_dir / "tmp").mkdir(exist_ok=True)
    os.environ["TMPDIR"] = str(out_dir / "tmp")
    os.environ.setdefault("HF_HUB_OFFLINE", "1" if cfg.uses_testbed() else "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.monotonic()
    preflight(cfg)
    root = out_dir / "kfp"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    try:
        build_pipeline(cfg)(config=cfg.as_parameter())
    except RuntimeError as exc:
        raise PipelineFailed(f"{exc} The stage's log is above; its partial outputs are under {root}.") from None
    runs = sorted(root.glob(f"{PIPELINE_NAME}-*"), key=lambda p: p.stat().st_mtime)
    results_dir = runs[-1] / "evaluate" / "results"
    for name in RUN_FILES:
        shutil.copyfile(results_dir / name, out_dir / name)
    results = json.loads((out_dir / "results.json").read_text())
    results["run"] = {
        "pipeline_root": str(runs[-1]),
        "seconds": round(time.monotonic() - started, 1),
        "config": cfg.name,
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


class PipelineFailed(Exception):
    """A stage failed at run time (not bad input): exit status 1."""
