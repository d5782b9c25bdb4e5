"""`cong bench cd`: contrastive-decoding throughput of the engine against the released code's way and the
single-model limit, on the same prompts, lengths and models.

Rows: `reference` (one prompt at a time, both models with KV caches: cong.decoding.reference), `naive` (HF
generate with the amateur re-run over the whole prefix each step), `cong` at each batch size (the engine,
cong.decoding.generate), `cong_lora` (the engine on one shared-weight model when the expert is the amateur plus
a LoRA adapter: cong.decoding.shared_lora), and `single` (plain decoding from the expert alone at the same batch
sizes: what two models of that size cannot beat). Every row decodes greedily and exactly `max_new_tokens` tokens
per prompt (end-of-sequence never stops a row), so tokens per second compare like with like; each figure is the
median of `repeats` timed runs after one untimed warm-up, and at each batch size the methods (the reference
included) take turns run by run, so that a slow spell of a shared machine does not fall on one method only;
every ratio is the median of the per-turn ratios. The bench also checks that the engine's tokens equal the
reference's, prompt by prompt.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from cong.progress import log

if TYPE_CHECKING:
    from cong.decoding.contrastive import CdParams

STAGE = "bench"
# Rows end only at max_new_tokens: an id no tokenizer has stands in for end-of-sequence.
NEVER = -1


@dataclass(frozen=True)
class Row:
    method: str
    batch_size: int
    prompts: int
    new_tokens: int
    seconds: float
    tokens_per_s: float
    ms_per_prompt: float
    peak_mem_mb: float


class PeakMemory:
    """Peak memory while a block runs: CUDA's allocator peak, or on CPU this process's whole resident set
    (sampled every 5 ms; it includes both models and what earlier rows left cached)."""

    def __init__(self, device: str):
        self.device, self.peak = device, 0

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> PeakMemory:
        import torch

        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            return self
        self.peak, self._stop = self._rss(), threading.Event()

        def sample() -> None:
            while not self._stop.wait(0.005):
                self.peak = max(self.peak, self._rss())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()

    @property
    def mb(self) -> float:
        return self.peak / 2**20


class Timing(NamedTuple):
    seconds: list[float]  # one per repetition
    peak_mb: float
    result: Any  # the last run's

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def _timed(runs: dict[str, Callable[[], Any]], repeats: int, device: str) -> dict[str, Timing]:
    """Each run timed `repeats` times after one untimed warm-up; the runs take turns."""
    import torch

    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    peaks: dict[str, float] = dict.fromkeys(runs, 0.0)
    results: dict[str, Any] = {}
    for _ in range(repeats):
        for name, run in runs.items():
            with PeakMemory(device) as memory:
                start = time.perf_counter()
                results[name] = run()
                if device == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
            peaks[name] = max(peaks[name], memory.mb)
    return {name: Timing(times[name], peaks[name], results[name]) for name in runs}


def random_lora_expert(base_ref: str, folder: Path, rank: int = 16, seed: int = 0) -> str:
    """An expert for the bench when the config has no aligned weak model: the base plus a random LoRA adapter
    on every linear layer, saved merged with the adapter beside it (as cong.training.trainers saves a LoRA model)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from cong.models import ADAPTER_DIR, load_model, load_plain_tokenizer

    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules="all-linear", init_lora_weights=False)
    model = get_peft_model(load_model(base_ref), config)
    model.save_pretrained(folder / ADAPTER_DIR)
    model.merge_and_unload().save_pretrained(folder)
    load_plain_tokenizer(base_ref).save_pretrained(folder)
    return str(folder)


def run_bench(
    expert_ref: str,
    amateur_ref: str,
    prompts: list[str],
    *,
    max_new_tokens: int = 64,
    batch_sizes: tuple[int, ...] = (1, 8, 32, 64),
    reference_prompts: int = 8,
    repeats: int = 5,
    cd: CdParams,
    model_name: str | None = None,
) -> dict[str, Any]:
    """The bench's rows and the ratios cong/reference, cong/single and cong_lora/single per batch size (see
    the module doc). `cong_lora` rows need an expert that keeps its LoRA adapter (cong.models.adapter_of)."""
    from cong.decoding.generate import DecodeParams, decode
    from cong.decoding.reference import naive_decode, reference_decode
    from cong.decoding.shared_lora import load_shared_pair
    from cong.models import adapter_of, device, load_model, load_tokenizer, prompt_ids

    tokenizer = load_tokenizer(expert_ref)
    expert, amateur = load_model(expert_ref), load_model(amateur_ref)
    adapter = adapter_of(expert_ref)
    shared = load_shared_pair(amateur_ref, adapter) if adapter else None
    if shared is None:
        log(STAGE, f"no cong_lora rows: {expert_ref} keeps no LoRA adapter")
    where = device()
    ids = prompt_ids(tokenizer, prompts)
    few = ids[:reference_prompts]
    params = DecodeParams(max_new_tokens=max_new_tokens, greedy=True)
    rows: list[Row] = []

    def add(method: str, batch_size: int, count: int, seconds: float, peak: float) -> None:
        tokens = count * max_new_tokens
        rows.append(Row(method, batch_size, count, tokens, seconds, tokens / seconds, 1000 * seconds / count, peak))
        log(STAGE, f"{method} (batch {batch_size}): {tokens / seconds:.1f} tokens/s, {peak:.0f} MB peak")

    def engine(method: str, batch_size: int, prompt_set: list[list[int]]):
        models = {
            "cong": {"expert": expert, "amateur": amateur, "cd": cd},
            "cong_lora": {"expert": shared, "shared": True, "cd": cd},
            "single": {"expert": expert},
        }[method]
        return lambda: decode(
            prompts=prompt_set,
            params=params,
            eos_token_ids=[NEVER],
            pad_token_id=tokenizer.pad_token_id,
            batch_size=batch_size,
            **models,
        )

    one_at_a_time = {
        "reference": lambda: [reference_decode(expert, amateur, p, params, [NEVER], i, cd) for i, p in enumerate(few)],
        "naive": lambda: [naive_decode(expert, amateur, p, max_new_tokens, tokenizer.pad_token_id, cd) for p in few],
    }
    timed = _timed(one_at_a_time, repeats, where)
    for method, timing in timed.items():
        add(method, 1, len(few), timing.median, timing.peak_mb)
    methods = ["cong", "cong_lora", "single"] if shared is not None else ["cong", "single"]
    engine_modes = [m for m in methods if m != "single"]
    same = {m: engine(m, 1, few)() == timed["reference"].result for m in engine_modes}
    ratios: dict[str, dict[str, float]] = {}
    for batch_size in batch_sizes:
        # The reference takes its turn too, so that every ratio compares runs made back to back.
        runs = {m: engine(m, batch_size, ids) for m in methods} | {"reference": one_at_a_time["reference"]}
        timed = _timed(runs, repeats, where)
        for method in methods:
            add(method, batch_size, len(ids), timed[method].median, timed[method].peak_mb)
        # Ratios of throughput: the median of the ratios of runs made back to back, which a slow spell of the
        # machine affects less than a ratio of medians does.
        reference = [t * len(ids) / len(few) for t in timed["reference"].seconds]
        ratios[str(batch_size)] = {"cong/reference": _median_ratio(reference, timed["cong"].seconds)} | {
            f"{m}/single": _median_ratio(timed["single"].seconds, timed[m].seconds) for m in engine_modes
        }

    return {
        "device": _device_name(where),
        "model": model_name or f"expert {expert_ref}, amateur {amateur_ref}",
        "max_new_tokens": max_new_tokens,
        "repeats": repeats,
        "same_tokens_as_reference": same,
        "rows": [asdict(r) for r in rows],
        "ratios": ratios,
    }


def _median_ratio(baseline: list[float], seconds: list[float]) -> float:
    """How many times faster than `baseline` a method ran, turn by turn (both in seconds for the same tokens)."""
    return statistics.median(b / t for b, t in zip(baseline, seconds, strict=True))


def _device_name(where: str) -> str:
    import torch

    if where == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu ({torch.get_num_threads()} threads)"


def format_bench(result: dict[str, Any]) -> str:
    lines = [f"{'method':<10} {'batch':>5} {'tokens/s':>10} {'ms/prompt':>10} {'peak MB':>9}"]
    for r in result["rows"]:
        lines.append(
            f"{r['method']:<10} {r['batch_size']:>5} {r['tokens_per_s']:>10.1f} {r['ms_per_prompt']:>10.1f} "
            f"{r['peak_mem_mb']:>9.1f}"
        )
    names = list(next(iter(result["ratios"].values())))
    lines.append("")
    lines.append(f"{'batch':>5} " + " ".join(f"{n:>17}" for n in names))
    for batch, ratio in result["ratios"].items():
        lines.append(f"{batch:>5} " + " ".join(f"{ratio[n]:>17.2f}" for n in names))
    same = ", ".join(f"{m}: {v}" for m, v in result["same_tokens_as_reference"].items())
    lines.append(
        f"\n{result['device']}; {result['model']}; greedy, {result['max_new_tokens']} new tokens per prompt, "
        f"median of {result['repeats']}; engine tokens equal the reference's ({same})"
    )
    return "\n".join(lines)


def write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
