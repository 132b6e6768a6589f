"""The optimizer: AdamW on the method's parameter groups, in the fastest implementation that keeps the numbers.

On CUDA the fused kernel (one launch for every parameter); elsewhere the multi-tensor ``foreach`` path,
which on CPU computes exactly what the per-parameter loop computes (the loss fingerprint,
``scripts/loss_fingerprint.py``, is unchanged by it). The choice is stored in the optimizer's state, so a
resumed run keeps the implementation it started with and continues with the same arithmetic.
"""

from __future__ import annotations

import torch

from ..config import Config


def adamw_impl(device: torch.device) -> dict[str, bool]:
    """``fused`` where PyTorch has a fused AdamW kernel for ``device`` and it is a GPU; else ``foreach``."""
    if device.type == "cuda":
        return {"fused": True}
    return {"foreach": True}


def build_optimizer(method: torch.nn.Module, cfg: Config, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        method.param_groups(),
        lr=cfg.optim.lr,
        betas=cfg.optim.betas,
        weight_decay=cfg.optim.weight_decay,
        **adamw_impl(device),
    )
