"""``eval.md``: the human-readable side of ``eval.json``, one table per metric family with chance beside
every number, and the warnings a reader needs (an EMA target that is still largely its initialisation).
"""

from __future__ import annotations

import math

from ..config import EMA_INIT_SHARE_WARN
from ..data.fashion import INSTALL_HINT
from .dense import DENSE_TARGETS, FSCENE_DENSE_TARGETS
from .scene import FSCENE_TASKS, SCENE_TASKS


def _pct(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{100 * x:.1f}"


ENCODER_WORDS = {
    "target": "the encoder downstream users get (for JEPA methods the EMA target encoder)",
    "context": "the context encoder (trained by gradient; not the EMA copy)",
}


def _encoder_lines(s: dict) -> list[str]:
    """Which encoder was read and, for runs, how much of the EMA target is still its random init."""
    lines = []
    if "encoder" in s:
        lines.append(f"Encoder: `{s['encoder']}`, {ENCODER_WORDS.get(s['encoder'], 'as given')}.")
    if "frozen_teacher" in s:
        lines.append(
            f"Targets came from the frozen teacher `{s['frozen_teacher']}` (model.target=frozen:PATH), which did "
            "not learn: the encoder evaluated is this run's context encoder."
        )
    if "ema_init_share" in s:
        share = s["ema_init_share"]
        if share is None:
            lines.append("`ema_init_share` (share of the random init left in the EMA target): not logged.")
        else:
            lines.append(
                f"`ema_init_share` (share of the random init left in the EMA target, last logged step): "
                f"{100 * share:.1f}%."
            )
            if share > EMA_INIT_SHARE_WARN and s.get("encoder") != "context":
                lines.append(
                    f"**Warning: the target encoder is still {100 * share:.0f}% its random initialisation; "
                    "evaluate --encoder context or train with a shorter EMA horizon.**"
                )
    return [*lines, ""] if lines else []


def eval_markdown(result: dict) -> str:
    m, s = result["metrics"], result["settings"]
    chance = lambda k: m.get(f"chance/{k}")
    share = m.get("data/heldout_largest_share")
    lines = [
        f"# Evaluation of {s['target']}",
        "",
        *_encoder_lines(s),
        f"Suite `{s['suite']['name']}`, features: {s['features']}, {s['image_size']} px, "
        f"{s['seconds']} s on {s['machine']}. Accuracies in %; chance = always the most frequent training "
        "class. `test`: scenes with attribute combinations seen in training; `heldout`: each scene holds a "
        "(colour, shape) pair never seen in training"
        + (
            f"; it is the largest object in only {_pct(share)}% of them, so in the others a largest-object task on "
            "`heldout` asks about a seen pair (`shape_heldout` is scored only where the largest object is the "
            "held-out pair)"
            if share is not None
            else ""
        )
        + ". `val`: the head picked on validation (tune on this, never on test).",
        "",
        "## Scene probes (`shapes`)",
        "",
        "| task | chance (test) | linear val | linear test | linear heldout | kNN k=20 | attentive test | "
        "attentive heldout |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in s["suite"]["tasks"]:
        lines.append(
            f"| {name}: {SCENE_TASKS[name].description} | {_pct(chance(f'scene/{name}/test'))} | "
            f"{_pct(m.get(f'scene/{name}/val'))} | {_pct(m.get(f'scene/{name}/test'))} | "
            f"{_pct(m.get(f'scene/{name}/heldout'))} | "
            f"{_pct(m.get(f'knn/{name}/k20'))} | {_pct(m.get(f'attentive/{name}/test'))} | "
            f"{_pct(m.get(f'attentive/{name}/heldout'))} |"
        )
    if any(k.startswith("dense/") for k in m):
        lines += [
            "",
            "## Dense probe (linear per patch, mIoU over background + classes)",
            "",
            "| target | mIoU | pixel accuracy |",
            "|---|---|---|",
        ]
        lines += [
            f"| object {t} | {_pct(m.get(f'dense/{t}/miou'))} | {_pct(m.get(f'dense/{t}/pixel_acc'))} |"
            for t in DENSE_TARGETS
        ]
        lines += [
            f"| {t} class (fashion-scenes) | {_pct(m.get(f'dense/{t}/miou'))} | {_pct(m.get(f'dense/{t}/pixel_acc'))} |"
            for t in FSCENE_DENSE_TARGETS
            if f"dense/{t}/miou" in m
        ]
    if "fashion/linear" in m:
        ks = s["suite"]["knn_ks"]
        lines += [
            "",
            "## Fashion-MNIST (real images, 10 classes)",
            "",
            "| chance | linear val | linear test | " + " | ".join(f"kNN k={k}" for k in ks) + " |",
            "|---" * (3 + len(ks)) + "|",
            f"| {_pct(chance('fashion/linear'))} | {_pct(m.get('fashion/linear/val'))} | {_pct(m['fashion/linear'])} | "
            + " | ".join(_pct(m.get(f"fashion/knn/k{k}")) for k in ks)
            + " |",
        ]
    else:
        lines += ["", f"Fashion-MNIST: not evaluated ({INSTALL_HINT})"]
    if any(k.startswith("fscene/") for k in m):
        lines += [
            "",
            "## Scene probes (`fashion-scenes`: 2-4 Fashion-MNIST items; `heldout` pairs classes never seen together)",
            "",
            "| task | chance (test) | linear val | linear test | linear heldout |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {name}: {task.description} | {_pct(chance(f'fscene/{name}/test'))} | "
            f"{_pct(m.get(f'fscene/{name}/val'))} | {_pct(m.get(f'fscene/{name}/test'))} | "
            f"{_pct(m.get(f'fscene/{name}/heldout'))} |"
            for name, task in FSCENE_TASKS.items()
            if f"fscene/{name}/test" in m
        ]
    lines += ["", "## Representation health (test scenes)", "", "| statistic | value |", "|---|---|"]
    lines += [f"| {k.split('/', 1)[1]} | {v:.4g} |" for k, v in m.items() if k.startswith("health/")]
    if "grounding/pointing" in m:
        lines += [
            "",
            "## Grounding: pointing game on caption words",
            "",
            "Does the patch with the highest patch-word cosine (mean over predictor layers) lie on the object "
            "the word names?",
            "",
            "| words | n | accuracy | chance |",
            "|---|---|---|---|",
            f"| all | {int(m['grounding/words'])} | {_pct(m['grounding/pointing'])} | "
            f"{_pct(chance('grounding/pointing'))} |",
        ]
        if "grounding/pointing_agnostic" in m:
            lines.append(
                f"| all, caption's mean map for every word (word-agnostic control) | | "
                f"{_pct(m['grounding/pointing_agnostic'])} | {_pct(chance('grounding/pointing'))} |"
            )
        for kind in ("colour", "shape", "garment"):
            if f"grounding/pointing_{kind}" in m:
                lines.append(
                    f"| {kind} words | | {_pct(m[f'grounding/pointing_{kind}'])} | "
                    f"{_pct(chance(f'grounding/pointing_{kind}'))} |"
                )
    lines += _image_text(m)
    return "\n".join(lines) + "\n"


def _image_text(m: dict) -> list[str]:
    """Retrieval and zero-shot rows; n/a where the encoder has no text space (the keys are absent)."""
    lines = [
        "",
        "## Image-text (`shapes` test scenes; contrastive methods' own text tower)",
        "",
        "Retrieval: one caption per scene, its summary sentence; a hit is any item with the same sentence. "
        "Zero-shot: colour and shape of the largest object from caption-template prompts.",
        "",
        "| metric | value | chance |",
        "|---|---|---|",
    ]
    rows = [f"retrieval/{d}/r{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)] + ["zeroshot/colour", "zeroshot/shape"]
    for key in rows:
        if key in m:
            lines.append(f"| {key} | {_pct(m[key])} | {_pct(m.get(f'chance/{key}'))} |")
        else:
            lines.append(f"| {key} | n/a | n/a |")
    if not any(key in m for key in rows):
        lines += ["", "n/a: the encoder has no text space (JEPA methods), so these do not apply."]
    return lines
