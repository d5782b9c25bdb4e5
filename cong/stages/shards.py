"""Sampling stages split over pods: each shard's share of the prompts, its finished batches kept across
restarts, and the merge that checks every prompt came back exactly once.

The split. A stage's prompts (in file order) are tokenized as its model sees them, ordered by token length
(ties in file order) and cut into batches of `sampling.batch_size`: the batches one unsplit call decodes
(`cong.decoding.generate.length_batches`). Shard i of n takes batches i, i + n, i + 2n, ... Whole batches
keep each prompt's padding, and left padding moves a row's logits by float rounding, so this is what makes a
prompt's response bitwise the same for any shard count; its generator is seeded by the sampling seed and the
prompt's id (`cong.decoding.sampler.row_seed`), never by its place. Interleaving gives every shard short and long
prompts. A shard beyond the number of batches has nothing to do.

Resume. A shard writes each finished batch whole, as one JSONL object `batch-<number>.jsonl` (id, prompt,
response rows) under a progress location: `s3://<bucket>/<prefix>/progress/<run id>/<stage>/shard-<i>-of-<n>/`
in a pipeline run (one PUT per batch, so a pod killed mid-write leaves no partial batch), or a local folder
(written, then renamed). A restarted shard of the same run (a KFP retry keeps the run id) decodes only the
batches missing there, so the stage's dataset is the one an uninterrupted run writes. The merge deletes the
stage's progress after writing the dataset; the shards cannot, since their outputs reach the store only after
they return.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from cong.config import Config, SamplingSettings, StorageSettings
from cong.data import PROMPT_FIELDS, RESPONSE_FIELDS, read_jsonl, write_jsonl
from cong.errors import CongError
from cong.progress import Eta, log
from cong.storage.s3 import S3Settings
from cong.vocabulary import SHARDED_STAGES

if TYPE_CHECKING:
    from cong.decoding.contrastive import CdParams

BATCH_FILE = "batch-{:06d}.jsonl"
# How many ids an error message lists before it says how many more there are.
SHOWN_IDS = 10


@dataclasses.dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`; `progress` (a folder or an s3:// prefix) keeps its finished batches."""

    index: int = 0
    count: int = 1
    progress: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise CongError(f"shard {self.index} of {self.count}: a shard index runs from 0 to {self.count - 1}.")


def shard_items(cfg: Config) -> dict[str, list[int]]:
    """The plan's outputs that the pipeline's dsl.ParallelFor loops iterate: each sampling stage's shard indices."""
    return {f"{stage}_shards": list(range(getattr(cfg.stages, stage).shards)) for stage in SHARDED_STAGES}


def progress_location(storage: StorageSettings, run_id: str, stage: str) -> str:
    """Where a run's shards of `stage` keep their finished batches (one folder per shard under it)."""
    return storage.uri("progress", run_id, stage)


def shard_progress(location: str, index: int, count: int) -> str:
    return f"{location.rstrip('/')}/shard-{index}-of-{count}"


def shard_batches(lengths: list[int], batch_size: int, shard: Shard) -> list[tuple[int, list[int]]]:
    """This shard's batches as (batch number, prompt indices): every `count`-th batch of the unsplit order."""
    from cong.decoding.generate import length_batches

    batches = list(enumerate(length_batches(lengths, batch_size)))
    return batches[shard.index :: shard.count]


class FinishedBatches:
    """One shard's finished batches, one JSONL file per batch, in a local folder or under an s3:// prefix."""

    def __init__(self, location: str, settings: S3Settings | None = None):
        self.location = location.rstrip("/")
        if self.in_s3:
            from cong.storage.s3 import parse_s3_uri

            self.settings = settings or S3Settings.from_env()
            self.target = parse_s3_uri(self.location)
            self.client = self.settings.client()

    @property
    def in_s3(self) -> bool:
        return self.location.startswith("s3://")

    def load(self) -> dict[int, list[dict[str, Any]]]:
        """Rows per batch number of every batch saved so far."""
        texts: dict[str, str] = {}
        if self.in_s3:
            for key in self._keys():
                texts[key.rsplit("/", 1)[-1]] = self._s3("reading", lambda k=key: self._get(k))
        elif Path(self.location).is_dir():
            texts = {p.name: p.read_text() for p in Path(self.location).glob("batch-*.jsonl")}
        return {
            int(name.removeprefix("batch-").removesuffix(".jsonl")): [json.loads(line) for line in text.splitlines()]
            for name, text in texts.items()
        }

    def save(self, number: int, rows: list[dict[str, Any]]) -> None:
        name = BATCH_FILE.format(number)
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        if self.in_s3:
            key, body = self.target.key(name), text.encode()
            self._s3("writing", lambda: self.client.put_object(Bucket=self.target.bucket, Key=key, Body=body))
            return
        folder = Path(self.location)
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{name}.partial-{os.getpid()}"
        partial.write_text(text)
        partial.replace(folder / name)

    def clear(self) -> None:
        """Delete every batch saved under the location (all shards, when it is a stage's location)."""
        if not self.in_s3:
            shutil.rmtree(self.location, ignore_errors=True)
            return
        keys = self._keys()
        for start in range(0, len(keys), 1000):  # the most one DeleteObjects request takes
            chunk = {"Objects": [{"Key": k} for k in keys[start : start + 1000]], "Quiet": True}
            self._s3("deleting", lambda c=chunk: self.client.delete_objects(Bucket=self.target.bucket, Delete=c))

    def _keys(self) -> list[str]:
        def listing() -> list[str]:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.target.bucket, Prefix=self.target.key("")
            )
            return [item["Key"] for page in pages for item in page.get("Contents", [])]

        return self._s3("listing", listing)

    def _get(self, key: str) -> str:
        return self.client.get_object(Bucket=self.target.bucket, Key=key)["Body"].read().decode()

    def _s3(self, doing: str, call):
        from cong.storage.s3 import storage_error

        try:
            return call()
        except Exception as exc:
            what = f"{doing} finished batches at {self.location}"
            raise storage_error(exc, self.settings, what, self.target.bucket) from None


class ShardOutput(NamedTuple):
    rows: list[dict[str, Any]]  # this shard's prompt rows, in file order
    responses: list[str]
    resumed_batches: int


def sample_shard(
    sampler,
    rows: list[dict[str, Any]],
    sampling: SamplingSettings,
    stage: str,
    shard: Shard,
    cd: CdParams | None = None,
) -> ShardOutput:
    """Responses to this shard's share of `rows` from a `cong.decoding.sampler.Sampler`, batch by batch, each finished
    batch saved to `shard.progress` and none decoded again that is there already."""
    from cong.decoding.sampler import row_seed

    ids = sampler.tokenize(rows)
    mine = shard_batches([len(i) for i in ids], sampling.batch_size, shard)
    if not mine:
        log(stage, f"shard {shard.index} of {shard.count} has no prompts: {len(rows)} prompts make fewer batches")
    store = FinishedBatches(shard.progress) if shard.progress else None
    saved = store.load() if store else {}
    responses: dict[int, str] = {}
    todo = []
    for number, batch in mine:
        kept = saved.get(number)
        # A saved batch counts only if it holds exactly this batch's prompts (the same run, the same plan).
        if kept is not None and [r["id"] for r in kept] == [rows[i]["id"] for i in batch]:
            responses.update(zip(batch, (r["response"] for r in kept), strict=True))
        else:
            todo.append((number, batch))
    resumed = len(mine) - len(todo)
    if resumed:
        log(stage, f"shard {shard.index} of {shard.count}: {resumed} of {len(mine)} batches were done before")
    what = "prompts decoded" if shard.count == 1 else f"shard {shard.index} of {shard.count}: prompts decoded"
    eta = Eta(stage, what, sum(len(b) for _, b in todo))
    decoded = 0
    for number, batch in todo:
        seeds = [row_seed(sampling.seed, rows[i]["id"]) for i in batch]
        texts = sampler.decode([ids[i] for i in batch], seeds, sampling, cd)
        finished = list(zip(batch, texts, strict=True))
        if store:
            store.save(number, [{"id": rows[i]["id"], "prompt": rows[i]["prompt"], "response": y} for i, y in finished])
        responses.update(finished)
        decoded += len(batch)
        eta.update(decoded)
    order = sorted(responses)
    return ShardOutput([rows[i] for i in order], [responses[i] for i in order], resumed)


def response_stats(responses: list[str]) -> dict[str, float]:
    """Row count and response lengths of a stage's (or a shard's) responses."""
    words = [len(y.split()) for y in responses]
    return {
        "rows": float(len(responses)),
        "mean_response_words": sum(words) / len(words) if words else 0.0,
        "empty_responses": float(sum(not y for y in responses)),
    }


def _listed(ids: list[str]) -> str:
    more = f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else ""
    return ", ".join(repr(i) for i in ids[:SHOWN_IDS]) + more


def merge(
    prompts_path: str, max_prompts: int | None, shard_paths: list[str], out_path: Path, stage: str
) -> dict[str, float]:
    """One dataset from the shards' responses, in the prompt file's order; every prompt id of the stage's
    prompt set must come back from exactly one shard."""
    prompts = read_jsonl(prompts_path, PROMPT_FIELDS, max_prompts)
    found: dict[str, dict[str, Any]] = {}
    duplicates: list[str] = []
    for path in shard_paths:
        # A shard beyond the number of batches writes an empty file.
        for row in read_jsonl(path, RESPONSE_FIELDS) if Path(path).stat().st_size else []:
            if row["id"] in found:
                duplicates.append(row["id"])
            found[row["id"]] = row
    expected = [p["id"] for p in prompts]
    missing = [i for i in expected if i not in found]
    unknown = sorted(set(found) - set(expected))
    problems = [
        f"{what} {len(ids)} id(s): {_listed(ids)}"
        for what, ids in (("missing", missing), ("duplicate", duplicates), ("not in the prompt set", unknown))
        if ids
    ]
    if problems:
        raise CongError(
            f"{stage}: the {len(shard_paths)} shard(s) do not hold every prompt of {prompts_path} exactly once: "
            f"{'; '.join(problems)}. Every shard must read the same prompt set and config (stages.{stage}.shards); "
            "run the stage again."
        )
    rows = [found[i] for i in expected]
    write_jsonl(out_path, ({"id": r["id"], "prompt": r["prompt"], "response": r["response"]} for r in rows))
    log(stage, f"merged {len(shard_paths)} shard(s): {len(rows)} responses")
    return {**response_stats([r["response"] for r in rows]), "shards": float(len(shard_paths))}
