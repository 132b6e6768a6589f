"""Per-step schedules, pure functions of the step so that resuming needs no scheduler state.

- learning rate: linear warm-up from ``start_lr`` to ``lr``, then cosine to ``final_lr`` (I-JEPA);
- weight decay: cosine-shaped ramp from ``weight_decay`` to ``final_weight_decay`` (I-JEPA's code;
  both papers call it "linear", the code is not);

The EMA momentum and the regulariser ramp belong to the methods (``methods.schedules``).
"""

from __future__ import annotations

import math

from ..config import Config


def warmup_steps(cfg: Config) -> int:
    """``optim.warmup_steps`` when set (0 = none), else ``optim.warmup_fraction`` of the run."""
    if cfg.optim.warmup_steps is not None:
        return cfg.optim.warmup_steps
    return round(cfg.optim.warmup_fraction * cfg.train.steps)


def lr_at(cfg: Config, step: int) -> float:
    o, total = cfg.optim, cfg.train.steps
    warm = warmup_steps(cfg)
    if step < warm:
        return o.start_lr + (o.lr - o.start_lr) * step / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return o.final_lr + (o.lr - o.final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def wd_at(cfg: Config, step: int) -> float:
    o = cfg.optim
    progress = min(1.0, step / max(1, cfg.train.steps))
    return o.final_weight_decay + (o.weight_decay - o.final_weight_decay) * 0.5 * (1.0 + math.cos(math.pi * progress))
