"""Figures for run reports: training curves from metrics.jsonl and probe bars with error bars.

Uses matplotlib's object API with the Agg canvas (no pyplot, no display, no global state).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

COLOURS = {"tcjepa": "#d1495b", "ijepa": "#00798c", "random-init": "#9e9e9e"}


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if key in r and r[key] is not None and math.isfinite(r[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def _colour(label: str) -> str | None:
    for key, colour in COLOURS.items():
        if label.startswith(key):
            return colour
    return None


def plot_training_curves(
    runs: dict[str, str | Path],
    out: str | Path,
    panels: tuple[tuple[str, str], ...] = (
        ("loss_pred", "prediction loss (each method has its own target space)"),
        ("rankme", "RankMe of target features (fixed held-out batch)"),
        ("text_usage", "text usage: loss with shuffled / true captions"),
        ("pos_frac_l0", "positive patch-word cosines, layer 0"),
    ),
) -> Path:
    """One panel per metric, one line per run; panels no run logged are dropped."""
    data = {label: read_metrics(d) for label, d in runs.items()}
    present = [(k, t) for k, t in panels if any(_series(rows, k)[0] for rows in data.values())]
    cols = min(2, max(1, len(present)))
    rows_n = max(1, math.ceil(len(present) / cols))
    fig = Figure(figsize=(5.2 * cols, 3.4 * rows_n))
    FigureCanvasAgg(fig)
    for i, (key, title) in enumerate(present):
        ax = fig.add_subplot(rows_n, cols, i + 1)
        for label, rows in data.items():
            xs, ys = _series(rows, key)
            if xs:
                ax.plot(xs, ys, label=label, color=_colour(label), lw=1.4)
        if key == "loss_pred":
            ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out


def plot_bars(
    values: dict[str, dict[str, tuple[float, float]]],
    out: str | Path,
    title: str,
    chance: dict[str, float] | None = None,
    ylabel: str = "accuracy",
) -> Path:
    """``values[task][method] = (mean, std)``; grouped bars with error bars and a chance tick per task."""
    tasks = list(values)
    methods = list(dict.fromkeys(m for t in tasks for m in values[t]))
    fig = Figure(figsize=(max(5.0, 1.3 * len(tasks) * max(1, len(methods)) / 2 + 2), 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(methods))
    for j, m in enumerate(methods):
        xs = [i + (j - (len(methods) - 1) / 2) * width for i in range(len(tasks))]
        means = [values[t].get(m, (math.nan, 0.0))[0] for t in tasks]
        stds = [values[t].get(m, (math.nan, 0.0))[1] for t in tasks]
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=m, color=_colour(m))
    if chance:
        for i, t in enumerate(tasks):
            if t in chance and math.isfinite(chance[t]):
                ax.hlines(chance[t], i - 0.45, i + 0.45, colors="k", linestyles="dashed", lw=1)
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels(tasks, fontsize=8, rotation=20, ha="right")
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title + ("   (dashed: chance)" if chance else ""), fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out
