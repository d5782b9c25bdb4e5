"""weak_align: on-policy preference data from the weak base model, then DPO -> the aligned weak model.

SimPO recipe (method.md section 2.1-2.2): several samples per prompt from pi_ref, scored by the reward
backend; chosen = best, rejected = worst. Prompts whose samples are all identical are dropped, and so are
prompts whose samples all score the same: best and worst would then be an arbitrary, often identical, pair.

After DPO, the weak pair's gates (cong.evaluation.gates) are measured on fresh samples of both models on the same
prompts, before any method uses the pair.
"""

from __future__ import annotations

from pathlib import Path

from cong.config import WeakAlignSettings
from cong.data import PROMPT_FIELDS, read_jsonl, write_jsonl
from cong.decoding.sampler import Sampler
from cong.errors import CongError
from cong.evaluation import gates
from cong.evaluation.rewards import ImplicitReward, reward_backend
from cong.progress import log

STAGE = "weak_align"


def preference_pairs(
    weak_base: str, prompts_path: str, settings: WeakAlignSettings, max_prompts: int | None = None
) -> tuple[list[dict], dict[str, float]]:
    rows = read_jsonl(prompts_path, PROMPT_FIELDS, max_prompts)
    backend = reward_backend(settings)
    sampler = Sampler(weak_base)
    samples: list[list[str]] = []
    for i, seed in enumerate(settings.sample_seeds):
        log(STAGE, f"sample set {i + 1}/{len(settings.sample_seeds)} (seed {seed})")
        sampling = settings.sampling.model_copy(update={"seed": seed})
        samples.append(sampler(rows, sampling, STAGE))
    pairs, margins = [], []
    for j, row in enumerate(rows):
        candidates = [s[j] for s in samples]
        scores = backend.score([row["prompt"]] * len(candidates), candidates)
        best = max(range(len(candidates)), key=scores.__getitem__)
        worst = min(range(len(candidates)), key=scores.__getitem__)
        if scores[best] == scores[worst]:
            continue
        pairs.append(
            {
                "id": row["id"],
                "prompt": row["prompt"],
                "chosen": candidates[best],
                "rejected": candidates[worst],
                "chosen_reward": scores[best],
                "rejected_reward": scores[worst],
            }
        )
        margins.append(scores[best] - scores[worst])
    if not pairs:
        raise CongError(
            f"weak_align: the samples of {weak_base} score the same under the reward for every prompt of "
            f"{prompts_path}; there is no preference signal. Raise the sampling temperature or add prompts."
        )
    metrics = {
        "prompts": float(len(rows)),
        "pairs": float(len(pairs)),
        "dropped_no_preference": float(len(rows) - len(pairs)),
        "mean_reward_margin": sum(margins) / len(margins),
    }
    return pairs, metrics


def sample_pairs(
    weak_base: str, prompts_path: str, pairs_path: Path, settings: WeakAlignSettings, max_prompts: int | None = None
) -> dict[str, float]:
    """The first half of weak_align: write the preference pairs that its DPO trains on."""
    pairs, metrics = preference_pairs(weak_base, prompts_path, settings, max_prompts)
    write_jsonl(pairs_path, pairs)
    log(STAGE, f"{len(pairs)} preference pairs; DPO of the weak base model")
    return metrics


def with_train_metrics(metrics: dict[str, float], train_metrics: dict[str, float]) -> dict[str, float]:
    return {**metrics, **{f"train_{k}": v for k, v in train_metrics.items()}}


def weak_pair_gates(
    weak_base: str, weak_aligned: str, prompts_path: str, settings: WeakAlignSettings, max_prompts: int | None = None
) -> list[dict]:
    """The weak pair's gates: one sample per prompt from each model (the first sample seed), scored by the explicit
    reward and the pair's implicit reward; the KL on the aligned model's samples."""
    rows = read_jsonl(prompts_path, PROMPT_FIELDS, max_prompts)
    prompts = [row["prompt"] for row in rows]
    sampling = settings.sampling.model_copy(update={"seed": settings.sample_seeds[0]})
    log(STAGE, "gates: one sample per prompt from the weak base and the aligned weak model")
    base, aligned = (Sampler(model)(rows, sampling, STAGE) for model in (weak_base, weak_aligned))
    backend = reward_backend(settings)
    base_rewards, aligned_rewards = backend.score(prompts, base), backend.score(prompts, aligned)
    pair = ImplicitReward.load(weak_base, weak_aligned, batch_size=settings.sampling.batch_size)
    implicit = pair.score(prompts + prompts, base + aligned)
    measured = [
        gates.weak_signal(aligned_rewards, base_rewards),
        gates.implicit_reward(implicit, base_rewards + aligned_rewards),
        gates.mild_shift(pair.mean_token_kl(prompts, aligned)),
    ]
    for g in measured:
        log(STAGE, f"gate {g.name}: {g.value:.4g} (threshold {g.threshold}) {'passed' if g.passed else 'FAILED'}")
    return [g.as_dict() for g in measured]
