"""Monitors: the sparsity dead-zone alarm, RankMe and the text-usage probe."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from tcjepa.eval.health import effective_rank
from tcjepa.train.monitors import DeadZoneAlarm, FixedBatchMonitor, shuffled_text

pytestmark = pytest.mark.usefixtures("single_thread")


def _dead(step: int) -> dict:
    return {"step": step, "pos_frac_l0": 0.0, "pos_frac_l1": 0.0}


def test_dead_zone_alarm_fires_once_after_patience(caplog: pytest.LogCaptureFixture) -> None:
    alarm = DeadZoneAlarm(patience=3)
    with caplog.at_level(logging.WARNING, logger="tcjepa.train"):
        flags = [alarm.update(_dead(s)) for s in range(5)]
    assert flags == [False, False, True, True, True]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "DEAD ZONE at step 2" in warnings[0].getMessage()
    assert "loss.sparse_form" in warnings[0].getMessage()


def test_dead_zone_streak_resets_when_any_layer_has_positive_cosines(caplog: pytest.LogCaptureFixture) -> None:
    alarm = DeadZoneAlarm(patience=3)
    with caplog.at_level(logging.WARNING, logger="tcjepa.train"):
        flags = [alarm.update(_dead(0)), alarm.update(_dead(1))]
        flags.append(alarm.update({"step": 2, "pos_frac_l0": 0.0, "pos_frac_l1": 0.01}))
        flags += [alarm.update(_dead(s)) for s in (3, 4)]
    assert flags == [False] * 5 and not caplog.records
    assert alarm.update({"step": 5, "loss": 1.0}) is False  # I-JEPA: nothing to watch


def test_dead_zone_is_logged_every_step(trained_run) -> None:
    _, run_dir = trained_run
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all("dead_zone" in r and "pos_frac_l0" in r for r in lines)
    assert all(r["pos_frac_l0"] > 0 and r["dead_zone"] == 0 for r in lines)  # cosines alive: no alarm


def test_effective_rank() -> None:
    assert effective_rank(torch.eye(6)) == pytest.approx(6.0, rel=1e-5)
    rank_one = torch.randn(10, 1) @ torch.randn(1, 8)
    assert effective_rank(rank_one) == pytest.approx(1.0, abs=1e-3)
    assert 1.0 < effective_rank(torch.randn(64, 8)) <= 8.0


def test_shuffled_text_rolls_captions_only() -> None:
    batch = {
        "images": torch.arange(3).float(),
        "text": torch.arange(3).view(3, 1, 1, 1).float(),
        "text_mask": torch.tensor([[[True]], [[False]], [[True]]]),
        "caption_mask": torch.tensor([[True], [False], [True]]),
    }
    out = shuffled_text(batch)
    assert torch.equal(out["images"], batch["images"])
    assert out["text"].flatten().tolist() == [2.0, 0.0, 1.0]
    assert out["caption_mask"].flatten().tolist() == [True, True, False]
    assert batch["text"].flatten().tolist() == [0.0, 1.0, 2.0]  # the original batch is untouched


def test_fixed_batch_monitor_restores_mode(tiny_cfg, make_batch, add_text) -> None:
    from tcjepa.methods import build_method

    torch.manual_seed(0)
    method = build_method(tiny_cfg(), text_dim=32).train()
    out = FixedBatchMonitor(add_text(make_batch(batch_size=4)))(method)
    assert method.training
    assert {"rankme", "rankme_patch", "feat_std", "text_usage"} <= out.keys()
    assert out["text_usage"] == pytest.approx(out["heldout_loss_shuffled_text"] / out["heldout_loss_true_text"])


def test_training_loop_raises_the_alarm(tiny_cfg, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    from tcjepa.methods import tcjepa as tcjepa_module
    from tcjepa.train.loop import pretrain

    monkeypatch.setattr(tcjepa_module, "link_stats", lambda outputs, text: {"pos_frac_l0": 0.0, "pos_frac_l1": 0.0})
    cfg = tiny_cfg("train.steps=6", "train.log_every=1", "train.batch_size=2", "train.monitor_every=0")
    with caplog.at_level(logging.WARNING, logger="tcjepa.train"):
        run_dir = pretrain(cfg, progress=False)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["dead_zone"] for r in lines] == [0, 0, 0, 0, 1, 1]
    assert sum("DEAD ZONE at step 4" in r.getMessage() for r in caplog.records) == 1
