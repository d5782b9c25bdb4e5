"""weak_align: on-policy preference data from the weak base model, then DPO -> the aligned weak model.

SimPO recipe (method.md section 2.1-2.2): several samples per prompt from pi_ref, scored by the reward
backend; chosen = best, rejected = worst. Prompts whose samples are all identical are dropped, and so are
prompts whose samples all score the same: best and worst would then be an arbitrary, often identical, pair.

After DPO, the weak pair's gates (cong.evaluation.gates) are measured on fresh samples of both models on the same
prompts, before any method uses the pair.
"""

from __future__ import annotations

from pathlib import Path

from cong.config import Config, WeakAlignSettings, config_from_dict
from cong.data import PROMPT_FIELDS, read_jsonl, write_jsonl
from cong.decoding.sampler import Sampler
from cong.errors import CongError, stage_step
from cong.evaluation import gates
from cong.evaluation.rewards import ImplicitReward, reward_backend
from cong.inputs.refs import resolve
from cong.progress import log
from cong.stages.dpo import dpo
from cong.stages.step import StepResult, lineage, rewards, train_stage
from cong.storage.handoff import hand_over, model_dir
from cong.training.checkpoints import checkpoint_uri

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


def train(
    cfg: Config, inputs: dict[str, str], output: Path, method: str, deepspeed: dict | None, checkpoints: str | None
) -> dict[str, float]:
    """The training entry (cong.stages.step.run_training): DPO of the weak base on the sampled pairs."""
    settings = cfg.training_stages().weak_align.train
    weak_base = resolve(cfg.models.weak_base, cfg)
    return dpo(weak_base, inputs["pairs"], output, settings, "weak_align", checkpoints, deepspeed)


@stage_step
def step(config: dict, pairs: str, weak_aligned: str, model_store: str = "", run_id: str = "") -> StepResult:

    cfg = config_from_dict(config)
    s = rewards(cfg.stages.weak_align, cfg)
    target = model_dir(weak_aligned, model_store)
    metrics = sample_pairs(
        resolve(cfg.models.weak_base, cfg),
        resolve(cfg.data.train_prompts, cfg),
        Path(pairs),
        s,
        cfg.data.max_train_prompts,
    )
    checkpoints = checkpoint_uri(cfg.storage, run_id, "weak_align")
    metrics = with_train_metrics(
        metrics, train_stage(cfg, "weak_align", {"pairs": pairs}, target, checkpoints=checkpoints)
    )
    pair_gates = weak_pair_gates(
        resolve(cfg.models.weak_base, cfg),
        str(target),
        resolve(cfg.data.train_prompts, cfg),
        s,
        cfg.data.max_train_prompts,
    )
    gates.check(pair_gates, "The weak pair", cfg.allow_failed_gates)
    metrics |= {f"gate_{g['name']}": g["value"] for g in pair_gates}
    source = {"base_model": cfg.models.weak_base, "prompts": cfg.data.train_prompts}
    return {
        "metrics": metrics,
        "metadata": {
            "pairs": lineage(cfg, "weak_align", rows=metrics["pairs"], sample_seeds=s.sample_seeds, **source),
            "weak_aligned": lineage(
                cfg,
                "weak_align",
                beta=s.train.beta,
                learning_rate=cfg.trained(s.train).learning_rate,
                seed=s.train.seed,
                gates=pair_gates,
                **source,
            )
            | hand_over(cfg, weak_aligned, target, "weak_aligned", run_id),
        },
    }
