"""Resolve the references a config uses for models and data to something loadable.

`testbed:weak|strong|train|eval` -> the built testbed's folders (built on first use, then cached);
`hf:<dataset>[:<split>]` -> a JSONL file of `id`/`prompt` rows made from a Hugging Face dataset;
anything else (a local path or a Hugging Face model id) is used as it is.
"""

from __future__ import annotations

import hashlib

from cong.config import Config
from cong.errors import CongError


def resolve(ref: str, config: Config) -> str:
    if ref.startswith("testbed:"):
        from cong.testbed import TESTBED_REFS, build_testbed

        if ref not in TESTBED_REFS:
            raise CongError(f"unknown testbed reference {ref!r}; use one of {', '.join(TESTBED_REFS)}.")
        return str(build_testbed(config.testbed) / TESTBED_REFS[ref])
    if ref.startswith("hf:"):
        return _hf_prompts(ref)
    return ref


def _hf_prompts(ref: str) -> str:
    """Prompts of a Hugging Face dataset with a `prompt` column, written once to the local cache."""
    from datasets import load_dataset

    from cong.data import write_jsonl
    from cong.testbed.build import cache_root

    name, _, split = ref.removeprefix("hf:").partition(":")
    split = split or "train"
    out = cache_root() / "datasets" / (hashlib.sha256(ref.encode()).hexdigest()[:16] + ".jsonl")
    if not out.is_file():
        try:
            dataset = load_dataset(name, split=split)
        except Exception as exc:  # the hub client raises many types; the user needs the reason, not the type
            raise CongError(f"cannot load the dataset {ref!r}: {exc}") from None
        if "prompt" not in dataset.column_names:
            raise CongError(f"the dataset {ref!r} has no 'prompt' column (columns: {dataset.column_names}).")
        write_jsonl(
            out,
            ({"id": row.get("prompt_id") or f"{split}-{i}", "prompt": row["prompt"]} for i, row in enumerate(dataset)),
        )
    return str(out)
