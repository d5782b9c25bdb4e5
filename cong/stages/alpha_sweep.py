"""alpha_sweep: contrastive decoding at each alpha on a fixed prompt subset (the paper's alpha ablation).

alpha mixes the implicit reward and the aligned model (method.md section 1): 0 decodes by the implicit
reward alone, 1 samples pi_r inside V_head. Each point reports the explicit reward (the reward backend)
and the length-normalised implicit reward of the CD responses; the decoding settings are cd_sample's. The explicit
reward of every prompt at every alpha is kept too (`rewards`), for analyses across runs (cong study).
"""

from __future__ import annotations

import json
from pathlib import Path

from cong.config import AlphaSweepSettings, CdSampleSettings, EvaluateSettings, config_from_dict
from cong.data import PROMPT_FIELDS, read_jsonl
from cong.decoding.contrastive import CdParams
from cong.decoding.sampler import Sampler
from cong.errors import stage_step
from cong.evaluation.rewards import ImplicitReward, reward_backend
from cong.evaluation.stats import bootstrap_mean
from cong.inputs.refs import resolve
from cong.progress import log
from cong.stages.step import StepResult, aligned_weak, lineage, rewards

STAGE = "alpha_sweep"


def alpha_sweep(
    weak_base: str,
    weak_aligned: str,
    prompts_path: str,
    out_path: Path,
    cd: CdSampleSettings,
    sweep: AlphaSweepSettings,
    evaluation: EvaluateSettings,
) -> dict[str, float]:
    rows = read_jsonl(prompts_path, PROMPT_FIELDS, sweep.prompts)
    prompts = [r["prompt"] for r in rows]
    sampler = Sampler(weak_aligned, amateur_ref=weak_base)
    implicit = ImplicitReward(sampler.tokenizer, sampler.expert, sampler.amateur)
    backend = reward_backend(evaluation, (weak_base, weak_aligned))
    points, per_prompt = [], {}
    for alpha in sweep.alphas:
        log(STAGE, f"alpha {alpha}")
        responses = sampler(rows, cd.sampling, STAGE, CdParams.of(cd, alpha))
        point = {"alpha": alpha, "prompts": len(rows)}
        per_prompt[f"{alpha:g}"] = backend.score(prompts, responses)
        point |= bootstrap_mean(per_prompt[f"{alpha:g}"]).fields("reward_mean")
        point |= bootstrap_mean(implicit.score(prompts, responses)).fields("implicit_reward")
        point["length_words"] = sum(len(y.split()) for y in responses) / len(responses)
        point.update({name: bootstrap_mean(values).value for name, values in backend.parts(prompts, responses).items()})
        points.append(point)
    rewards = {"ids": [r["id"] for r in rows], "by_alpha": per_prompt}
    Path(out_path).write_text(json.dumps({"points": points, "rewards": rewards}, indent=2) + "\n")
    return {f"alpha_{p['alpha']:g}.{k}": p[k] for p in points for k in ("reward_mean", "implicit_reward")}


@stage_step
def step(config: dict, weak_aligned: str, points: str, model_store: str = "") -> StepResult:
    cfg = config_from_dict(config)
    s = cfg.stages.alpha_sweep
    metrics = alpha_sweep(
        resolve(cfg.models.weak_base, cfg),
        aligned_weak(cfg, weak_aligned, model_store),
        resolve(cfg.data.eval_prompts, cfg),
        Path(points),
        cfg.stages.cd_sample,
        s,
        rewards(cfg.stages.evaluate, cfg),
    )
    return {
        "metrics": metrics,
        "metadata": {"points": lineage(cfg, "alpha_sweep", alphas=s.alphas, prompts=s.prompts)},
    }
