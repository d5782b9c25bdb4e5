"""Compile the pipeline for a config to KFP IR YAML (the committed one is `pipelines/cong_pipeline.yaml`)."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kfp import compiler

from cong.config import Config
from pipelines.pipeline import build_pipeline

COMMITTED = Path(__file__).with_name("cong_pipeline.yaml")


def compile_pipeline(cfg: Config, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    # kfp's task setters (set_cpu_limit, ...) each call inspect.stack(), which looks up the module and source of every
    # frame of the caller's stack: called under pytest, one compile took 12.7 s, and 1.1 s in a thread of its own,
    # whose stack is a few frames deep.
    with ThreadPoolExecutor(max_workers=1) as thread:
        thread.submit(_compile, cfg, out).result()
    # kfp prints the dict default into the header comment in protobuf map order, which changes from one
    # process to the next; the value itself is in root.inputDefinitions, so the comment points there.
    text = re.sub(
        r"^(#\s+config: dict) \[Default: .*\]$",
        r"\1 [Default: see root.inputDefinitions]",
        out.read_text(),
        count=1,
        flags=re.M,
    )
    out.write_text(text)
    return out


def _compile(cfg: Config, out: Path) -> None:
    compiler.Compiler().compile(build_pipeline(cfg), str(out))
