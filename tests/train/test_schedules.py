"""Learning-rate, weight-decay, EMA and regulariser-ramp schedules: endpoints, shape and monotonicity."""

from __future__ import annotations

import math

import pytest

from tcjepa.config import load_config
from tcjepa.methods.schedules import ema_at, ema_init_share, ramp
from tcjepa.train.schedules import lr_at, warmup_steps, wd_at


@pytest.fixture
def cfg():
    return load_config(
        None,
        ["train.steps=100", "optim.warmup_steps=10", "optim.lr=1e-3", "optim.start_lr=2e-4", "optim.final_lr=1e-6"],
    )


def test_lr_warmup_then_cosine(cfg) -> None:
    lrs = [lr_at(cfg, s) for s in range(101)]
    assert lrs[0] == pytest.approx(2e-4)
    assert lrs[5] == pytest.approx(2e-4 + 0.5 * (1e-3 - 2e-4))  # linear warm-up
    assert lrs[10] == pytest.approx(1e-3)  # peak exactly at the end of warm-up
    assert lrs[100] == pytest.approx(1e-6)
    assert lrs[55] == pytest.approx(1e-6 + 0.5 * (1e-3 - 1e-6))  # cosine midpoint
    assert lrs[40] == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5 * (1 + math.cos(math.pi * 30 / 90)))
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))
    assert all(a > b for a, b in zip(lrs[10:100], lrs[11:101]))
    assert lr_at(cfg, 150) == pytest.approx(1e-6)  # past the end it stays at the floor
    assert max(lrs) == pytest.approx(1e-3) and min(lrs) == pytest.approx(1e-6)


def test_default_warmup_is_ten_percent() -> None:
    cfg = load_config(None, ["train.steps=200"])
    assert warmup_steps(cfg) == 20
    assert lr_at(cfg, 20) == pytest.approx(cfg.optim.lr)
    assert warmup_steps(load_config(None, ["train.steps=3"])) == 0  # round(0.1 x 3)
    assert warmup_steps(load_config(None, ["train.steps=100", "optim.warmup_steps=0"])) == 0  # 0 = no warm-up


def test_weight_decay_cosine_ramp(cfg) -> None:
    wds = [wd_at(cfg, s) for s in range(101)]
    assert wds[0] == pytest.approx(0.04)
    assert wds[50] == pytest.approx(0.22, abs=1e-12)
    assert wds[100] == pytest.approx(0.4)
    assert wds[25] == pytest.approx(0.4 + (0.04 - 0.4) * 0.5 * (1 + math.cos(math.pi / 4)))  # cosine, not linear
    assert abs(wds[25] - 0.13) > 0.01
    assert all(a < b for a, b in zip(wds, wds[1:]))
    assert wd_at(cfg, 500) == pytest.approx(0.4)


def test_ema_momentum_linear(cfg) -> None:
    assert ema_at(cfg, 0) == pytest.approx(0.996)
    assert ema_at(cfg, 50) == pytest.approx(0.998)
    assert ema_at(cfg, 25) == pytest.approx(0.997)
    assert ema_at(cfg, 100) == pytest.approx(1.0)
    assert ema_at(cfg, 1000) == pytest.approx(1.0)
    ms = [ema_at(cfg, s) for s in range(101)]
    steps = [b - a for a, b in zip(ms, ms[1:])]
    assert all(d == pytest.approx(0.004 / 100) for d in steps)


def test_ramp() -> None:
    assert [ramp(s, 10) for s in (0, 1, 5, 10, 11, 100)] == pytest.approx([0.0, 0.1, 0.5, 1.0, 1.0, 1.0])
    assert ramp(0, 0) == 1.0 and ramp(7, 0) == 1.0


def test_ema_init_share_is_the_product_of_momenta():
    cfg = load_config(None, ["train.steps=300", "optim.ema=[0.996, 1.0]"])
    expected = 1.0
    for t in range(300):
        expected *= ema_at(cfg, t)
    assert abs(ema_init_share(cfg, 300) - expected) < 1e-12
    assert 0.5 < ema_init_share(cfg, 300) < 0.6  # the old demo: the target was 55% its initialisation
    short = load_config(None, ["train.steps=300", "optim.ema=[0.98, 0.999]"])
    assert ema_init_share(short, 300) < 0.05
    assert ema_init_share(cfg, 0) == 1.0
