"""TensorBoard events hold exactly the scalars of metrics.jsonl, under grouped tags, at their steps."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tcjepa.config import load_config
from tcjepa.train import tensorboard as tb
from tcjepa.train.loop import pretrain

pytestmark = pytest.mark.usefixtures("single_thread")

RUN = ("train.steps=4", "train.batch_size=8", "train.log_every=1", "train.monitor_every=2", "data.num_workers=0")


def _events(run_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_tags_are_grouped_by_what_they_measure() -> None:
    assert tb.tag_of("loss") == "loss/loss"
    assert tb.tag_of("loss_sparse") == "loss/loss_sparse"
    assert tb.tag_of("grad_norm_cond_q") == "optim/grad_norm_cond_q"
    assert tb.tag_of("ema_init_share") == "optim/ema_init_share"
    assert tb.tag_of("rankme_patch") == "monitor/rankme_patch"
    assert tb.tag_of("heldout_loss_true_text") == "monitor/heldout_loss_true_text"
    assert tb.tag_of("online/pointing") == "online/pointing"
    assert tb.tag_of("pos_frac_l0") == "predictor/pos_frac_l0"
    assert tb.tag_of("mask_context_kept") == "data/mask_context_kept"
    assert tb.tag_of("lrx") == "data/lrx"  # a prefix only counts up to an underscore


def test_event_file_equals_metrics_jsonl(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    run = pretrain(load_config("tiny", [f"run.dir={tmp_path}", *RUN]), progress=False)  # train.tensorboard unset
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    events = _events(run)
    numbers = [(r["step"], k, v) for r in records for k, v in r.items() if k != "step" and isinstance(v, int | float)]
    expected = {(tb.tag_of(k), step): v for step, k, v in numbers}
    assert {"loss/loss", "optim/lr", "monitor/rankme", "speed/img_per_s"} <= set(events)
    got = {(tag, step): v for tag, by_step in events.items() for step, v in by_step.items()}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-30), key  # events store float32


def test_a_resume_replaces_the_events_written_after_its_checkpoint(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    overrides = [f"run.dir={tmp_path}", *RUN, "train.monitor_every=0", "train.ckpt_every=2", "train.keep_every=2"]
    pretrain(load_config("tiny", overrides), progress=False)
    ckpts = tmp_path / "checkpoints"
    (ckpts / "step_2.pt").replace(ckpts / "latest.pt")  # as if killed after step 3's log, before its checkpoint
    pretrain(load_config("tiny", overrides), resume=True, progress=False)
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss/loss")] == [0, 1, 2, 3]  # steps 2 and 3 once, from the resume


def test_explicit_request_without_the_package_says_so_in_one_line(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(tb, "tensorboard_installed", lambda: False)
    with caplog.at_level(logging.WARNING, logger="tcjepa.train"):
        assert tb.open_tensorboard(None, tmp_path) is None  # unset: silently off
        assert not caplog.records
        assert tb.open_tensorboard(True, tmp_path) is None
    assert len(caplog.records) == 1 and "pip install tensorboard" in caplog.records[0].getMessage()
    assert tb.open_tensorboard(False, tmp_path) is None
    assert not list(tmp_path.iterdir())  # no event file written
