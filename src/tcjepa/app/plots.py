"""Figures for reports: training curves over seeds, grouped bars with error bars, sweep lines.

Uses matplotlib's object API with the Agg canvas (no pyplot, no display, no global state). Colours
follow the order of the labels given, so one arm keeps its colour in every figure of a report.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PALETTE = ("#00798c", "#d1495b", "#edae49", "#66a182", "#2e4057", "#8d96a3", "#9b5de5", "#f15bb5", "#00bbf9")
FLOOR_COLOUR = "#9e9e9e"


def colours_for(labels: list[str]) -> dict[str, str]:
    out, i = {}, 0
    for label in labels:
        if label.startswith("random-init"):
            out[label] = FLOOR_COLOUR
        else:
            out[label] = PALETTE[i % len(PALETTE)]
            i += 1
    return out


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def series(rows: list[dict], key: str) -> dict[int, float]:
    """step -> value; ``key`` ending in ``*`` averages every matching key of a row (e.g. ``pos_frac_l*``)."""
    out = {}
    for r in rows:
        if key.endswith("*"):
            vals = [v for k, v in r.items() if k.startswith(key[:-1]) and isinstance(v, int | float)]
            value = statistics.fmean(vals) if vals else None
        else:
            value = r.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            out[r["step"]] = float(value)
    return out


def _save(fig: Figure, out: str | Path) -> Path:
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out


def _style(ax, title: str, xlabel: str | None = None) -> None:
    ax.set_title(title, fontsize=9)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def plot_curves(
    runs: dict[str, list[str | Path]],
    out: str | Path,
    panels: list[tuple[str, str]],
    colours: dict[str, str] | None = None,
) -> Path | None:
    """One panel per metric; per label the mean over its runs (seeds) with a min-max band."""
    data = {label: [read_metrics(d) for d in dirs] for label, dirs in runs.items()}
    present = [(k, t) for k, t in panels if any(series(rows, k) for runs_ in data.values() for rows in runs_)]
    if not present:
        return None
    colours = colours or colours_for(list(runs))
    cols = min(3, len(present))
    nrows = math.ceil(len(present) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.2 * nrows))
    FigureCanvasAgg(fig)
    for i, (key, title) in enumerate(present):
        ax = fig.add_subplot(nrows, cols, i + 1)
        for label, runs_ in data.items():
            per_seed = [series(rows, key) for rows in runs_]
            steps = sorted(set.intersection(*(set(s) for s in per_seed))) if per_seed else []
            if not steps:
                continue
            mean = [statistics.fmean(s[x] for s in per_seed) for x in steps]
            ax.plot(steps, mean, label=label, color=colours.get(label), lw=1.4)
            if len(per_seed) > 1:
                ax.fill_between(
                    steps,
                    [min(s[x] for s in per_seed) for x in steps],
                    [max(s[x] for s in per_seed) for x in steps],
                    color=colours.get(label),
                    alpha=0.15,
                )
        if key.startswith("loss"):
            ax.set_yscale("log")
        _style(ax, title, "step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    return _save(fig, out)


def plot_bars(
    values: dict[str, dict[str, tuple[float, float]]],
    out: str | Path,
    title: str,
    chance: dict[str, float] | None = None,
    ylabel: str = "accuracy",
    colours: dict[str, str] | None = None,
) -> Path:
    """``values[task][label] = (mean, std)``; grouped bars with error bars and a dashed chance tick per task."""
    tasks = list(values)
    labels = list(dict.fromkeys(m for t in tasks for m in values[t]))
    colours = colours or colours_for(labels)
    fig = Figure(figsize=(min(14.0, max(6.0, 0.28 * len(tasks) * max(1, len(labels)) + 2)), 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(labels))
    for j, m in enumerate(labels):
        xs = [i + (j - (len(labels) - 1) / 2) * width for i in range(len(tasks))]
        means = [values[t].get(m, (math.nan, 0.0))[0] for t in tasks]
        stds = [values[t].get(m, (math.nan, 0.0))[1] for t in tasks]
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=m, color=colours.get(m))
    for i, t in enumerate(tasks):
        if chance and t in chance and chance[t] is not None and math.isfinite(chance[t]):
            ax.hlines(chance[t], i - 0.45, i + 0.45, colors="k", linestyles="dashed", lw=1)
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels(tasks, fontsize=7, rotation=25, ha="right")
    ax.set_ylabel(ylabel, fontsize=8)
    _style(ax, title + ("   (dashed: chance)" if chance else ""))
    ax.grid(axis="x", alpha=0)
    ax.legend(fontsize=7)
    return _save(fig, out)


def plot_sweep(
    values: dict[str, dict[str, dict[str, tuple[float, float]]]],
    settings: list[str],
    out: str | Path,
    colours: dict[str, str] | None = None,
) -> Path:
    """``values[metric][method][setting] = (mean, std)``: one panel per metric, x = setting, a line per method."""
    metrics = list(values)
    methods = list(dict.fromkeys(m for v in values.values() for m in v))
    colours = colours or colours_for(methods)
    cols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.3 * nrows))
    FigureCanvasAgg(fig)
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(nrows, cols, i + 1)
        for m in methods:
            pts = [(j, *values[metric][m][s]) for j, s in enumerate(settings) if s in values[metric].get(m, {})]
            if pts:
                ax.errorbar(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    yerr=[p[2] for p in pts],
                    label=m,
                    color=colours.get(m),
                    marker="o",
                    ms=3,
                    capsize=2,
                    lw=1.3,
                )
        ax.set_xticks(range(len(settings)))
        ax.set_xticklabels(settings, fontsize=6, rotation=20, ha="right")
        _style(ax, metric)
        ax.legend(fontsize=6)
    return _save(fig, out)
