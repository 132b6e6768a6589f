"""The figures of a comparison report: probe bars, training curves, word maps and, for a sweep, its panels.

Which figures a report draws and from which numbers; the drawing itself is :mod:`.plots` (bars, curves,
sweeps) and :mod:`.viz` (word maps). Word maps need the runs' checkpoints, so they are drawn only for arms
whose method links patches to words, asked of the method itself rather than of its name.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..config import config_from_dict
from ..methods import METHODS
from .plots import colours_for, plot_bars, plot_curves, plot_sweep
from .results import RAW
from .sweeps import Plan

CURVE_PANELS = [
    ("online/shape", "online linear probe: shape (held-out scenes)"),
    ("online/count", "online linear probe: count"),
    ("online/pointing", "pointing game on caption words"),
    ("rankme", "RankMe of target features (fixed batch)"),
    ("text_usage", "text usage: loss with shuffled / true captions"),
    ("pos_frac_l*", "positive patch-word cosines (mean over layers)"),
    ("attn_entropy_l*", "attention entropy over words (nats)"),
    ("loss_pred", "prediction loss (own target space per method)"),
]


def _grounded(run_dir: Path) -> bool:
    """Does this run's method expose patch-word links (so word maps can be drawn)?"""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return False
    cfg = config_from_dict(yaml.safe_load(path.read_text()))
    return cfg.method in METHODS and METHODS[cfg.method].grounded_for(cfg)


def _figures(
    plan: Plan, out: Path, agg: dict, arms: list[str], keys: list[str], chance: dict, colours: dict, seeds: int
) -> list[str]:
    names = []
    pct = [k for k in keys if not k.startswith(RAW)]
    bars = {
        k.replace("/test", "").replace("scene/", ""): {
            lab: (agg[lab][k]["mean"], agg[lab][k]["std"]) for lab in agg if k in agg[lab]
        }
        for k in pct
    }
    short_chance = {k.replace("/test", "").replace("scene/", ""): v for k, v in chance.items()}
    plot_bars(
        bars,
        out / "probes.png",
        f"frozen-encoder probes, mean ± std over {seeds} seed(s)",
        short_chance,
        colours=colours,
    )
    names.append("probes")
    runs = {
        a.label: [
            out / a.slug / f"seed{s}" for s in range(seeds) if (out / a.slug / f"seed{s}" / "metrics.jsonl").is_file()
        ]
        for a in plan.arms
        if a.label in arms
    }
    if plot_curves(runs, out / "curves.png", CURVE_PANELS, colours):
        names.append("curves")
    # The lowest seed whose run folder is here: seeds imported from an earlier report have none.
    first = {a.label: next((d for d in runs.get(a.label, []) if _grounded(d)), None) for a in plan.arms}
    tc_arms = {label: d for label, d in first.items() if d is not None}
    if tc_arms:
        from .viz import word_map_grid

        # One pass over the runs' checkpoints draws both views.
        names += [p.stem for p in word_map_grid(tc_arms, out / "word_maps.png", raw_out=out / "word_maps_raw.png")]
    if plan.settings:
        methods = list(dict.fromkeys(a.method_label for a in plan.arms))
        values = {
            k: {
                m: {
                    a.setting: (agg[a.label][k]["mean"], agg[a.label][k]["std"])
                    for a in plan.arms
                    if a.method_label == m and a.label in agg and k in agg[a.label]
                }
                for m in methods
            }
            for k in keys[:6]
        }
        plot_sweep(values, plan.settings, out / "sweep.png", colours_for(methods))
        names.append("sweep")
    return names
