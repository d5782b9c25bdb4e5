"""Inputs that only the machine starting a run can read, put into the run's store first.

A local run (`cong run --local`) publishes every input that resolves to files here (the testbed's models and prompts,
a GGUF conversion, a folder of yours) under `<store>/inputs/<field>-<content digest>/`, once per content, and the
config its pipeline gets names those URIs. `cong submit` and `cong schedule` do the same for the files the cluster
cannot read (a folder or file of yours, a GGUF file); the testbed, the hub and the store the cluster's `fetch` task
reaches itself (cong.inputs.fetch).
"""

from __future__ import annotations

from pathlib import Path

from cong.config import Config, config_from_dict
from cong.inputs.fetch import SELF_BUILT, publish_input
from cong.vocabulary import INPUT_FIELDS


def local_inputs(cfg: Config, testbed: bool = True) -> dict[str, str]:
    """The config's inputs (field -> reference) that resolve to files on this machine: paths and GGUF references, and
    with `testbed` the testbed's; not hub references or inputs already in a store."""
    from cong.storage.folders import HubId, parse_location

    found = {}
    for section, field in INPUT_FIELDS:
        ref = getattr(getattr(cfg, section), field)
        if ref is None or ref.startswith(("s3://", "minio://", "hf:")):
            continue
        if ref.startswith("testbed:") and not testbed:
            continue
        if ref.startswith(SELF_BUILT) or not isinstance(parse_location(ref), HubId):
            found[field] = ref
    return found


def import_inputs(cfg: Config, testbed: bool = True) -> tuple[Config, dict[str, dict[str, str]]]:
    """Publish the config's `local_inputs` to its store (`storage`, located by its pipeline root), each once per
    content; returns the config naming them by URI, and per input field where it came from and where it is now."""
    from cong.inputs.refs import resolve
    from cong.storage.s3 import ensure_bucket

    storage = cfg.storage.located(cfg.pipeline_root)
    raw = cfg.model_dump(mode="json")
    imported = {}
    for field, ref in local_inputs(cfg, testbed).items():
        if not imported:
            ensure_bucket(storage.bucket)
        uri = publish_input(Path(resolve(ref, cfg)), field, storage)
        section = next(section for section, name in INPUT_FIELDS if name == field)
        raw[section][field] = uri
        raw["input_origins"][field] = ref
        imported[field] = {"from": ref, "uri": uri}
    return config_from_dict(raw), imported
