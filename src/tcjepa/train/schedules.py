"""Per-step schedules, pure functions of the step so that resuming needs no scheduler state.

- learning rate: linear warm-up from ``start_lr`` to ``lr``, then cosine to ``final_lr`` (I-JEPA);
- weight decay: cosine-shaped ramp from ``weight_decay`` to ``final_weight_decay`` (I-JEPA's code;
  both papers call it "linear", the code is not);
- EMA momentum: linear from ``ema[0]`` to ``ema[1]`` over the run.

The EMA target encoder starts as a copy of the random initialisation and moves by (1 - m) per step,
so the weight the initialisation still has after T steps is the product of the momenta, m_0 ... m_{T-1}
(``ema_init_share``). The paper's 0.996 -> 1.0 over 600 steps leaves 30%: such an encoder is largely
random. Short presets therefore start lower, and `config.validate` warns when a run would end above 5%.
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


def ema_at(cfg: Config, step: int) -> float:
    start, end = cfg.optim.ema
    return start + (end - start) * min(1.0, step / max(1, cfg.train.steps))


def ema_init_share(cfg: Config, steps: int) -> float:
    """Share of the initial weights left in the EMA target after ``steps`` updates: prod of ema_at(t), t < steps."""
    log_share = math.fsum(math.log(m) if m > 0 else -math.inf for m in (ema_at(cfg, t) for t in range(steps)))
    return math.exp(log_share)


def ramp(step: int, warmup: int) -> float:
    """Multiplier in [0, 1] that rises linearly over ``warmup`` steps (1 from the start when warmup is 0)."""
    if warmup <= 0:
        return 1.0
    return min(1.0, step / warmup)
