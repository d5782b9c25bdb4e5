"""`cong bench cd`: contrastive-decoding throughput of the engine against the released code's way and the
single-model limit, on the same prompts, lengths and models.

Rows: `reference` (one prompt at a time, both models with KV caches: cong.decoding.reference), `naive` (HF
generate with the amateur re-run over the whole prefix each step), `cong` at each batch size (the engine,
cong.decoding.generate), and `single` (plain decoding from the expert alone at the same batch sizes: what two
models of that size cannot beat). Every row decodes greedily and exactly `max_new_tokens` tokens per prompt
(end-of-sequence never stops a row), so tokens per second compare like with like; each figure is the median of
`repeats` timed runs after one untimed warm-up. The bench also checks that the engine's tokens equal the
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
from typing import Any

from cong.progress import log

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


def _timed(run: Callable[[], Any], repeats: int, device: str) -> tuple[float, float, Any]:
    """(median seconds, peak MB of the timed runs, the last result) after one untimed warm-up."""
    import torch

    run()
    times, peaks, result = [], [], None
    for _ in range(repeats):
        with PeakMemory(device) as memory:
            start = time.perf_counter()
            result = run()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        peaks.append(memory.mb)
    return statistics.median(times), max(peaks), result


def run_bench(
    expert_ref: str,
    amateur_ref: str,
    prompts: list[str],
    *,
    max_new_tokens: int = 64,
    batch_sizes: tuple[int, ...] = (1, 8, 32, 64),
    reference_prompts: int = 8,
    repeats: int = 3,
    alpha: float = 0.4,
    relative_top: float = 0.1,
) -> dict[str, Any]:
    """The bench's rows and the ratios cong/reference and cong/single per batch size (see the module doc)."""
    from cong.decoding.generate import DecodeParams, decode
    from cong.decoding.reference import naive_decode, reference_decode
    from cong.models import device, load_model, load_tokenizer, prompt_ids

    tokenizer = load_tokenizer(expert_ref)
    expert, amateur = load_model(expert_ref), load_model(amateur_ref)
    where = device()
    ids = prompt_ids(tokenizer, prompts)
    few = ids[:reference_prompts]
    params = DecodeParams(max_new_tokens=max_new_tokens, greedy=True)
    cd = {"amateur": amateur, "alpha": alpha, "relative_top": relative_top}
    rows: list[Row] = []

    def add(method: str, batch_size: int, count: int, seconds: float, peak: float) -> None:
        tokens = count * max_new_tokens
        rows.append(Row(method, batch_size, count, tokens, seconds, tokens / seconds, 1000 * seconds / count, peak))
        log(STAGE, f"{method} (batch {batch_size}): {tokens / seconds:.1f} tokens/s, {peak:.0f} MB peak")

    def engine(batch_size: int, prompt_set: list[list[int]], pair: bool):
        return lambda: decode(
            expert,
            prompt_set,
            params,
            eos_token_ids=[NEVER],
            pad_token_id=tokenizer.pad_token_id,
            batch_size=batch_size,
            **(cd if pair else {}),
        )

    seconds, peak, reference = _timed(
        lambda: [
            reference_decode(expert, amateur, p, params, [NEVER], i, alpha, relative_top) for i, p in enumerate(few)
        ],
        repeats,
        where,
    )
    add("reference", 1, len(few), seconds, peak)
    seconds, peak, _ = _timed(
        lambda: [
            naive_decode(expert, amateur, p, max_new_tokens, tokenizer.pad_token_id, alpha, relative_top) for p in few
        ],
        repeats,
        where,
    )
    add("naive", 1, len(few), seconds, peak)
    same = engine(1, few, pair=True)() == reference
    for batch_size in batch_sizes:
        seconds, peak, _ = _timed(engine(batch_size, ids, pair=True), repeats, where)
        add("cong", batch_size, len(ids), seconds, peak)
        seconds, peak, _ = _timed(engine(batch_size, ids, pair=False), repeats, where)
        add("single", batch_size, len(ids), seconds, peak)

    speed = {(r.method, r.batch_size): r.tokens_per_s for r in rows}
    ratios = {
        str(b): {
            "cong/reference": speed[("cong", b)] / speed[("reference", 1)],
            "cong/single": speed[("cong", b)] / speed[("single", b)],
        }
        for b in batch_sizes
    }
    return {
        "device": _device_name(where),
        "model": f"expert {expert_ref}, amateur {amateur_ref}",
        "max_new_tokens": max_new_tokens,
        "repeats": repeats,
        "same_tokens_as_reference": same,
        "rows": [asdict(r) for r in rows],
        "ratios": ratios,
    }


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
    lines.append("")
    lines.append(f"{'batch':>5} {'cong/reference':>15} {'cong/single':>12}")
    for batch, ratio in result["ratios"].items():
        lines.append(f"{batch:>5} {ratio['cong/reference']:>15.2f} {ratio['cong/single']:>12.2f}")
    lines.append(
        f"\n{result['device']}; {result['model']}; greedy, {result['max_new_tokens']} new tokens per prompt, "
        f"median of {result['repeats']}; engine tokens equal the reference's: {result['same_tokens_as_reference']}"
    )
    return "\n".join(lines)


def write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
