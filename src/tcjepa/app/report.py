"""The comparison report: ``report.md`` for people and ``report.json`` for programs, written from the runs.

Per arm and metric the mean, std and per-seed values; paired differences against the first arm (mean, std,
95% t interval, exact sign-test p and on how many seeds the arm came out ahead, from :mod:`.results`);
the setup, the caveats that keep those p-values from being read one by one, the encoder-floor check and
the figures (:mod:`.figures`). This module only arranges them as text, so every number in it can be traced
to a run folder.
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path

import torch

from ..config import EMA_INIT_SHARE_WARN, Config
from ..eval.scene import FSCENE_TASKS, SCENE_TASKS
from .figures import _figures
from .floor_check import floor_lines, probes_for
from .imported import ImportedReport, fill_missing_seeds, import_lines
from .plots import colours_for
from .results import EMA_SHARE, FLOOR, RAW, PerSeed, aggregate, collect, paired
from .stats import min_sign_test_p
from .sweeps import Plan

KEY_METRICS = [
    "scene/shape/test",
    "scene/count/test",
    "scene/colour/test",
    "scene/relation/test",
    "scene/shape_2nd/test",
    "scene/shape/heldout",
    "scene/shape_heldout/heldout",
    "knn/shape/k20",
    "dense/shape/miou",
    "dense/colour/miou",
    "fashion/linear",
    "fashion/knn/k20",
    "fscene/class/test",
    "fscene/class_2nd/test",
    "fscene/count/test",
    "fscene/relation/test",
    "fscene/class/heldout",
    "dense/garment/miou",
    "grounding/pointing",
    "grounding/pointing_agnostic",
    "grounding/pointing_centred",
    "health/rankme",
    "train/text_usage",
    "train/pos_frac",
]
DESCRIPTIONS = {
    **{f"scene/{k}/test": f"linear: {t.description}" for k, t in SCENE_TASKS.items()},
    **{f"scene/{k}/heldout": f"linear, held-out combos: {t.description}" for k, t in SCENE_TASKS.items()},
    **{f"scene/{k}/val": f"linear (validation): {t.description}" for k, t in SCENE_TASKS.items()},
    "fashion/linear/val": "Fashion-MNIST linear probe (validation)",
    **{f"fscene/{k}/test": f"fashion-scenes linear: {t.description}" for k, t in FSCENE_TASKS.items()},
    **{f"fscene/{k}/heldout": f"fashion-scenes linear, unseen pairs: {t.description}" for k, t in FSCENE_TASKS.items()},
    **{f"fscene/{k}/val": f"fashion-scenes linear (validation): {t.description}" for k, t in FSCENE_TASKS.items()},
    "dense/garment/miou": "fashion-scenes dense linear probe, garment class (mIoU)",
    "knn/shape/k20": "kNN (k=20): shape of the largest object",
    "dense/shape/miou": "dense linear probe, object shape (mIoU)",
    "dense/colour/miou": "dense linear probe, object colour (mIoU)",
    "fashion/linear": "Fashion-MNIST linear probe",
    "fashion/knn/k20": "Fashion-MNIST kNN (k=20)",
    "grounding/pointing": "pointing game on colour/shape/garment words (the run's own cosine)",
    "grounding/pointing_agnostic": "pointing game with the caption's mean map for every word (word-agnostic control)",
    "grounding/pointing_centred": "pointing game, read on caption-centred cosines",
    "train/attn_entropy": "attention entropy over words at the end (nats)",
    "health/rankme": "RankMe of pooled test features (not a %)",
    "train/text_usage": "text usage at the end (shuffled / true caption loss; 1 = ignored)",
    "train/pos_frac": "positive patch-word cosines at the end (0 = dead zone)",
}


def _fmt(key: str, mean: float, std: float | None = None) -> str:
    if not math.isfinite(mean):
        return "—"
    scale, digits = (1, 3) if key.startswith(RAW) else (100, 1)
    text = f"{scale * mean:.{digits}f}"
    return text if std is None else f"{text} ± {scale * std:.{digits}f}"


def _paired_cell(key: str, d: dict | None) -> str:
    if d is None:
        return "—"
    std = d["std"] if d["n"] > 1 else None
    ci = "n/a" if d["ci_low"] is None else f"[{_fmt(key, d['ci_low'])}, {_fmt(key, d['ci_high'])}]"
    p = "n/a" if d["p_sign"] is None else f"{d['p_sign']:.3g}"
    return f"{_fmt(key, d['mean'], std)} ({d['ahead']}/{d['n']}); CI {ci}; p {p}"


def _cell(text: str) -> str:
    """A table cell: sweep labels such as "I-JEPA | default" would otherwise split the column."""
    return text.replace("|", "\\|")


def _setup_lines(cfg: Config) -> list[str]:
    e, p, t = cfg.model.encoder, cfg.model.predictor, cfg.text
    return [
        f"- Data: `{cfg.data.name}` at {cfg.data.image_size} px, patch {e.patch_size} "
        f"({(cfg.data.image_size // e.patch_size) ** 2} patches); masks: context {list(cfg.mask.context_scale)}, "
        f"{cfg.mask.num_targets} targets {list(cfg.mask.target_scale)}.",
        f"- Encoder: ViT `{e.size}` (width {e.embed_dim or 'preset'}, depth {e.depth or 'preset'}); predictor "
        f"{p.depth} x {p.dim}.",
        f"- Budget: {cfg.train.steps} steps x batch {cfg.train.batch_size}, lr {cfg.optim.lr}, {cfg.train.precision}.",
        f"- Text (TC-JEPA arms): `{t.encoder}` word states, N = {t.num_captions} captions per image, sparsity "
        f"form `{cfg.loss.sparse_form}` (lambda {cfg.loss.sparse_weight}, beta {cfg.loss.consistency_weight}).",
    ]


def _arm_lines(plan: Plan, runs: dict[str, PerSeed], seeds: int) -> list[str]:
    """Each arm's own overrides of the setup above, and its seed count where it is not the full one."""
    lines = []
    for a in plan.arms:
        n = len(runs.get(a.label, []))
        extra = [] if n == seeds else [f"{n} of {seeds} seeds"]
        what = ", ".join([f"`{o}`" for o in a.overrides] + extra)
        lines.append(f"- {a.label}: {what}" if what else f"- {a.label}")
    if plan.floor and len(runs.get(FLOOR, [])) not in (0, seeds):
        lines.append(f"- {FLOOR}: {len(runs[FLOOR])} of {seeds} seeds")
    return ["- Arms (overrides on top of the setup above):", *["  " + x for x in lines]]


def _ema_lines(arms: list[str], agg: dict) -> list[str]:
    """Final share of the random init left in each arm's EMA target encoder (product of the momenta)."""
    cells, warnings = [], []
    for lab in arms:
        share = agg[lab].get(EMA_SHARE, {}).get("mean", math.nan)
        if not math.isfinite(share):
            cells.append(f"{lab} not logged")
            continue
        cells.append(f"{lab} {100 * share:.2g}%" if share >= 1e-4 else f"{lab} <0.01%")
        if share > EMA_INIT_SHARE_WARN:
            warnings.append(
                f"- **{lab}: the evaluated target encoder is still {100 * share:.0f}% its random initialisation "
                f"(EMA init share {share:.3f} > {EMA_INIT_SHARE_WARN}); its probes partly measure the random init.**"
            )
    return [
        "- EMA init share at the end (the random init left in the target encoder, mean over seeds): "
        + "; ".join(cells)
        + ".",
        *warnings,
    ]


def _caveat_lines(n_metrics: int, n_arms: int, seeds: int) -> list[str]:
    """Why the p-values in the paired table must not be read one by one."""
    p_min = min_sign_test_p(seeds)
    three = "" if seeds == 3 else " (with 3 seeds it is 0.25)"
    return [
        f"Many metrics are compared at once ({n_metrics} metrics x {n_arms} arm(s)), so some differences look "
        "large by chance alone, and the p-values are uncorrected for that: they are not evidence on their own. "
        f"With {seeds} paired seed(s) the smallest possible two-sided sign-test p is {p_min:.3g}{three}, whatever the "
        "effect size. Read the confidence intervals and how consistently the arm is ahead across seeds instead.",
    ]


def _context_lines(keys: list[str], agg: dict, ctx: dict, arms: list[str], seeds: int) -> list[str]:
    """Target (EMA) and context encoder side by side for the arms that have both evaluations."""
    both = [lab for lab in arms if lab in ctx]
    rows = [k for k in keys if not k.startswith("train/") and any(k in ctx[lab] for lab in both)]
    if not both or not rows:
        return []
    lines = [
        "",
        "## Target encoder beside the context encoder (JEPA arms)",
        "",
        "The tables above evaluate the EMA target encoder; these columns repeat it beside the context encoder "
        "(the one the gradient trains), read from each run's `eval_context.json`. Mean ± std over seeds.",
        "",
        "| metric | " + " | ".join(f"{_cell(lab)}: target | {_cell(lab)}: context encoder" for lab in both) + " |",
        "|---" * (2 * len(both) + 1) + "|",
    ]
    for k in rows:
        cells = []
        for lab in both:
            for src in (agg[lab], ctx[lab]):
                cells.append(_fmt(k, src[k]["mean"], src[k]["std"] if seeds > 1 else None) if k in src else "—")
        lines.append(f"| {DESCRIPTIONS.get(k, k)} | " + " | ".join(cells) + " |")
    return lines


def _in_plan_order(plan: Plan, table: dict[str, PerSeed]) -> dict[str, PerSeed]:
    order = [a.label for a in plan.arms] + [FLOOR]
    return {lab: table[lab] for lab in order if table.get(lab)}


def write_report(
    plan: Plan,
    seeds: int,
    out: Path,
    cfgs: dict,
    suite: str,
    command: str,
    timings: dict[str, list[float]],
    imports: list[ImportedReport] | None = None,
) -> Path:
    runs = collect(plan, seeds, out)
    context_runs = collect(plan, seeds, out, stem="eval_context", monitors=False)
    imports = imports or []
    fill_missing_seeds(runs, context_runs, imports, seeds)
    runs, context_runs = _in_plan_order(plan, runs), _in_plan_order(plan, context_runs)
    agg = aggregate(runs)
    ctx = aggregate(context_runs)
    labels = list(runs)
    colours = colours_for(labels)
    arms = [a.label for a in plan.arms if a.label in runs]
    keys = [k for k in (plan.key_metrics or KEY_METRICS) if any(k in agg[lab] for lab in labels)]
    ref = arms[0] if arms else None
    pairs = {lab: {k: paired(runs[ref], runs[lab], k) for k in keys} for lab in arms[1:]} if ref else {}
    context_vs_target = {
        lab: {k: paired(runs[lab], context_runs[lab], k) for k in keys if not k.startswith("train/")}
        for lab in arms
        if lab in context_runs
    }
    chance = {
        k: next((agg[lab][f"chance/{k}"]["mean"] for lab in labels if f"chance/{k}" in agg[lab]), None) for k in keys
    }
    figures = _figures(plan, out, agg, arms, keys, chance, colours, seeds)
    report = {
        "plan": plan.name,
        "description": plan.description,
        "command": command,
        "suite": suite,
        "seeds": seeds,
        "arms": labels,
        "reference": ref,
        "metrics": agg,
        "paired_vs_reference": pairs,
        "context_encoder_metrics": ctx,
        "context_minus_target": context_vs_target,  # context - target, paired by seed
        "machine": f"{platform.machine()} CPU x{os.cpu_count()}, torch {torch.__version__}",
        "wall_seconds_this_invocation": {k: sum(v) for k, v in timings.items()},
        "configs": {a.label: cfgs[(0, a.slug)].to_dict() for a in plan.arms},
        "imported": [
            {"source": str(imp.source), "command": imp.command, "machine": imp.machine, "seeds": imp.used}
            for imp in imports
            if imp.used
        ],
    }
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    cfg0 = cfgs[(0, plan.arms[0].slug)]
    lines = [
        f"# Comparison: {plan.name}",
        "",
        plan.description,
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {report['machine']}. Seeds: {seeds}. Evaluation suite: `{suite}`."
        + (" Some seeds come from earlier reports (see the section on them below)." if report["imported"] else ""),
        "",
        "## Setup",
        "",
        *_setup_lines(cfg0),
        *_arm_lines(plan, runs, seeds),
        *_ema_lines(arms, agg),
        "",
        "All arms of a seed see the same data stream and start from the same weights where the models agree. "
        "Accuracies in % (mean ± std over seeds); chance = the most frequent training class.",
        "",
        "## Results",
        "",
        "| metric | chance | " + " | ".join(map(_cell, labels)) + " |",
        "|---" * (len(labels) + 2) + "|",
    ]
    for k in keys:
        cells = [
            _fmt(k, agg[lab][k]["mean"], agg[lab][k]["std"] if seeds > 1 else None) if k in agg[lab] else "—"
            for lab in labels
        ]
        c = chance.get(k)
        lines.append(
            f"| {DESCRIPTIONS.get(k, k)} | {_fmt(k, c) if c is not None else ''} | " + " | ".join(cells) + " |"
        )
    if pairs:
        # The floor p the sign test can reach depends on the seeds actually paired, not on those planned.
        n_paired = max((d["n"] for per in pairs.values() for d in per.values() if d), default=seeds)
        lines += [
            "",
            f"## Paired differences against {ref} (same seed)",
            "",
            "Mean difference ± std over the seeds both arms have (paired by seed id), on how many of them the "
            "arm is ahead, the 95% confidence interval of the mean difference (Student t; n/a below 2 seeds) and "
            "the two-sided exact sign-test p (ties dropped).",
            "",
            *_caveat_lines(len(keys), len(pairs), n_paired),
            "",
            "| metric | " + " | ".join(map(_cell, pairs)) + " |",
            "|---" * (len(pairs) + 1) + "|",
        ]
        for k in keys:
            lines.append(
                f"| {DESCRIPTIONS.get(k, k)} | " + " | ".join(_paired_cell(k, pairs[lab][k]) for lab in pairs) + " |"
            )
    lines += _context_lines(keys, agg, ctx, arms, seeds)
    floor_rows = {lab: runs[lab] for lab in arms}
    floor_rows.update({f"{lab} (context encoder)": context_runs[lab] for lab in arms if lab in context_runs})
    for split in ("test", "val") if any(k.endswith("/val") for k in keys) else ("test",):
        lines += floor_lines(floor_rows, runs.get(FLOOR), split, probes_for(cfg0.data.name))
    lines += import_lines(imports)
    failures = sorted(out.glob("*/seed*/FAILED.txt"))
    if failures:
        lines += ["", "## Failed runs (left out of every number above)", ""]
        for f in failures:
            lines.append(f"- `{f.parent.relative_to(out)}`: " + " ".join(f.read_text().split())[:400])
    lines += ["", "## Figures", ""] + [f"![{name}]({name}.png)" for name in figures]
    lines += [
        "",
        "Per-run folders hold `eval.md` (every probe of the target encoder), `eval_context.md` (the context "
        "encoder, JEPA runs), `metrics.jsonl` and the checkpoints.",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
