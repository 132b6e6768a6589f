"""The loop's learning-regime bookkeeping: EMA init share, counted fallbacks, and a refused schedule change."""

from __future__ import annotations

import json
import math

import pytest

from tcjepa.methods.schedules import ema_at
from tcjepa.train.checkpoint import CheckpointError
from tcjepa.train.loop import pretrain

pytestmark = pytest.mark.usefixtures("single_thread")


def test_metrics_log_the_ema_init_share_and_mask_statistics(tiny_cfg):
    cfg = tiny_cfg("train.steps=12", "train.log_every=4", "optim.ema=[0.9, 0.95]")
    run = pretrain(cfg, progress=False)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = records[-1]
    expected = math.prod(ema_at(cfg, t) for t in range(12))
    assert last["step"] == 11
    assert last["ema_init_share"] == pytest.approx(expected, rel=1e-9)
    assert records[0]["ema_init_share"] == pytest.approx(ema_at(cfg, 0))  # logged after step 0's update
    for key in ("mask_context_kept", "mask_context_block", "mask_fallback_images_total", "crop_fallback_images"):
        assert key in last, key
    assert last["mask_context_block"] == 49.0  # reference draw on the 8x8 grid
    assert last["captions_captionless"] == 0.0


def test_resume_with_changed_steps_is_refused_unless_allowed(tiny_cfg):
    cfg = tiny_cfg("train.steps=6", "train.ckpt_every=3")
    pretrain(cfg, progress=False)
    longer = tiny_cfg("train.steps=8", "train.ckpt_every=3", f"run.dir={cfg.run.dir}")
    with pytest.raises(CheckpointError, match="train.steps=6.*--allow-schedule-change"):
        pretrain(longer, resume=True, progress=False)
    pretrain(longer, resume=True, progress=False, allow_schedule_change=True)
