"""The run report: one self-contained HTML file (charts as inline PNGs, no script, no network) built from a
results folder: results.json, responses.jsonl and, when present, training_curves.json.

It shows the comparison table with 95% intervals, ConG's paired tests, a bar chart per metric, the alpha sweep,
the training-loss curve of every training stage, the response-length distributions, and a few prompts with
every method's response side by side. `cong report RUN_DIR` rebuilds it from the folder.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from cong.errors import CongError

COLUMNS = (
    "reward_mean",
    "win_rate_vs_base",
    "pgr_reward",
    "pgr_accuracy",
    "judge_win_rate_vs_base",
    "lc_win_rate_vs_base",
    "downstream_accuracy",
    "accuracy",
    "style",
    "implicit_reward",
    "length_words",
)
SWEEP_COLUMNS = ("alpha", "reward_mean", "implicit_reward", "accuracy", "style", "length_words")
# Columns printed with their 95% interval.
INTERVALS = ("reward_mean", "win_rate_vs_base", "pgr_reward", "pgr_accuracy", "judge_win_rate_vs_base")
CURVES_FILE = "training_curves.json"
BLUE, ORANGE = "#4C72B0", "#DD8452"


# Figures every row also has under greedy decoding, as `greedy_<metric>` (the judge and downstream tasks have one
# decoding each: the judge reads the primary responses, downstream tasks are answered greedily).
GREEDY = "greedy_"


def cell(row: dict, column: str) -> str:
    """`value` or, for INTERVALS (greedy ones too), `value [low, high]`; `-` where the metric does not apply."""
    if column not in row:
        return "-"
    text = f"{row[column]:.3f}"
    if column.removeprefix(GREEDY) in INTERVALS and f"{column}_ci95_low" in row:
        text += f" [{row[f'{column}_ci95_low']:.3f}, {row[f'{column}_ci95_high']:.3f}]"
    return text


def _columns(methods: dict, prefix: str = "") -> list[str]:
    return [prefix + c for c in COLUMNS if any(prefix + c in row for row in methods.values())]


def format_table(results: dict, prefix: str = "") -> str:
    """The comparison table as fixed-width text (printed at the end of `cong run`): the primary figures, or with
    `prefix` "greedy_" those under greedy decoding."""
    methods = results["methods"]
    columns = _columns(methods, prefix)
    width = {c: max(24 if c.removeprefix(GREEDY) in INTERVALS else 14, len(c)) + 2 for c in columns}
    header = f"{'method':<16}" + "".join(f"{c:>{width[c]}}" for c in columns)
    lines = [header, "-" * len(header)]
    for method, row in methods.items():
        lines.append(f"{method:<16}" + "".join(f"{cell(row, c):>{width[c]}}" for c in columns))
    return "\n".join(lines)


def decoding_note(results: dict) -> str:
    """Which decoding the primary figures come from, in one sentence."""
    d = results.get("decodings", {}).get("primary")
    if d is None:
        return "Every row decoded as stages.evaluate.sampling says."
    sampled = f"sampled at temperature {d['temperature']}, top-p {d['top_p']}, seed {d['seed']}"
    how = "greedily" if d["greedy"] else sampled
    return (
        f"Every row, WSD's included, decoded the same way: {how}, at most {d['max_new_tokens']} new tokens (the "
        "primary figures); greedy_<metric> gives each under greedy decoding."
    )


def gates_note(results: dict) -> str:
    """The warning of a run let past failed gates (cong.evaluation.gates); empty when none failed."""
    failed = results.get("failed_gates") or []
    if not failed:
        return ""
    return (
        f"this run went on past failed gates ({', '.join(failed)}; --allow-failed-gates): its world or weak pair "
        "cannot show whether weak supervision transfers, so its table does not compare the methods on that question."
    )


def _gates_section(results: dict) -> str:
    gates = results.get("testbed", {}).get("gates") or []
    if not gates:
        return ""
    rows = [[g["name"], f"{g['value']:.4g}", str(g["threshold"]), "passed" if g["passed"] else "FAILED"] for g in gates]
    table = _table("gates", ["gate", "value", "threshold", "result"], rows)
    return f"<h2>Gates (cong/evaluation/gates.py), fixed before any method ran</h2>{_warning(results)}{table}"


def _warning(results: dict) -> str:
    note = gates_note(results)
    return f'<p class="warning"><strong>Warning:</strong> {html.escape(note)}</p>' if note else ""


def format_sweep(points: list[dict]) -> str:
    """The alpha sweep as fixed-width text."""
    columns = [c for c in SWEEP_COLUMNS if all(c in p for p in points)]
    lines = ["".join(f"{c:>16}" for c in columns)]
    lines += ["".join(f"{p[c]:>16.3f}" for c in columns) for p in points]
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    _pyplot().close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _img(alt: str, png: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{png}">'


def _error_bars(rows: list[dict], column: str) -> list[list[float]]:
    """Matplotlib's asymmetric yerr: distances from the value down to the interval's low end and up to its high."""
    return [
        [r[column] - r.get(f"{column}_ci95_low", r[column]) for r in rows],
        [r.get(f"{column}_ci95_high", r[column]) - r[column] for r in rows],
    ]


def _metrics_png(methods: dict) -> str:
    """One bar chart per metric, with the 95% interval where there is one."""
    plt = _pyplot()
    columns = _columns(methods)
    ncols = min(3, len(columns))
    nrows = -(-len(columns) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.3 * nrows), dpi=90, squeeze=False)
    for ax, column in zip(axes.flat, columns, strict=False):
        names = [m for m, row in methods.items() if column in row]
        rows = [methods[m] for m in names]
        interval = any(f"{column}_ci95_low" in r for r in rows)
        ax.bar(
            names,
            [r[column] for r in rows],
            yerr=_error_bars(rows, column) if interval else None,
            capsize=3,
            color=BLUE,
        )
        ax.set_title(column + (" (95% CI)" if interval else ""))
        ax.tick_params(axis="x", labelrotation=40, labelsize=8)
    for ax in list(axes.flat)[len(columns) :]:
        ax.axis("off")
    return _png(fig)


def _sweep_png(points: list[dict]) -> str:
    """Explicit reward (left axis) and implicit reward (right axis) against alpha."""
    plt = _pyplot()
    alphas = [p["alpha"] for p in points]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    rewards = [p["reward_mean"] for p in points]
    ax.errorbar(alphas, rewards, yerr=_error_bars(points, "reward_mean"), marker="o", color=BLUE, capsize=3)
    ax.set_xlabel("alpha")
    ax.set_ylabel("explicit reward (95% CI)", color=BLUE)
    twin = ax.twinx()
    twin.plot(alphas, [p["implicit_reward"] for p in points], marker="s", color=ORANGE)
    twin.set_ylabel("implicit reward (per token)", color=ORANGE)
    ax.set_title(f"Contrastive decoding by alpha ({points[0]['prompts']} prompts)")
    return _png(fig)


def _curves_png(curves: dict[str, list[dict]]) -> str:
    """Training loss against step, one line per training stage."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.4), dpi=100)
    for name, points in curves.items():
        ax.plot([p["step"] for p in points], [p["loss"] for p in points], marker=".", label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss of every training stage")
    ax.legend(fontsize=8, ncols=2)
    return _png(fig)


def _lengths_png(lengths: dict[str, list[int]]) -> str:
    """The distribution of response lengths (words) per method, as box plots."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(lengths)), 3.4), dpi=100)
    ax.boxplot(list(lengths.values()), tick_labels=list(lengths), patch_artist=True, boxprops={"facecolor": BLUE})
    ax.set_ylabel("words")
    ax.set_title("Response lengths")
    ax.tick_params(axis="x", labelrotation=40, labelsize=8)
    return _png(fig)


def _table(element_id: str, head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{element_id}"><tr>{th}</tr>{body}</table>'


def _paired_section(paired: dict) -> str:
    rows = [
        [
            html.escape(other),
            f"{t['difference']:.3f} [{t['difference_ci95_low']:.3f}, {t['difference_ci95_high']:.3f}]",
            f"{t['p_value']:.4f}",
            str(t["difference_n"]),
        ]
        for other, t in paired["against"].items()
    ]
    head = ["against", f"mean {paired['metric']} difference (95% CI)", "p (paired sign-flip)", "prompts"]
    return f"<h2>ConG against each row, prompt by prompt</h2>{_table('paired-tests', head, rows)}"


def build_report(folder: Path, samples: int = 8) -> Path:
    """Write `folder`/report.html from the folder's results.json, responses.jsonl and training_curves.json."""
    folder = Path(folder)
    try:
        results = json.loads((folder / "results.json").read_text())
        lines = (folder / "responses.jsonl").read_text().splitlines()
    except (OSError, ValueError) as e:
        raise CongError(f"{folder} is not a run folder with results.json and responses.jsonl: {e}") from None
    responses = [json.loads(line) for line in lines if line.strip()]
    curves_file = folder / CURVES_FILE
    curves = json.loads(curves_file.read_text()) if curves_file.is_file() else {}
    methods = results["methods"]
    columns = _columns(methods)
    table = _table(
        "results",
        ["method", *columns],
        [[html.escape(m)] + [cell(row, c) for c in columns] for m, row in methods.items()],
    )
    lengths = {m: [len(str(r.get(m, "")).split()) for r in responses] for m in methods}
    side_by_side = _table(
        "samples",
        ["prompt", *methods],
        [[html.escape(r["prompt"])] + [html.escape(str(r.get(m, ""))) for m in methods] for r in responses[:samples]],
    )
    judge = (
        " An LLM judge compared each method with the base, both orders asked."
        if "lc_win_rate_vs_base" in columns
        else ""
    )
    greedy_columns = _columns(methods, GREEDY)
    greedy_table = _table(
        "greedy",
        ["method", *greedy_columns],
        [[html.escape(m)] + [cell(row, c) for c in greedy_columns] for m, row in methods.items()],
    )
    sections = [
        _warning(results),
        f"<p>{results['eval_prompts']} held-out prompts, reward backend <code>{html.escape(results['reward_backend'])}"
        f"</code>. Intervals are 95% bootstrap intervals. {html.escape(decoding_note(results))}{judge}</p>",
        f"<h2>Comparison</h2>{table}",
        f"<h2>Under greedy decoding</h2>{greedy_table}" if greedy_columns else "",
        _paired_section(results["paired_tests"]) if results.get("paired_tests") else "",
        f"<h2>Every metric</h2>{_img('a bar chart per metric', _metrics_png(methods))}",
        _gates_section(results),
    ]
    if results.get("alpha_sweep"):
        points = results["alpha_sweep"]
        sweep_columns = [c for c in SWEEP_COLUMNS if all(c in p for p in points)]
        sweep = _table("alpha-sweep", sweep_columns, [[f"{p[c]:.3f}" for c in sweep_columns] for p in points])
        sections.append(f"<h2>Alpha sweep</h2>{sweep}{_img('reward by alpha', _sweep_png(points))}")
    if curves:
        sections.append(f"<h2>Training</h2>{_img('training loss per stage', _curves_png(curves))}")
    sections.append(f"<h2>Response lengths</h2>{_img('response lengths per method', _lengths_png(lengths))}")
    sections.append(f"<h2>Sample responses</h2>{side_by_side}")
    path = folder / "report.html"
    path.write_text(_page("ConG run report", sections))
    return path


def _page(title: str, sections: list[str]) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:90em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}
td{{font-variant-numeric:tabular-nums}} img{{max-width:100%;display:block;margin:1em 0}}</style>
</head><body>
<h1>{html.escape(title)}</h1>
{"".join(sections)}
</body></html>
"""


def _forest_png(hypotheses: list[dict]) -> str:
    """Each hypothesis's effect with its 95% interval, against zero."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(hypotheses) + 1.2))
    for y, h in enumerate(reversed(hypotheses)):
        # A percentile interval need not hold its estimate (few worlds, skewed draws): drawn apart.
        ax.hlines(y, h["ci95_low"], h["ci95_high"])
        ax.plot(h["effect"], y, "o")
    ax.axvline(0, color="grey", linestyle="--")
    ax.set_yticks(range(len(hypotheses)), [f"{h['id']} ({h['verdict']})" for h in reversed(hypotheses)])
    ax.set_xlabel("effect on the explicit reward (95% interval, nested by world)")
    return _png(fig)


def write_study_html(summary: dict, path: Path) -> Path:
    """study.html: the verdicts, a forest plot of the effects, and every run's rows."""
    hypotheses = summary["hypotheses"]
    verdicts = _table(
        "hypotheses",
        ["id", "statement", "effect", "95% interval", "p (Holm)", "verdict"],
        [
            [
                h["id"],
                html.escape(h["statement"]),
                f"{h['effect']:+.4f}",
                f"[{h['ci95_low']:+.4f}, {h['ci95_high']:+.4f}]",
                f"{h['p_holm']:.4g}",
                h["verdict"],
            ]
            for h in hypotheses
        ],
    )
    methods = sorted({m for run in summary["runs"] for m in run["methods"]})

    def per_run(figure: str) -> str:
        def value(row: dict) -> str:
            return "" if row.get(figure) is None else f"{row[figure]:.3f}"

        return _table(
            f"runs-{figure}",
            ["world seed", "training seed", "world sha256", "failed gates", *methods],
            [
                [str(r["world_seed"]), str(r["training_seed"]), r["world_sha256"][:16]]
                + [", ".join(g["name"] for g in r["failed_gates"]) or "none"]
                + [value(r["methods"][m]) if m in r["methods"] else "" for m in methods]
                for r in summary["runs"]
            ],
        )

    sections = [
        f"<p>Metric: {html.escape(summary['metric'])}; significance {summary['significance']} after Holm's "
        "correction. Hypotheses were written in the study config before its first run.</p>",
        f"<h2>Verdicts</h2>{verdicts}{_img('forest plot of the effects', _forest_png(hypotheses))}",
        f"<h2>Runs (reward_mean, primary decoding)</h2>{per_run('reward_mean')}<p>A run that failed a gate is left "
        "out of every test.</p>",
        "<h2>Performance gap recovered (PGR, primary decoding)</h2><p>Per run, (method - weak_aligned) / "
        "(strong_ceiling - weak_aligned): 0 at the aligned weak model, 1 at the strong ceiling.</p>"
        f"<h3>on the reward</h3>{per_run('pgr_reward')}<h3>on accuracy</h3>{per_run('pgr_accuracy')}",
    ]
    path.write_text(_page(f"ConG study {summary['study']}", sections))
    return path
