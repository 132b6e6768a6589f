"""The JEPA prediction loss: predicted features against the (layer-normed) EMA target features."""

from __future__ import annotations

import torch
import torch.nn.functional as F

PRED_LOSSES = ("smooth_l1", "l2")


def prediction_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """smooth-L1 as the I-JEPA code uses (the paper writes L2, available as ``l2``)."""
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target)
    if kind == "l2":
        return F.mse_loss(pred, target)
    raise ValueError(f"loss.pred must be one of {', '.join(PRED_LOSSES)}, got {kind!r}")
