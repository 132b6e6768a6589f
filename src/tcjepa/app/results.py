"""The numbers of a comparison: per arm and seed id, read back from the run folders, summarised and paired.

Numbers come only from the runs' own ``eval.json``, ``eval_context.json`` and ``metrics.jsonl`` files.
Differences between two arms are paired by seed id (same data stream, same initial weights where the
models agree), never by position, so a failed seed in one arm drops only that seed's pair. Kept apart from
the report's text (:mod:`.report`) and its figures (:mod:`.figures`), which both arrange these numbers.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from .plots import read_metrics, series
from .runs import checkpoint_step, logged_ema_init_share
from .stats import paired_summary
from .sweeps import Plan

FLOOR = "random-init"
RAW = ("health/", "train/")  # metrics printed as numbers, not percentages
EMA_SHARE = "train/ema_init_share"

PerSeed = dict[int, dict[str, float]]  # seed id -> that seed's metrics


def training_stats(run_dir: Path) -> dict[str, float]:
    """The last logged value of the training monitors that matter for comparisons."""
    rows = read_metrics(run_dir)
    out = {}
    for key, name in (
        ("text_usage", "text_usage"),
        ("pos_frac_l*", "pos_frac"),
        ("rankme", "rankme"),
        ("attn_entropy_l*", "attn_entropy"),
        ("pred_vs_mean", "pred_vs_mean"),
    ):
        s = series(rows, key)
        if s:
            out[f"train/{name}"] = s[max(s)]
    # Read as eval.md reads it: the share at the evaluated checkpoint, not at a step logged after it.
    share = logged_ema_init_share(run_dir, checkpoint_step(run_dir))
    if share is not None:
        out[EMA_SHARE] = share
    return out


def collect(plan: Plan, seeds: int, out: Path, stem: str = "eval", monitors: bool = True) -> dict[str, PerSeed]:
    """arm label -> seed id -> metrics (``<stem>.json`` metrics, + end-of-training monitors with ``monitors``).

    Keyed by seed id so that a seed missing in one arm (failed or not run yet) cannot shift the others.
    """
    runs: dict[str, PerSeed] = {}
    labels = [(a.label, out / a.slug) for a in plan.arms] + ([(FLOOR, out / FLOOR)] if plan.floor else [])
    for label, folder in labels:
        for seed in range(seeds):
            d = folder / f"seed{seed}"
            path = d / f"{stem}.json"
            if not path.is_file():
                continue
            metrics = json.loads(path.read_text())["metrics"]
            runs.setdefault(label, {})[seed] = {**metrics, **(training_stats(d) if monitors else {})}
    return runs


def summarise(values: dict[int, float]) -> dict:
    """Mean and std over seeds; ``values`` stays keyed by seed id (strings once in report.json)."""
    vals = [v for v in values.values() if v is not None and math.isfinite(v)]
    return {
        "mean": statistics.fmean(vals) if vals else math.nan,
        "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "values": values,
    }


def aggregate(runs: dict[str, PerSeed]) -> dict[str, dict[str, dict]]:
    out = {}
    for label, per_seed in runs.items():
        keys = sorted(set().union(*per_seed.values()))
        out[label] = {k: summarise({s: r.get(k, math.nan) for s, r in per_seed.items()}) for k in keys}
    return out


def paired(a: PerSeed, b: PerSeed, key: str) -> dict | None:
    """b - a over the seed ids both arms have: mean, std, 95% CI, sign-test p and seeds b is ahead."""
    common = sorted(set(a) & set(b))
    diffs, used = [], []
    for s in common:
        x, y = a[s].get(key), b[s].get(key)
        if x is not None and y is not None and math.isfinite(y - x):
            diffs.append(y - x)
            used.append(s)
    if not diffs:
        return None
    return {**paired_summary(diffs), "seeds": used}
