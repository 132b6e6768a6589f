"""Schedules owned by the methods: the EMA momentum of the target encoder and the regulariser ramp.

Pure functions of the step (docs/design.md), like the lr and weight-decay schedules of ``train.schedules``.
The EMA target encoder starts as a copy of the random initialisation and moves by (1 - m) per step, so the
weight the initialisation still has after T steps is the product of the momenta, m_0 ... m_{T-1}
(``ema_init_share``). The paper's 0.996 -> 1.0 over 600 steps leaves 30%: such an encoder is largely
random. Short presets therefore start lower, and training warns when a run would end above 5%.
"""

from __future__ import annotations

import math

from ..config import Config


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
