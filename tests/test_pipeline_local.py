"""The whole pipeline through kfp.local (SubprocessRunner, use_venv=False) on the micro testbed."""

import json
import subprocess
import sys

from cong.config import load_config
from tests.conftest import MICRO


def cong_run_local(config, out, timeout=1200):
    """`cong run --local` in a subprocess, as a user runs it."""
    command = [sys.executable, "-m", "pipelines.cli", "run", "--local", "--config", str(config), "--out", str(out)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_cong_run_local(tmp_path, micro_testbed):
    out = tmp_path / "run"
    proc = cong_run_local(MICRO, out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "win_rate_vs_base" in proc.stdout and "cong_s" in proc.stdout

    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"base", "weak_aligned", "cong_s", "cong"}
    for row in results["methods"].values():
        assert {"reward_mean", "win_rate_vs_base", "accuracy", "implicit_reward"} <= set(row)
    assert "<img" in (out / "report.html").read_text()

    runs = list((out / "kfp").glob("cong-*"))
    assert len(runs) == 1
    task_outputs = {
        "weak-align": ["pairs", "weak_aligned", "metrics"],
        "cd-sample": ["responses", "metrics"],
        "sft": ["model", "metrics"],
        "strong-sample": ["responses", "metrics"],
        "pair": ["pairs", "metrics"],
        "dpo": ["aligned", "metrics"],
        "evaluate": ["results", "report", "metrics"],
    }
    for task, outputs in task_outputs.items():
        executor = json.loads((runs[0] / task / "executor_output.json").read_text())["artifacts"]
        assert set(executor) == set(outputs), task
        for name in outputs:
            artifact = executor[name]["artifacts"][0]
            if name == "metrics":
                assert artifact["metadata"], f"{task} logged no metrics"
            else:
                assert (runs[0] / task / name).exists(), f"{task}/{name}"
                assert artifact["metadata"]["stage"] == task.replace("-", "_")
    executor = json.loads((runs[0] / "dpo" / "executor_output.json").read_text())
    aligned = executor["artifacts"]["aligned"]["artifacts"][0]["metadata"]
    assert aligned["beta"] == load_config(MICRO).stages.dpo.train.beta
    assert (runs[0] / "dpo" / "aligned" / "model.safetensors").is_file()


def test_malformed_prompt_row_exits_2(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "a", "prompt": "What is 1 + 1?"}\n{"id": "b"}\n')
    config = tmp_path / "c.yaml"
    config.write_text(
        f"extends: tiny\nname: bad\ndata:\n  train_prompts: {prompts}\n  eval_prompts: {prompts}\n"
        f"testbed: {json.dumps(load_config(MICRO).testbed.model_dump())}\n"
    )
    proc = cong_run_local(config, tmp_path / "run", timeout=600)
    assert proc.returncode == 2
    assert f"{prompts}, line 2" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "kfp").exists()


def test_supplied_aligned_weak_model_skips_weak_align(tmp_path, micro_testbed):
    """`models.weak_aligned` given: no weak_align task; cd_sample and evaluate read the supplied model."""
    config = tmp_path / "c.yaml"
    config.write_text(
        MICRO.read_text().replace("name: micro", "name: supplied")
        + f"models:\n  weak_base: testbed:weak\n  strong_base: testbed:strong\n"
        f"  weak_aligned: {micro_testbed / 'weak'}\n"
    )
    out = tmp_path / "run"
    proc = cong_run_local(config, out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (run,) = (out / "kfp").glob("cong-*")
    assert not (run / "weak-align").exists() and (run / "cd-sample" / "responses").is_file()
    results = json.loads((out / "results.json").read_text())
    assert results["weak_pair"]["aligned"] == str(micro_testbed / "weak")
