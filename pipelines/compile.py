"""Compile the pipeline for a config to KFP IR YAML (the committed one is `pipelines/cong_pipeline.yaml`)."""

from __future__ import annotations

from pathlib import Path

from kfp import compiler

from cong.config import Config
from pipelines.pipeline import build_pipeline

COMMITTED = Path(__file__).with_name("cong_pipeline.yaml")


def compile_pipeline(cfg: Config, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(cfg), str(out))
    return out
