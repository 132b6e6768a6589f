"""TensorBoard event files beside metrics.jsonl, for watching a run live (``tensorboard --logdir runs/``).

metrics.jsonl stays the record every tool of the project reads; the events are a copy of its scalars for
eyes. Each record key becomes a tag grouped by what it measures (``loss/``, ``optim/``, ``monitor/``,
``data/``...), so TensorBoard shows one panel per group. ``tensorboard`` is an optional dependency
(``pip install tcjepa[tensorboard]``): with ``train.tensorboard`` unset the events are written when it is
installed, and a run that asked for them explicitly says in one line that it is not.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path

log = logging.getLogger("tcjepa.train")

# Record keys by panel; a key already holding a "/" (online/<task>) keeps its own group.
_GROUPS = (
    ("loss", ("loss",)),
    ("optim", ("lr", "wd", "ema", "ema_init_share", "grad_norm")),
    ("speed", ("img_per_s",)),
    ("monitor", ("rankme", "feat_std", "heldout_", "text_usage", "dead_zone")),
    ("predictor", ("target_var", "pred_vs_mean", "pos_frac_", "attn_entropy_")),
)


def tag_of(key: str) -> str:
    """The TensorBoard tag of a metrics.jsonl key: ``loss_pred`` -> ``loss/loss_pred``; data counters and
    anything unknown under ``data/``."""
    if "/" in key:
        return key
    for group, prefixes in _GROUPS:
        if any(key == p or key.startswith(p if p.endswith("_") else p + "_") for p in prefixes):
            return f"{group}/{key}"
    return f"data/{key}"


def scalars_of(record: dict) -> dict[str, float]:
    """The numbers of one metrics record by tag, as every live viewer shows them (TensorBoard, W&B): the step,
    flags (bools), text and non-finite values are left out."""
    return {
        tag_of(key): value
        for key, value in record.items()
        if key != "step" and not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    }


def tensorboard_installed() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardLog:
    """Writes each metrics record's numbers at its step. ``start_step`` > 0 (a resume) purges the events a
    killed run had written after its checkpoint, as the loop trims metrics.jsonl."""

    def __init__(self, run_dir: Path, start_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir), purge_step=start_step or None)

    def write(self, record: dict) -> None:
        step = int(record["step"])
        for tag, value in scalars_of(record).items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()  # logging steps are seconds apart: a live TensorBoard sees each at once

    def close(self) -> None:
        self.writer.close()


def open_tensorboard(wanted: bool | None, run_dir: Path, start_step: int = 0) -> TensorBoardLog | None:
    """The event writer ``train.tensorboard`` asks for: None (unset) writes when the package is installed."""
    if wanted is False:
        return None
    if not tensorboard_installed():
        if wanted:
            log.warning(
                "train.tensorboard=true but the tensorboard package is not installed; training continues with "
                "metrics.jsonl only (pip install tensorboard)"
            )
        return None
    return TensorBoardLog(run_dir, start_step)
