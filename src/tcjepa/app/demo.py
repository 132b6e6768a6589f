"""``tcjepa demo``: the README's first command. TC-JEPA and I-JEPA pretrained briefly on ``shapes``, the
quick evaluation suite on both and on the random-init floor, and a report with plots.

It is ``tcjepa compare --sweep demo --seeds 1``: re-running reuses finished runs and resumes interrupted
ones, so an interruption never costs the training already done. One seed is a first look, not evidence.
"""

from __future__ import annotations

from pathlib import Path

from .compare import run_compare
from .sweeps import load_sweep

# A smoke test of the whole pipeline in about two minutes; far too short to compare methods.
QUICK_OVERRIDES = ["train.steps=30", "train.log_every=5", "train.monitor_every=15", "train.ckpt_every=15"]


def run_demo(out: Path, quick: bool = False, progress: bool = True, jobs: int = 1) -> Path:
    plan = load_sweep("demo")
    command = "tcjepa demo" + (" --quick" if quick else "") + f" --out {out}"
    return run_compare(
        plan,
        seeds=1,
        out=out,
        suite="quick",
        extra=QUICK_OVERRIDES if quick else [],
        progress=progress,
        command=command,
        jobs=jobs,
    )
