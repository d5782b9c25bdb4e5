"""The report: rebuilt by `cong report RUN_DIR`, self-contained, and rendered by Debian's headless Chromium
(`make test` installs it), whose screenshot must show the table and the charts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from cong.data import write_jsonl
from pipelines.cli import main

METHODS = ("base", "weak_sft", "cong_s", "cong")
BLUE = (76, 114, 176)  # the bars' colour (cong.evaluation.report.BLUE)
BORDER = (204, 204, 204)  # the tables' cell borders


def screenshot(report: Path, out: Path, size: tuple[int, int] = (1400, 3000)) -> Path:
    """A PNG of `report` as headless Chromium draws it, with every host name unresolvable (no network)."""
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed: `make test` installs it (apt-get install chromium)"
    command = [
        chromium,
        "--headless",
        "--no-sandbox",  # the tests may run as root
        "--disable-gpu",
        "--hide-scrollbars",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={out.parent / 'chromium-profile'}",
        f"--window-size={size[0]},{size[1]}",
        f"--screenshot={out}",
        report.resolve().as_uri(),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    return out


def assert_report_renders(report: Path, tmp_path: Path) -> None:
    """The page needs nothing from a network, and its screenshot shows the comparison table and the charts."""
    from PIL import Image

    page = report.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the report loads something from a network"
    image = Image.open(screenshot(report, tmp_path / "report.png")).convert("RGB")
    assert image.size == (1400, 3000)
    pixels = list(image.getdata())
    assert sum(p == BLUE for p in pixels) > 5000, "no bar charts in the screenshot"
    assert sum(p == BORDER for p in pixels) > 2000, "no table in the screenshot"
    assert len(set(pixels[: 1400 * 200])) > 10, "the top of the page is blank"


def _run_folder(folder: Path) -> Path:
    """A results folder as evaluate writes it, with every section the report has."""
    folder.mkdir()
    rows = {}
    for i, method in enumerate(METHODS):
        reward = 0.3 + 0.05 * i
        rows[method] = {
            "reward_mean": reward,
            "reward_mean_ci95_low": reward - 0.04,
            "reward_mean_ci95_high": reward + 0.03,
            "reward_mean_n": 20,
            "win_rate_vs_base": 0.5 + 0.05 * i,
            "win_rate_vs_base_ci95_low": 0.4,
            "win_rate_vs_base_ci95_high": 0.7,
            "lc_win_rate_vs_base": 0.5 + 0.02 * i,
            "downstream_accuracy": 0.6 - 0.05 * i,
            "length_words": 10.0 - i,
            "greedy_reward_mean": reward + 0.1,
            "greedy_reward_mean_ci95_low": reward + 0.05,
            "greedy_reward_mean_ci95_high": reward + 0.15,
        }
    against = {
        m: {
            "difference": 0.1,
            "difference_ci95_low": 0.0,
            "difference_ci95_high": 0.2,
            "difference_n": 20,
            "p_value": 0.03,
        }
        for m in METHODS[:-1]
    }
    sweep = [
        {"alpha": a, "prompts": 20, "reward_mean": 0.3 + a / 10, "implicit_reward": 2 - a} for a in (0.0, 0.5, 1.0)
    ]
    results = {
        "methods": rows,
        "eval_prompts": 20,
        "reward_backend": "testbed",
        "decodings": {
            "primary": {"temperature": 0.8, "top_p": 0.95, "seed": 7, "greedy": False, "max_new_tokens": 48},
            "greedy": {"temperature": 0.8, "top_p": 0.95, "seed": 7, "greedy": True, "max_new_tokens": 48},
        },
        "paired_tests": {"method": "cong", "metric": "reward", "against": against},
        "alpha_sweep": sweep,
    }
    (folder / "results.json").write_text(json.dumps(results))
    write_jsonl(
        folder / "responses.jsonl",
        (
            {"id": f"p{j}", "prompt": f"What is {j} + 1?", **{m: "word " * (j + i) for i, m in enumerate(METHODS)}}
            for j in range(20)
        ),
    )
    curves = {m: [{"step": s, "loss": 1.0 / (s + i)} for s in range(1, 6)] for i, m in enumerate(METHODS[1:], 1)}
    (folder / "training_curves.json").write_text(json.dumps(curves))
    return folder


def test_cong_report_rebuilds_every_section(tmp_path, capsys):
    folder = _run_folder(tmp_path / "run")
    assert main(["report", str(folder)]) == 0
    page = (folder / "report.html").read_text()
    assert f"wrote {folder / 'report.html'}" in capsys.readouterr().out
    for section in (
        'id="results"',
        'id="greedy"',
        'id="paired-tests"',
        'id="alpha-sweep"',
        'id="samples"',
        "<h2>Training</h2>",
        "<h2>Response lengths</h2>",
    ):
        assert section in page, section
    assert page.count("<img") == 4  # every metric, the sweep, the training loss, the lengths
    assert "0.300 [0.260, 0.330]" in page, "the reward with its interval"
    assert "0.400 [0.350, 0.450]" in page, "the greedy reward with its interval, in its own table"
    assert "sampled at temperature 0.8, top-p 0.95, seed 7" in page, "the report says which decoding is primary"
    assert_report_renders(folder / "report.html", tmp_path)


def test_cong_report_names_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "is not a run folder with results.json and responses.jsonl" in capsys.readouterr().err
