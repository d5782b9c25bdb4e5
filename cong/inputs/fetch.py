"""Each input of a run as a copy in the run's store, which KFP's importers register and its launcher downloads.

KFP's importer parses its URI with `ParseProviderFromPath` and takes only bucket schemes, `s3://`, `gs://`, `minio://`
and `mem://` (kubeflow/pipelines 2.17.0, backend/src/v2/component/importer_launcher.go, objectstore/config.go;
`huggingface://` is in no release up to 2.17.0, nor on master), and the launcher hands its storage session only to
artifacts in the pipeline root's bucket under the pipeline root's scheme (component/launcher_v2.go,
fetchNonDefaultBuckets): an input elsewhere is read with no endpoint and AWS's defaults. So the run's `fetch` task
copies every input it names into the run's store (the pipeline root's, cong.config.StorageSettings.located), once
per content, and hands each importer that copy's URI in the pipeline root's scheme:

- an `s3://` or `minio://` input already in the store's bucket: as it is;
- one in another bucket: copied to `<store>/inputs/<field>-<content digest>/`;
- a hub model (`org/name`, `org/name@<branch, tag or commit>`): the commit the reference stands for now, copied to
  `<store>/inputs/hub/<org>--<name>/<commit>/`, so that a 15 GB model is downloaded once per revision, not per run;
- a hub dataset (`hf:org/name[:split]`): its prompts at the dataset's current commit, in
  `<store>/inputs/hub-datasets/<org>--<name>/<commit>/<split>/<split>.jsonl`;
- a reference a task builds itself (`testbed:`, `gguf:`) or a path inside the task's image: built, then copied to
  `<store>/inputs/<field>-<content digest>/`.

A path on the machine that submitted the run is not here: `cong submit` publishes it first (cong.inputs.publish).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cong.config import Config, StorageSettings
from cong.errors import CongError
from cong.storage.s3 import as_s3
from cong.vocabulary import INPUT_FIELDS

# References a task builds for itself, from the code and data its image holds.
SELF_BUILT = ("testbed:", "gguf:")
SECTIONS = {field: section for section, field in INPUT_FIELDS}
# What transformers loads of a hub model: its config, tokenizer and weights, not other copies of the weights (a
# Llama repository also holds its `original/` checkpoint).
MODEL_FILES = ["*.json", "*.txt", "*.model", "*.tiktoken", "*.jinja"]


@dataclass(frozen=True)
class Fetched:
    """An input as the run imports it: the URI of its copy in the store (`s3://`), the sha256 of its content
    (`sha256:<hex>`: a file's, or a folder's `listing_digest`), and for a hub reference the commit it stood for."""

    uri: str
    digest: str
    revision: str | None = None


def reference(cfg: Config, field: str) -> str | None:
    """The config's reference for an input field (`weak_base`, `train_prompts`, ...); None when it names none."""
    return getattr(getattr(cfg, SECTIONS[field]), field)


def in_root_scheme(uri: str, pipeline_root: str | None) -> str:
    """A store URI (`s3://bucket/key`) as an importer must register it: in the pipeline root's scheme (`minio://` for
    KFP's default root), the only one whose artifacts the launcher reads with the root's session."""
    if pipeline_root and pipeline_root.startswith("minio://") and uri.startswith("s3://"):
        return "minio://" + uri.removeprefix("s3://")
    return uri


def hub_model_uri(store: StorageSettings, repo: str, commit: str) -> str:
    """Where a hub model's revision is kept: one folder per commit, so a later run finds it there."""
    return store.uri("inputs", "hub", repo.replace("/", "--"), commit)


def hub_dataset_uri(store: StorageSettings, name: str, commit: str, split: str) -> str:
    """Where the prompts of a hub dataset's split at one commit are kept."""
    return store.uri("inputs", "hub-datasets", name.replace("/", "--"), commit, split) + f"/{split}.jsonl"


def content_uri(store: StorageSettings, field: str, path: Path) -> str:
    """Where a local input (a folder, or one file) is kept: a folder named by its content, and for a file the file in
    it, so the same content is kept once."""
    from cong.storage.folders import folder_digest

    folder = store.uri("inputs", f"{field}-{folder_digest(path)[:16]}")
    return folder if path.is_dir() else f"{folder}/{path.name}"


def publish_input(path: Path, field: str, store: StorageSettings) -> str:
    """`path` in the store at `content_uri`, uploaded unless that content is there already; returns its URI."""
    from cong.progress import log
    from cong.storage.folders import find_manifest, publish_path

    uri = content_uri(store, field, path)
    folder = uri if path.is_dir() else uri.rpartition("/")[0]
    if find_manifest(folder) is None:
        publish_path(path, folder)
    else:
        log("storage", f"{field}: {path} is already in the store at {folder}")
    return uri


def fetch_input(ref: str, field: str, cfg: Config) -> Fetched:
    """The input `ref` (of the config's `field`) as a copy in the run's store (`cfg.storage`, located), made unless a
    copy of the same content or hub revision is there already."""
    from cong.storage.folders import HubId, parse_location

    store = cfg.storage
    stored = as_s3(ref)
    if stored is not None:
        return _from_store(stored, field, store)
    if ref.startswith("hf:"):
        return _hub_dataset(ref, store)
    if not ref.startswith(SELF_BUILT) and isinstance(parse_location(ref), HubId):
        return _hub_model(ref, store)
    return _built(ref, field, cfg)


def stored_digest(uri: str) -> str:
    """The sha256 of a published folder (its manifest's `content_digest`), or of one file of one."""
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


def _from_store(uri: str, field: str, store: StorageSettings) -> Fetched:
    """An input already in a store: as it is in the store's bucket; from another bucket, which the launcher would read
    without the pipeline root's session, copied in."""
    from cong.storage.folders import MANIFEST_NAME, fetch_dir, find_manifest, localize, parse_s3_uri

    digest = f"sha256:{stored_digest(uri)}"
    if parse_s3_uri(uri).bucket == store.bucket:
        return Fetched(uri, digest)
    if find_manifest(uri) is None:  # one file of a published folder
        return Fetched(publish_input(Path(localize(uri)), field, store), digest)
    with tempfile.TemporaryDirectory(prefix="cong-copy-") as staging:
        folder = fetch_dir(uri, Path(staging) / "copy")
        (folder / MANIFEST_NAME).unlink()  # the copy's own is written when it is published
        return Fetched(publish_input(folder, field, store), digest)


def _hub_model(ref: str, store: StorageSettings) -> Fetched:
    """A hub model at the commit its reference stands for now (a branch moves, a commit does not), copied once."""
    from cong.inputs.hub import hub_revision
    from cong.inputs.refs import pinned
    from cong.storage.folders import find_manifest, publish_dir

    repo, _ = pinned(ref)
    commit = hub_revision(ref)
    if commit is None:
        raise CongError(
            f"cannot tell which commit of {repo} the reference {ref!r} stands for: the hub did not answer and this "
            f"machine's cache holds none. Pin it (`{repo}@<commit>`) with a copy in the cache, or give an s3:// URI."
        )
    target = hub_model_uri(store, repo, commit)
    manifest = find_manifest(target)
    if manifest is None:
        manifest = publish_dir(_download_model(repo, commit), target)
    return Fetched(target, f"sha256:{manifest.content_digest}", commit)


def _download_model(repo: str, commit: str) -> Path:
    """The model's files at `commit` in this machine's Hugging Face cache: its safetensors weights where it has them,
    else its .bin ones."""
    from huggingface_hub import HfApi, constants, snapshot_download

    weights = ["*.safetensors", "*.bin"]
    if not constants.HF_HUB_OFFLINE:
        names = HfApi().list_repo_files(repo, revision=commit)
        weights = ["*.safetensors"] if any(n.endswith(".safetensors") for n in names) else ["*.bin"]
    try:
        return Path(snapshot_download(repo, revision=commit, allow_patterns=MODEL_FILES + weights))
    except Exception as exc:  # the hub client raises many types; the user needs the reason
        raise CongError(f"cannot download {repo} at {commit}: {str(exc).strip().splitlines()[0]}") from None


def _hub_dataset(ref: str, store: StorageSettings) -> Fetched:
    """The prompts of a hub dataset's split at the dataset's current commit, kept once per commit."""
    from cong.inputs.refs import hf_prompts
    from cong.storage.folders import find_manifest, publish_path

    name, _, split = ref.removeprefix("hf:").partition(":")
    split = split or "train"
    commit = _dataset_revision(name)
    uri = hub_dataset_uri(store, name, commit, split)
    folder = uri.rpartition("/")[0]
    if find_manifest(folder) is None:
        with tempfile.TemporaryDirectory(prefix="cong-prompts-") as staging:
            prompts = Path(staging) / f"{split}.jsonl"
            shutil.copyfile(hf_prompts(ref, commit), prompts)
            publish_path(prompts, folder)
    return Fetched(uri, f"sha256:{stored_digest(uri)}", commit)


def _dataset_revision(name: str) -> str:
    from huggingface_hub import HfApi

    from cong.inputs.hub import PROBE_TIMEOUT_S

    try:
        return HfApi().dataset_info(name, timeout=PROBE_TIMEOUT_S).sha
    except Exception as exc:  # the hub client raises many types; the user needs the reason
        raise CongError(
            f"cannot tell which commit of the dataset {name} to take ({str(exc).strip().splitlines()[0]}): give the "
            "prompts as a JSONL file in the store (an s3:// URI) instead."
        ) from None


def _built(ref: str, field: str, cfg: Config) -> Fetched:
    """A reference the task builds (the testbed's models and prompts, a GGUF conversion) or a path in its image."""
    from cong.inputs.refs import resolve

    path = Path(resolve(ref, cfg))
    if not path.exists():
        raise CongError(
            f"{SECTIONS[field]}.{field} {ref!r} is no path this task can read: a file of the machine that submitted "
            "the run stays there. `cong submit` publishes such inputs to the store first (give it the pipeline root "
            "and the store's endpoint and key); or give an s3:// URI."
        )
    # The store's manifest has the digest: publish_input hashed the content once already, to name its folder.
    uri = publish_input(path, field, cfg.storage)
    return Fetched(uri, f"sha256:{stored_digest(uri)}")


def vocabulary_size(uri: str) -> int:
    """How many tokens the tokenizer of the model stored at `uri` has, read from its small files (config and
    tokenizer), never its weights."""
    from transformers import AutoTokenizer

    from cong.storage.folders import fetch_light

    with tempfile.TemporaryDirectory(prefix="cong-tokenizer-") as folder:
        return len(AutoTokenizer.from_pretrained(fetch_light(uri, Path(folder))))
