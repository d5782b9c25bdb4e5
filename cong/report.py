"""The run report: the comparison table, a plot, and sample responses, as one self-contained HTML file."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

COLUMNS = ("reward_mean", "win_rate_vs_base", "accuracy", "style", "implicit_reward", "length_words")
SWEEP_COLUMNS = ("alpha", "reward_mean", "implicit_reward", "accuracy", "style", "length_words")
INTERVALS = {"reward_mean": "reward_ci95", "win_rate_vs_base": "win_rate_ci95"}


def format_table(results: dict) -> str:
    """The comparison table as fixed-width text (printed at the end of `cong run`)."""
    methods = results["methods"]
    columns = [c for c in COLUMNS if any(c in row for row in methods.values())]
    header = f"{'method':<14}" + "".join(f"{c:>18}" for c in columns)
    lines = [header, "-" * len(header)]
    for method, row in methods.items():
        cells = []
        for c in columns:
            value = row.get(c)
            ci = row.get(INTERVALS.get(c, ""))
            text = "-" if value is None else f"{value:.3f}" + (f" ±{ci:.3f}" if ci is not None else "")
            cells.append(f"{text:>18}")
        lines.append(f"{method:<14}" + "".join(cells))
    return "\n".join(lines)


def format_sweep(points: list[dict]) -> str:
    """The alpha sweep as fixed-width text."""
    columns = [c for c in SWEEP_COLUMNS if all(c in p for p in points)]
    lines = ["".join(f"{c:>16}" for c in columns)]
    lines += ["".join(f"{p[c]:>16.3f}" for c in columns) for p in points]
    return "\n".join(lines)


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _methods_png(results: dict) -> str:
    plt = _pyplot()
    methods = list(results["methods"])
    means = [results["methods"][m]["reward_mean"] for m in methods]
    errors = [results["methods"][m].get("reward_ci95", 0.0) for m in methods]
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(methods)), 3.4), dpi=110)
    ax.bar(methods, means, yerr=errors, capsize=4, color="#4C72B0")
    ax.set_ylabel("mean reward (95% CI)")
    ax.set_title("Reward on held-out prompts")
    ax.tick_params(axis="x", labelrotation=30)
    return _png(fig)


def _sweep_png(points: list[dict]) -> str:
    """Explicit reward (left axis) and implicit reward (right axis) against alpha."""
    plt = _pyplot()
    alphas = [p["alpha"] for p in points]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    ax.errorbar(
        alphas,
        [p["reward_mean"] for p in points],
        yerr=[p["reward_ci95"] for p in points],
        marker="o",
        color="#4C72B0",
        capsize=3,
        label="explicit reward",
    )
    ax.set_xlabel("alpha")
    ax.set_ylabel("explicit reward (95% CI)", color="#4C72B0")
    twin = ax.twinx()
    twin.plot(alphas, [p["implicit_reward"] for p in points], marker="s", color="#DD8452")
    twin.set_ylabel("implicit reward (per token)", color="#DD8452")
    ax.set_title(f"Contrastive decoding by alpha ({points[0]['prompts']} prompts)")
    return _png(fig)


def _sweep_section(points: list[dict]) -> str:
    columns = [c for c in SWEEP_COLUMNS if all(c in p for p in points)]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{p[c]:.3f}</td>" for c in columns) + "</tr>" for p in points)
    return f"""<h2>Alpha sweep</h2>
<table id="alpha-sweep"><tr>{head}</tr>{body}</table>
<img alt="reward by alpha" src="data:image/png;base64,{_sweep_png(points)}">
"""


def write_report(
    results: dict, responses: dict[str, list[str]], prompts: list[str], path: Path, samples: int = 8
) -> None:
    methods = results["methods"]
    columns = [c for c in COLUMNS if any(c in row for row in methods.values())]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr><th>"
        + html.escape(m)
        + "</th>"
        + "".join(f"<td>{row[c]:.3f}</td>" if c in row else "<td>-</td>" for c in columns)
        + "</tr>"
        for m, row in methods.items()
    )
    sample_rows = "".join(
        "<tr><td>"
        + html.escape(prompts[i])
        + "</td>"
        + "".join(f"<td>{html.escape(responses[m][i])}</td>" for m in methods)
        + "</tr>"
        for i in range(min(samples, len(prompts)))
    )
    method_heads = "".join(f"<th>{html.escape(m)}</th>" for m in methods)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ConG run report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}} td{{font-variant-numeric:tabular-nums}}</style>
</head><body>
<h1>ConG run report</h1>
<p>{results["eval_prompts"]} held-out prompts, reward backend <code>{html.escape(results["reward_backend"])}</code>.</p>
<h2>Comparison</h2>
<table id="results"><tr><th>method</th>{head}</tr>{body}</table>
<img alt="mean reward per method" src="data:image/png;base64,{_methods_png(results)}">
{_sweep_section(results["alpha_sweep"]) if results.get("alpha_sweep") else ""}
<h2>Sample responses</h2>
<table id="samples"><tr><th>prompt</th>{method_heads}</tr>{sample_rows}</table>
</body></html>
"""
    path.write_text(page)
