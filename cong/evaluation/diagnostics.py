"""What a finished local run says about why ConG did as it did, read from its pipeline folder (for `cong study`).

dpo_pairs_chosen_below_rejected   share of ConG's DPO pairs (chosen = CD response, rejected = ConG-S sample)
                                  whose chosen response scores below its rejected one on the explicit reward:
                                  DPO then pushes the model away from the better response
cd_implicit_explicit_spearman     Spearman correlation, over the CD responses, of the weak pair's implicit
                                  reward with the explicit reward: whether CD's target tracks the reward
"""

from __future__ import annotations

from pathlib import Path

from cong.config import Config
from cong.data import read_jsonl
from cong.evaluation.gates import spearman
from cong.evaluation.rewards import ImplicitReward, reward_backend
from cong.inputs.refs import resolve
from cong.storage.handoff import follow
from cong.storage.lineage import run_outputs


def run_diagnostics(run_dir: Path, cfg: Config) -> dict[str, float]:
    """The diagnostics of the run in `run_dir` (a `cong run --local` folder); those whose stage did not run are
    left out."""
    (run_root,) = (Path(run_dir) / "kfp").glob("cong-*")
    outputs = run_outputs(run_root)
    backend = reward_backend(cfg.stages.evaluate)
    found: dict[str, float] = {}
    if "pair/pairs" in outputs:
        rows = read_jsonl(outputs["pair/pairs"][0], ("prompt", "chosen", "rejected"))
        prompts = [r["prompt"] for r in rows]
        chosen = backend.score(prompts, [r["chosen"] for r in rows])
        rejected = backend.score(prompts, [r["rejected"] for r in rows])
        found["dpo_pairs_chosen_below_rejected"] = sum(c < r for c, r in zip(chosen, rejected, strict=True)) / len(rows)
    if "cd-sample/responses" in outputs and "weak-align/weak_aligned" in outputs:
        rows = read_jsonl(outputs["cd-sample/responses"][0], ("prompt", "response"))
        prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
        aligned = follow(outputs["weak-align/weak_aligned"][0])
        pair = ImplicitReward.load(resolve(cfg.models.weak_base, cfg), aligned, batch_size=64)
        implicit = pair.score(prompts, responses)
        found["cd_implicit_explicit_spearman"] = spearman(implicit, backend.score(prompts, responses))
    return found
