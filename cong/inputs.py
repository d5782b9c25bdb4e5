"""The run's external inputs as the DAG imports them.

The plan task describes every input the config names (`describe`): the reference the user gave, the URI its
importer registers, a digest of its content and, for a model, its tokenizer's vocabulary size. The pipeline
imports each one (dsl.importer) with that metadata, so the Kubeflow UI follows every model and dataset back to
them. Inside a task, `cong.stages.step.imported` gives the stage the config with each input it reads replaced by
what its artifact names.

Importer URIs: an s3:// URI as it is; a hub model id as `hf://org/name` (a scheme KFP's launcher does not
download); a local path made absolute; a reference that every task builds for itself (`testbed:`, `gguf:`, `hf:`)
as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cong.config import Config
from cong.vocabulary import INPUT_FIELDS, MODEL_INPUTS

HUB_SCHEME = "hf://"
SELF_BUILT = ("testbed:", "gguf:", "hf:")
# What the plan says of every input, besides a model's `vocab_size`.
IMPORT_KEYS = ("uri", "reference", "digest")
SECTIONS = {field: section for section, field in INPUT_FIELDS}


def reference(cfg: Config, field: str) -> str | None:
    """The config's reference for an input field (`weak_base`, `train_prompts`, ...); None when it names none."""
    return getattr(getattr(cfg, SECTIONS[field]), field)


def artifact_uri(ref: str) -> str:
    """The URI an importer registers for a reference (see the module's notes)."""
    from cong.storage.folders import HubId, parse_location

    if ref.startswith(("s3://", *SELF_BUILT)):
        return ref
    location = parse_location(ref)
    return HUB_SCHEME + ref if isinstance(location, HubId) else str(Path(location).resolve())


def digest(ref: str, cfg: Config) -> str:
    """`sha256:<hex>` of the content (a file's sha256, or a folder's `listing_digest`, the same whether it is read
    here or from its manifest in the store), or `revision:<commit>` of a hub model; empty when the hub cannot say."""
    from cong.hub import hub_revision
    from cong.refs import resolve
    from cong.storage.folders import HubId, folder_digest, parse_location, sha256_file

    if ref.startswith("s3://"):
        return f"sha256:{_stored_digest(ref)}"
    if not ref.startswith(SELF_BUILT) and isinstance(parse_location(ref), HubId):
        revision = hub_revision(ref)
        return f"revision:{revision}" if revision else ""
    path = Path(parse_location(resolve(ref, cfg)))
    return f"sha256:{sha256_file(path) if path.is_file() else folder_digest(path)}"


def _stored_digest(uri: str) -> str:
    """The digest of a published folder, or of one file of one, read from the folder's manifest."""
    from cong.storage.folders import NotPublished, find_manifest, parse_s3_uri

    manifest = find_manifest(uri)
    if manifest is not None:
        return manifest.content_digest
    folder, _, name = uri.rstrip("/").rpartition("/")
    holder = find_manifest(parse_s3_uri(folder)) if folder.count("/") >= 3 else None
    files = {entry.path: entry.sha256 for entry in holder.files} if holder else {}
    if name not in files:
        raise NotPublished(f"{uri} is not published: no manifest names it. Publish it (again) or fix the URI.")
    return files[name]


def vocabulary_size(ref: str, cfg: Config) -> int:
    """How many tokens the model's tokenizer has. A model in the store lends only its small files for this (its
    config and tokenizer), never its weights."""
    import tempfile

    from transformers import AutoTokenizer

    from cong.refs import resolve
    from cong.storage.folders import fetch_light

    if ref.startswith("s3://"):
        with tempfile.TemporaryDirectory(prefix="cong-tokenizer-") as folder:
            return len(AutoTokenizer.from_pretrained(fetch_light(ref, Path(folder))))
    return len(AutoTokenizer.from_pretrained(resolve(ref, cfg, weights=False)))


def describe(cfg: Config, field: str) -> dict[str, Any]:
    """An input's importer metadata: `reference` (as the user gave it, before `cong run` published a local one),
    `uri`, `digest`, and for a model `vocab_size`."""
    ref = reference(cfg, field)
    described: dict[str, Any] = {
        "reference": cfg.input_origins.get(field, ref),
        "uri": artifact_uri(ref),
        "digest": digest(ref, cfg),
    }
    if field in MODEL_INPUTS:
        described["vocab_size"] = vocabulary_size(ref, cfg)
    return described
