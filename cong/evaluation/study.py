"""cong study: the paper's questions answered over several testbed worlds and training seeds, with hypotheses stated
before any run.

A study config (`cong/studies/*.yaml`) names a run config, the world seeds (each a testbed build of its own) and the
training seeds (every trainer's seed), and its hypotheses. Every (world, training seed) pair is one `cong run
--local` with every method and the alpha sweep, on every held-out prompt of its world; a finished run is never run
again, so a killed study continues where it stopped. Then, for each hypothesis:

    effect      the mean over worlds of the mean over training seeds of the mean over prompts of a paired
                difference of the explicit reward (primary decoding): method minus the method it must beat
    interval    95%, paired bootstrap nested by world (cong.evaluation.stats.nested_bootstrap): worlds, then
                seeds and prompts
    p_holm      the bootstrap p, Holm-adjusted over the hypotheses
    verdict     supported (p_holm < significance, effect > 0), contradicted (p_holm < significance, effect < 0),
                inconclusive otherwise

A run whose world or weak pair fails a gate (cong/evaluation/gates.py) still runs, so that the study finishes and says
so, but it is left out of every hypothesis's test: a world that cannot test a method does not vote. study.json lists
the runs left out and their failed gates; the rule is the gates', fixed before any method's score is seen.

"Beats several methods" is an intersection-union test: its p is the largest of the comparisons' p, and its effect and
interval those of the comparison with the smallest effect. A `beats` hypothesis may compare the downstream tasks'
greedy correctness instead of the reward (`metric: downstream`, per prompt from the runs' downstream.jsonl), and may
allow a margin: non-inferiority, tested as difference + margin > 0, its effect and interval the difference itself.
"The best alpha lies strictly inside (0, 1)" (`interior_alpha`) picks the best interior alpha and the better end on the
even-numbered sweep prompts (pooled over every run) and tests their difference on the odd-numbered ones, so that
choosing the maximum does not bias the test; `moderate_alpha` picks the best of its `alphas` the same way and must beat
alpha 0 and alpha 1 each (intersection-union). Each test's p is at least 2 / (1 + resamples) before Holm's correction.

How far the effects generalise beyond the study's worlds is limited by how few they are: the nested bootstrap
resamples the worlds themselves, and three worlds give only ten distinct draws of them, so the world-level spread in
an interval is a rough estimate, and a world unlike the three is not represented at all.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from cong.config import Config, StageSettings, Strict, TrainSettings, load_config, read_text
from cong.errors import CongError
from cong.evaluation.downstream import DOWNSTREAM_FILE
from cong.evaluation.stats import holm, nested_bootstrap

STUDIES = Path(__file__).parent.parent / "studies"
STUDY_FILE = "study.json"
RUN_DONE = "study-run.json"  # written once a run has finished: a run folder without it is run again
Progress = Callable[[str], None]


class Hypothesis(Strict):
    id: str = Field(min_length=1)
    statement: str = Field(min_length=1)
    kind: Literal["beats", "interior_alpha", "moderate_alpha"] = "beats"
    method: str | None = Field(None, description="beats: the method that must score higher")
    against: list[str] = Field([], description="beats: the methods it must beat, each")
    metric: Literal["reward", "downstream"] = Field(
        "reward",
        description="beats: the explicit reward on the held-out prompts, or the downstream tasks' greedy correctness",
    )
    margin: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="beats: how far below each of `against` the method may score and still count (a non-inferiority "
        "margin; 0: it must score higher)",
    )
    alphas: list[float] = Field([], description="moderate_alpha: the alphas whose best must beat both ends")

    @model_validator(mode="after")
    def _complete(self) -> Hypothesis:
        if self.kind == "beats" and (self.method is None or not self.against):
            raise ValueError(f"{self.id}: a `beats` hypothesis names `method` and the methods `against` it")
        if self.kind == "moderate_alpha" and not all(0 < a < 1 for a in self.alphas or [0.0]):
            raise ValueError(f"{self.id}: a `moderate_alpha` hypothesis names `alphas`, each strictly inside (0, 1)")
        return self


class StudySettings(Strict):
    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    config: str = Field("tiny", description="the runs' config: a preset name or a config file")
    world_seeds: list[int] = Field([0, 1, 2], min_length=1)
    training_seeds: list[int] = Field([0, 1, 2], min_length=1)
    min_eval_prompts: int = Field(1000, ge=1, description="refuse worlds with fewer held-out prompts")
    alpha_sweep_prompts: int = Field(200, ge=2, description="held-out prompts of each run's alpha sweep")
    significance: float = Field(0.05, gt=0, lt=1)
    resamples: int = Field(
        20000,
        ge=100,
        description="bootstrap draws of each test: its p is at least 2 / (1 + resamples), before Holm's correction",
    )
    hypotheses: list[Hypothesis] = Field(min_length=1)


def load_study(path: str | Path | None = None) -> StudySettings:
    """A study config file, or the shipped `tiny` study."""
    path = Path(path) if path is not None else STUDIES / "tiny.yaml"
    if not path.is_file():
        raise CongError(f"study config not found: {path}")
    try:
        return StudySettings.model_validate(yaml.safe_load(read_text(path)))
    except (yaml.YAMLError, ValidationError) as exc:
        raise CongError(f"{path} is not a valid study config: {exc}") from None


def run_config(study: StudySettings, world_seed: int, training_seed: int) -> Config:
    """The config of one run: the study's config on world `world_seed`, every trainer at `training_seed`, every
    held-out prompt of the world evaluated."""
    base = _base_config(study)
    trained = {
        name: {"train": {"seed": training_seed}}
        for name in StageSettings.model_fields
        if isinstance(getattr(getattr(base.stages, name), "train", None), TrainSettings)
    }
    overrides = {
        "name": f"{study.name}-w{world_seed}-t{training_seed}",
        "allow_failed_gates": True,
        "testbed": {"seed": world_seed},
        "data": {"max_eval_prompts": base.testbed.n_eval_prompts},
        "methods": ["all"],
        "stages": {**trained, "alpha_sweep": {"prompts": study.alpha_sweep_prompts}},
    }
    return _base_config(study, overrides)


def _base_config(study: StudySettings, overrides: dict[str, Any] | None = None) -> Config:
    path = Path(study.config)
    cfg = load_config(path, overrides=overrides) if path.suffix in (".yaml", ".yml") else None
    cfg = cfg or load_config(preset=study.config, overrides=overrides)
    if not cfg.uses_testbed() or cfg.testbed.n_eval_prompts < study.min_eval_prompts:
        raise CongError(
            f"study {study.name}: its config {study.config} must run on testbed worlds with at least "
            f"{study.min_eval_prompts} held-out prompts (testbed.n_eval_prompts is {cfg.testbed.n_eval_prompts})."
        )
    if not cfg.stages.alpha_sweep.alphas:
        raise CongError(f"study {study.name}: its config {study.config} sweeps no alpha (stages.alpha_sweep.alphas).")
    return cfg


def run_study(
    study: StudySettings, out: Path, runner: Callable[[Config, Path], dict], progress: Progress = print
) -> dict:
    """Every run not finished yet, then the analysis: study.json and study.html in `out`. `runner(config, folder)`
    runs one (the command line passes `cong run --local`'s) and returns its results."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "study-config.json").write_text(study.model_dump_json(indent=2) + "\n")
    cells = [(w, t) for w in study.world_seeds for t in study.training_seeds]
    started, ran = time.monotonic(), 0
    for i, (w, t) in enumerate(cells):
        folder = run_folder(out, w, t)
        if (folder / RUN_DONE).is_file():
            progress(f"study: run {i + 1}/{len(cells)} (world seed {w}, training seed {t}) finished before")
            continue
        shutil.rmtree(folder, ignore_errors=True)  # what a killed run left
        eta = ""
        if ran:
            eta = f", about {(time.monotonic() - started) / ran * (len(cells) - i) / 60:.0f} min left"
        progress(f"study: run {i + 1}/{len(cells)} (world seed {w}, training seed {t}){eta}")
        results = runner(run_config(study, w, t), folder)
        (folder / RUN_DONE).write_text(json.dumps({"seconds": results["run"]["seconds"]}) + "\n")
        ran += 1
    summary = analyse(study, {cell: load_run(run_folder(out, *cell)) for cell in cells})
    summary["seconds_this_session"] = round(time.monotonic() - started, 1)
    (out / STUDY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    from cong.evaluation.report import write_study_html

    write_study_html(summary, out / "study.html")
    return summary


# What study.json keeps of each run's rows: the reward under both decodings, and the gap recovered between the aligned
# weak model and the strong ceiling (PGR) on the reward and on accuracy, with the run's own intervals.
RUN_FIGURES = (
    "reward_mean",
    "greedy_reward_mean",
    *(f"{pgr}{end}" for pgr in ("pgr_reward", "pgr_accuracy") for end in ("", "_ci95_low", "_ci95_high")),
)


def run_folder(out: Path, world_seed: int, training_seed: int) -> Path:
    return out / "runs" / f"w{world_seed}-t{training_seed}"


def load_run(folder: Path) -> dict:
    """What the analysis takes from one finished run: per-prompt rewards of every method and of every sweep alpha,
    the world and its gates, and the run's diagnostics."""
    results = json.loads((folder / "results.json").read_text())
    rows = [json.loads(line) for line in (folder / "responses.jsonl").read_text().splitlines() if line.strip()]
    sweep = results.get("alpha_sweep_rewards", {"ids": [], "by_alpha": {}})
    downstream: dict[str, dict[str, float]] = {}
    if (folder / DOWNSTREAM_FILE).is_file():
        for line in (folder / DOWNSTREAM_FILE).read_text().splitlines():
            row = json.loads(line)
            for method, value in row["correct"].items():
                downstream.setdefault(method, {})[f"{row['task']}/{row['id']}"] = value
    return {
        "rewards": {m: {row["id"]: row["reward"][m] for row in rows} for m in results["methods"]},
        "downstream": downstream,
        "sweep": {alpha: dict(zip(sweep["ids"], values, strict=True)) for alpha, values in sweep["by_alpha"].items()},
        "world": results["testbed"]["sha256"],
        "gates": results["testbed"]["gates"],
        "failed_gates": results.get("failed_gates", []),
        "methods": {m: {k: row.get(k) for k in RUN_FIGURES} for m, row in results["methods"].items()},
        "diagnostics": results.get("diagnostics", {}),
        "seconds": results["run"]["seconds"],
    }


def analyse(study: StudySettings, runs: dict[tuple[int, int], dict]) -> dict:
    """study.json from the finished runs, keyed by (world seed, training seed)."""
    everything = runs
    runs = {cell: run for cell, run in runs.items() if not run["failed_gates"]}
    if not runs:
        raise CongError(f"study {study.name}: every run failed a gate, so no world here can test a method.")
    worlds = sorted({w for w, _ in runs})
    tested = [_test(h, runs, worlds, study) for h in study.hypotheses]
    adjusted = holm([t["p_value"] for t in tested])
    hypotheses = []
    for h, t, p in zip(study.hypotheses, tested, adjusted, strict=True):
        significant = p < study.significance
        verdict = "inconclusive"
        if significant:
            verdict = "supported" if t["effect"] + h.margin > 0 else "contradicted"
        hypotheses.append({"id": h.id, "statement": h.statement, **t, "p_holm": p, "verdict": verdict})
    return {
        "study": study.name,
        "config": study.config,
        "runs": [
            {
                "world_seed": w,
                "training_seed": t,
                "world_sha256": run["world"],
                "failed_gates": run["failed_gates"],
                "seconds": run["seconds"],
                "methods": run["methods"],
                "diagnostics": run["diagnostics"],
            }
            for (w, t), run in sorted(everything.items())
        ],
        "left_out": [
            {"world_seed": w, "training_seed": t, "failed_gates": run["failed_gates"]}
            for (w, t), run in sorted(everything.items())
            if run["failed_gates"]
        ],
        "worlds": {
            str(w): {
                "sha256": everything[_first(everything, w)]["world"],
                "gates": everything[_first(everything, w)]["gates"],
            }
            for w in sorted({w for w, _ in everything})
        },
        "hypotheses": hypotheses,
        "metric": "reward (explicit, primary decoding), paired by prompt; a hypothesis on `downstream` pairs the "
        "downstream tasks' greedy correctness by prompt",
        "significance": study.significance,
    }


def _first(runs: dict[tuple[int, int], dict], world: int) -> tuple[int, int]:
    return min(cell for cell in runs if cell[0] == world)


def _differences(runs: dict, worlds: list[int], a: Callable[[dict], dict], b: Callable[[dict], dict], ids=None):
    """Per world, per training seed, the per-prompt differences a - b on the prompts both scored (in id order)."""
    nested = []
    for w in worlds:
        per_seed = []
        for cell in sorted(c for c in runs if c[0] == w):
            left, right = a(runs[cell]), b(runs[cell])
            shared = sorted(set(left) & set(right) if ids is None else set(left) & set(right) & ids)
            per_seed.append([left[i] - right[i] for i in shared])
        nested.append(per_seed)
    return nested


def _comparison(runs: dict, worlds: list[int], h: Hypothesis, against: str, study: StudySettings) -> dict:
    """`h.method` against one method on `h.metric`, paired by prompt. With a margin, the test is of the difference
    plus the margin (non-inferiority: above 0 unless the method falls short by the margin or more); the effect and its
    interval are the difference itself."""
    scores = "rewards" if h.metric == "reward" else "downstream"
    for cell, run in runs.items():
        missing = {h.method, against} - set(run[scores])
        if missing:
            raise CongError(
                f"run {cell} has no {h.metric} scores for {', '.join(sorted(missing))}: the study compares every "
                "method" + ("" if h.metric == "reward" else " (and needs stages.evaluate.downstream)") + "."
            )
    nested = _differences(runs, worlds, lambda r: r[scores][h.method], lambda r: r[scores][against])
    shifted = [[[d + h.margin for d in run] for run in world] for world in nested]
    estimate = nested_bootstrap(shifted, study.resamples)
    return {
        "against": against,
        "effect": estimate.value - h.margin,
        "ci95_low": estimate.low - h.margin,
        "ci95_high": estimate.high - h.margin,
        "p_value": estimate.p_value,
    }


def _test(h: Hypothesis, runs: dict, worlds: list[int], study: StudySettings) -> dict:
    if h.kind == "interior_alpha":
        return _alpha_test(runs, worlds, study, chosen_from=None, against_both_ends=False)
    if h.kind == "moderate_alpha":
        return _alpha_test(runs, worlds, study, chosen_from=h.alphas, against_both_ends=True)
    return _every_one([_comparison(runs, worlds, h, other, study) for other in h.against])


def _every_one(parts: list[dict]) -> dict:
    """Beating each of several: supported only when every comparison is, so the p is the largest of theirs while
    every effect is positive; against a negative effect, that comparison's own p (an intersection-union test)."""
    weakest = min(parts, key=lambda part: part["effect"])
    p = max(part["p_value"] for part in parts) if weakest["effect"] > 0 else weakest["p_value"]
    return {
        "effect": weakest["effect"],
        "ci95_low": weakest["ci95_low"],
        "ci95_high": weakest["ci95_high"],
        "p_value": p,
        "comparisons": parts,
    }


def _alpha_test(
    runs: dict, worlds: list[int], study: StudySettings, chosen_from: list[float] | None, against_both_ends: bool
) -> dict:
    """The best alpha among `chosen_from` (None: every alpha strictly inside (0, 1)) against the better end (or,
    `against_both_ends`, against alpha 0 and alpha 1 each), chosen on the even-numbered sweep prompts pooled over every
    run and tested on the odd-numbered ones, so that choosing the maximum does not bias the test."""
    alphas = sorted({float(a) for run in runs.values() for a in run["sweep"]})
    ends = [a for a in alphas if a in (0.0, 1.0)]
    inside = [a for a in alphas if 0.0 < a < 1.0 and (chosen_from is None or a in chosen_from)]
    if len(ends) != 2 or not inside or (chosen_from is not None and len(inside) != len(chosen_from)):
        wanted = "the alphas " + ", ".join(f"{a:g}" for a in chosen_from) if chosen_from else "one alpha between"
        raise CongError(f"the alpha hypothesis needs a sweep with alpha 0, alpha 1 and {wanted}.")
    ids = sorted(set.intersection(*(set(run["sweep"][f"{alphas[0]:g}"]) for run in runs.values())))
    select, test = set(ids[0::2]), set(ids[1::2])

    def pooled(alpha: float) -> float:
        values = [run["sweep"][f"{alpha:g}"][i] for run in runs.values() for i in select]
        return sum(values) / len(values)

    best_inside = max(inside, key=pooled)
    opponents = ends if against_both_ends else [max(ends, key=pooled)]
    parts = []
    for end in opponents:
        nested = _differences(
            runs, worlds, lambda r: r["sweep"][f"{best_inside:g}"], lambda r, end=end: r["sweep"][f"{end:g}"], test
        )
        estimate = nested_bootstrap(nested, study.resamples)
        parts.append(
            {
                "against": f"alpha {end:g}",
                "effect": estimate.value,
                "ci95_low": estimate.low,
                "ci95_high": estimate.high,
                "p_value": estimate.p_value,
            }
        )
    # One opponent (the better end) is an intersection-union test of one comparison: that comparison itself.
    chosen = {"best_inside": best_inside, "selection_prompts": len(select), "test_prompts": len(test)}
    return _every_one(parts) | chosen | ({} if against_both_ends else {"best_end": opponents[0]})
