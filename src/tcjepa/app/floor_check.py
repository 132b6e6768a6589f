"""Did pretraining learn? Each arm minus the random-init encoder of the same seed, on five main probes
(``MAIN_PROBES``; runs pretrained on `fashion-scenes` are read on that testbed's own five, ``FASHION_PROBES``).

The criterion the project holds its CPU recipe to: a method *clearly learns* when it beats the random-init
floor by at least ``MARGIN`` points on at least ``NEEDED`` of the five main probes, on every seed. Pairs
are made by seed id (the floor of seed k was initialised exactly as the arms of seed k).
"""

from __future__ import annotations

import math

MAIN_PROBES = ("scene/colour", "scene/count", "scene/shape", "scene/relation", "fashion/linear")
# Runs pretrained on `fashion-scenes` are held to the same bar on that testbed's own questions.
FASHION_PROBES = ("fscene/class", "fscene/class_2nd", "fscene/count", "fscene/relation", "fashion/linear")
PROBES_BY_DATA = {"fashion-scenes": FASHION_PROBES}
SHORT = {
    "scene/colour": "colour",
    "scene/count": "count",
    "scene/shape": "shape",
    "scene/relation": "relation",
    "fashion/linear": "Fashion-MNIST",
    "fscene/class": "class",
    "fscene/class_2nd": "2nd class",
    "fscene/count": "count",
    "fscene/relation": "relation",
}
MARGIN = 0.10
NEEDED = 3


def probe_key(probe: str, split: str) -> str:
    """``scene/colour`` + ``test`` -> ``scene/colour/test``; Fashion-MNIST's test metric has no suffix."""
    if probe == "fashion/linear":
        return probe if split == "test" else f"{probe}/{split}"
    return f"{probe}/{split}"


def probes_for(data_name: str) -> tuple[str, ...]:
    """The five probes the bar is read on for runs pretrained on ``data_name``."""
    return PROBES_BY_DATA.get(data_name, MAIN_PROBES)


def floor_gaps(
    arm: dict[int, dict], floor: dict[int, dict], split: str, probes: tuple[str, ...] = MAIN_PROBES
) -> dict[int, dict[str, float]]:
    """seed -> probe -> (arm - floor), for the seeds both have; a probe missing on either side is left out."""
    out: dict[int, dict[str, float]] = {}
    for seed in sorted(set(arm) & set(floor)):
        gaps = {}
        for probe in probes:
            key = probe_key(probe, split)
            a, f = arm[seed].get(key), floor[seed].get(key)
            if a is not None and f is not None and math.isfinite(a) and math.isfinite(f):
                gaps[probe] = a - f
        out[seed] = gaps
    return out


def clearly_learns(gaps: dict[int, dict[str, float]]) -> bool | None:
    """True when every seed has >= NEEDED probes at >= MARGIN above the floor; None without any seed."""
    if not gaps:
        return None
    return all(sum(g >= MARGIN - 1e-12 for g in per.values()) >= NEEDED for per in gaps.values())


def floor_lines(
    rows: dict[str, dict[int, dict]], floor: dict[int, dict] | None, split: str, probes: tuple[str, ...] = MAIN_PROBES
) -> list[str]:
    """Markdown: one row per (arm, seed) with the gap on each main probe, and the verdict per arm."""
    if not floor or not rows:
        return []
    head = [
        "",
        f"## Above the random-init floor ({split} split)",
        "",
        f"Each arm minus the random-init encoder of the same seed, in points. An arm *clearly learns* when it is "
        f"at least {100 * MARGIN:.0f} points above the floor on at least {NEEDED} of these five probes on every "
        "seed.",
        "",
        "| arm | seed | " + " | ".join(SHORT[p] for p in probes) + " | probes >= +10 |",
        "|---" * (len(probes) + 3) + "|",
    ]
    body, verdicts = [], []
    for label, per_seed in rows.items():
        gaps = floor_gaps(per_seed, floor, split, probes)
        for seed, per in gaps.items():
            cells = [f"{100 * per[p]:+.1f}" if p in per else "—" for p in probes]
            hits = sum(g >= MARGIN - 1e-12 for g in per.values())
            cell = label.replace("|", "\\|")  # sweep labels such as "I-JEPA | default" would split the column
            body.append(f"| {cell} | {seed} | " + " | ".join(cells) + f" | {hits}/{len(per)} |")
        verdict = clearly_learns(gaps)
        if verdict is not None:
            verdicts.append(
                f"- {label}: {'clearly learns' if verdict else 'does not clearly learn'} ({len(gaps)} seed(s))."
            )
    return head + body + ["", *verdicts]
