"""cong study: the hypotheses' verdicts on constructed runs whose answers are known, and the resume of a study killed
with SIGKILL. The runs here are written by a stand-in for `cong run --local` (the study's bookkeeping and analysis
are under test; tests/test_pipeline_local.py runs the pipeline itself)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cong.errors import CongError
from cong.evaluation.study import RUN_DONE, StudySettings, analyse, load_run, load_study, run_folder

METHODS = ("base", "weak_sft", "auxconf", "wspo", "cong_s", "cong")
ALPHAS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
HYPOTHESES = [
    {"id": "H1", "statement": "ConG-S beats WeakSFT", "method": "cong_s", "against": ["weak_sft"]},
    {"id": "H2", "statement": "ConG beats ConG-S", "method": "cong", "against": ["cong_s"]},
    {"id": "H3", "statement": "ConG beats the rest", "method": "cong", "against": ["weak_sft", "auxconf", "wspo"]},
    {"id": "H4", "statement": "The best alpha is inside", "kind": "interior_alpha"},
    {"id": "H5", "statement": "The best of 0.2, 0.4 beats both ends", "kind": "moderate_alpha", "alphas": [0.2, 0.4]},
    {
        "id": "H6",
        "statement": "ConG keeps the base's downstream accuracy within 0.02",
        "method": "cong",
        "against": ["base"],
        "metric": "downstream",
        "margin": 0.02,
    },
]


def fake_run(folder: Path, world: int, seed: int, prompts: int = 60, tax: float = 0.0) -> None:
    """A finished run's files: ConG-S 0.2 above WeakSFT, ConG level with ConG-S up to noise, AuxConf 0.3 above
    ConG, a sweep whose alpha 0.4 is 0.2 above the rest, and downstream answers where ConG loses `tax` of the base's
    200 right ones."""
    rng = random.Random(world * 100 + seed)
    ids = [f"eval-{i:05d}" for i in range(prompts)]
    rows = []
    for i in ids:
        base = rng.random() * 0.5
        reward = {"base": base, "weak_sft": base + 0.1, "wspo": base + 0.05, "cong_s": base + 0.3}
        reward["cong"] = reward["cong_s"] + rng.choice([-0.05, 0.05])
        reward["auxconf"] = reward["cong"] + 0.3
        rows.append({"id": i, "prompt": i, "reward": reward})
    sweep = {f"{a:g}": [0.5 + (0.2 if a == 0.4 else 0.0) + rng.gauss(0, 0.05) for _ in ids] for a in ALPHAS}
    methods = {m: {"reward_mean": sum(r["reward"][m] for r in rows) / prompts} for m in METHODS}
    for m in METHODS:  # a gap recovered of its own per run
        methods[m] |= {"pgr_reward": 0.1 * seed + len(m) / 10, "pgr_reward_ci95_low": 0.0, "pgr_reward_ci95_high": 2.0}
    results = {
        "methods": methods,
        "testbed": {
            "sha256": f"{world:064x}",
            "gates": [{"name": "capability", "value": 0.4, "threshold": 0.25, "passed": True}],
        },
        "failed_gates": [],
        "alpha_sweep_rewards": {"ids": ids, "by_alpha": sweep},
        "run": {"seconds": 1.0},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lost = round(200 * tax)
    downstream = [
        {"task": "t", "id": f"d{i}", "correct": {m: 0.0 if m == "cong" and i < lost else 1.0 for m in METHODS}}
        for i in range(200)
    ] + [{"task": "t", "id": f"w{i}", "correct": dict.fromkeys(METHODS, 0.0)} for i in range(100)]
    (folder / "downstream.jsonl").write_text("".join(json.dumps(r) + "\n" for r in downstream))
    (folder / "results.json").write_text(json.dumps(results))


def study(**changes) -> StudySettings:
    fields = {"name": "t", "world_seeds": [0, 1, 2], "training_seeds": [0, 1], "hypotheses": HYPOTHESES}
    return StudySettings.model_validate(fields | changes)


def test_the_verdicts_on_runs_whose_answers_are_known(tmp_path):
    settings = study()
    cells = [(w, t) for w in settings.world_seeds for t in settings.training_seeds]
    for w, t in cells:
        fake_run(run_folder(tmp_path, w, t), w, t)
    summary = analyse(settings, {cell: load_run(run_folder(tmp_path, *cell)) for cell in cells})
    verdicts = {h["id"]: h for h in summary["hypotheses"]}

    assert verdicts["H1"]["verdict"] == "supported" and verdicts["H1"]["effect"] == pytest.approx(0.2)
    assert verdicts["H1"]["ci95_low"] == pytest.approx(0.2) and verdicts["H1"]["ci95_high"] == pytest.approx(0.2)
    assert verdicts["H2"]["verdict"] == "inconclusive" and abs(verdicts["H2"]["effect"]) < 0.03
    # H3: beats WeakSFT and WSPO, loses to AuxConf by 0.3: the weakest comparison decides.
    assert verdicts["H3"]["verdict"] == "contradicted" and verdicts["H3"]["effect"] == pytest.approx(-0.3)
    assert [c["against"] for c in verdicts["H3"]["comparisons"]] == ["weak_sft", "auxconf", "wspo"]
    assert verdicts["H4"]["verdict"] == "supported" and verdicts["H4"]["best_inside"] == 0.4
    assert verdicts["H4"]["effect"] == pytest.approx(0.2, abs=0.02)
    assert verdicts["H4"]["selection_prompts"] == verdicts["H4"]["test_prompts"] == 30
    # H5: 0.4, chosen on the even prompts, beats alpha 0 and alpha 1 each on the odd ones.
    assert verdicts["H5"]["verdict"] == "supported" and verdicts["H5"]["best_inside"] == 0.4
    assert [c["against"] for c in verdicts["H5"]["comparisons"]] == ["alpha 0", "alpha 1"]
    # H6: ConG answers every downstream prompt as the base does: no loss, within any margin.
    assert verdicts["H6"]["verdict"] == "supported" and verdicts["H6"]["effect"] == 0.0
    for h in summary["hypotheses"]:
        assert h["p_holm"] >= h["p_value"] and set(h) >= {"id", "statement", "effect", "ci95_low", "ci95_high"}
    assert len(summary["runs"]) == 6 and set(summary["worlds"]) == {"0", "1", "2"}


@pytest.mark.parametrize(("tax", "verdict"), [(0.005, "supported"), (0.05, "contradicted")])
def test_non_inferiority_within_a_margin(tmp_path, tax, verdict):
    """H6 on runs where ConG loses a known share of the base's right downstream answers: 0.5% of 300 prompts' worth is
    within the 0.02 margin; 5% is beyond it, though ConG loses only a little."""
    settings = study(hypotheses=[h for h in HYPOTHESES if h["id"] == "H6"])
    cells = [(w, t) for w in settings.world_seeds for t in settings.training_seeds]
    for w, t in cells:
        fake_run(run_folder(tmp_path, w, t), w, t, tax=tax)
    (h6,) = analyse(settings, {cell: load_run(run_folder(tmp_path, *cell)) for cell in cells})["hypotheses"]
    assert h6["verdict"] == verdict and h6["effect"] == pytest.approx(-round(200 * tax) / 300)
    assert h6["ci95_low"] <= h6["effect"] <= h6["ci95_high"]


def test_the_moderate_alpha_must_beat_both_ends(tmp_path):
    """H5 where alpha 1 scores as high as the best moderate alpha: beating alpha 0 alone does not support it."""
    settings = study(hypotheses=[h for h in HYPOTHESES if h["id"] == "H5"])
    cells = [(w, t) for w in settings.world_seeds for t in settings.training_seeds]
    runs = {}
    for w, t in cells:
        fake_run(run_folder(tmp_path, w, t), w, t)
        runs[(w, t)] = load_run(run_folder(tmp_path, w, t))
        runs[(w, t)]["sweep"]["1"] = {i: v + 0.25 for i, v in runs[(w, t)]["sweep"]["1"].items()}
    (h5,) = analyse(settings, runs)["hypotheses"]
    assert h5["verdict"] != "supported" and h5["effect"] < 0
    weakest = min(h5["comparisons"], key=lambda c: c["effect"])
    assert weakest["against"] == "alpha 1" and h5["p_value"] == weakest["p_value"]
    with pytest.raises(ValueError, match="strictly inside"):
        study(hypotheses=[{"id": "H", "statement": "s", "kind": "moderate_alpha", "alphas": [0.0, 0.5]}])


def test_a_run_that_failed_a_gate_is_left_out_of_every_test(tmp_path):
    """A world whose gates failed does not vote: here its runs would turn H1 around, and they are left out."""
    settings = study(world_seeds=[0, 1])
    cells = [(w, t) for w in settings.world_seeds for t in settings.training_seeds]
    runs = {}
    for w, t in cells:
        fake_run(run_folder(tmp_path, w, t), w, t)
        runs[(w, t)] = load_run(run_folder(tmp_path, w, t))
    failed = {"name": "capability", "value": 0.1, "threshold": 0.25, "passed": False}
    for t in settings.training_seeds:
        runs[(1, t)]["failed_gates"] = [failed]
        runs[(1, t)]["rewards"]["cong_s"] = {i: -5.0 for i in runs[(1, t)]["rewards"]["cong_s"]}
    summary = analyse(settings, runs)
    h1 = next(h for h in summary["hypotheses"] if h["id"] == "H1")
    assert h1["verdict"] == "supported" and h1["effect"] == pytest.approx(0.2)
    assert summary["left_out"] == [{"world_seed": 1, "training_seed": t, "failed_gates": [failed]} for t in (0, 1)]
    assert len(summary["runs"]) == 4
    for t in settings.training_seeds:
        runs[(0, t)]["failed_gates"] = [failed]
    with pytest.raises(CongError, match="every run failed a gate"):
        analyse(settings, runs)


def test_the_shipped_study_states_the_papers_hypotheses():
    shipped = load_study()
    assert [h.id for h in shipped.hypotheses] == ["H1", "H2", "H3", "H4", "H5", "H6"]
    assert shipped.hypotheses[4].alphas == [0.3, 0.4, 0.5]
    assert (shipped.hypotheses[5].metric, shipped.hypotheses[5].margin) == ("downstream", 0.02)
    # The smallest p a test can give, after Holm's correction over every hypothesis, is below 0.001.
    assert 2 / (1 + shipped.resamples) * len(shipped.hypotheses) < 0.001
    assert len(shipped.world_seeds) == len(shipped.training_seeds) == 3 and shipped.min_eval_prompts >= 1000
    assert shipped.hypotheses[2].against == ["weak_sft", "auxconf", "wspo"]


RUNNER = """
import sys, time
from pathlib import Path
from cong.evaluation.study import StudySettings, run_study
from tests.test_study import HYPOTHESES, fake_run

out, hang = Path(sys.argv[1]), int(sys.argv[2])
ran = []

def runner(cfg, folder):
    w, t = int(cfg.testbed.seed), int(cfg.stages.sft.train.seed)
    ran.append((w, t))
    fake_run(folder, w, t)
    print("ran", w, t, flush=True)
    if len(ran) == hang:
        time.sleep(600)  # killed here, its folder written but not marked finished
    return {"run": {"seconds": 1.0}}

settings = StudySettings.model_validate(
    {"name": "t", "config": "tests/configs/micro.yaml", "min_eval_prompts": 12, "world_seeds": [0, 1],
     "training_seeds": [0, 1], "hypotheses": HYPOTHESES}
)
run_study(settings, out, progress=lambda m: print(m, flush=True), runner=runner)
print("done", flush=True)
"""


def test_a_study_killed_with_sigkill_resumes_where_it_stopped(tmp_path):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    out = tmp_path / "study"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(out), "3"], stdout=subprocess.PIPE, text=True, env=env, cwd=env["PYTHONPATH"]
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("ran 1 0"):  # the third run: now hanging
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert (run_folder(out, 0, 1) / RUN_DONE).is_file() and not (run_folder(out, 1, 0) / RUN_DONE).exists()
    assert not (out / "study.json").exists()
    finished = (run_folder(out, 0, 0) / RUN_DONE).stat().st_mtime_ns

    time.sleep(0.01)
    resumed = subprocess.run(
        [sys.executable, str(script), str(out), "0"],
        capture_output=True,
        text=True,
        env=env,
        cwd=env["PYTHONPATH"],
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert [line for line in resumed.stdout.splitlines() if line.startswith("ran")] == ["ran 1 0", "ran 1 1"]
    assert "run 1/4 (world seed 0, training seed 0) finished before" in resumed.stdout
    assert (run_folder(out, 0, 0) / RUN_DONE).stat().st_mtime_ns == finished
    summary = json.loads((out / "study.json").read_text())
    assert len(summary["runs"]) == 4 and len(summary["hypotheses"]) == 6
    page = (out / "study.html").read_text()
    assert page.count("<tr>") >= 5 and "Performance gap recovered" in page
    assert summary["runs"][1]["methods"]["cong"]["pgr_reward"] == pytest.approx(0.1 + 0.4), "each run's own PGR"
    assert f"<td>{0.1 + 0.4:.3f}</td>" in page
