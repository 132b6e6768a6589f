"""Checkpoints: atomic writes, and every unusable checkpoint is a clear error, never a silent restart."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tcjepa.train.checkpoint import CheckpointError, atomic_save, load_checkpoint, rng_state, set_rng_state
from tcjepa.train.loop import pretrain

pytestmark = pytest.mark.usefixtures("single_thread")


def _half_written_save(obj, f, *args, **kwargs) -> None:
    f.write(b"PK\x03\x04 half a checkpoint")
    raise OSError("No space left on device")


def test_failed_write_keeps_the_previous_checkpoint(tiny_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_cfg("train.steps=6", "train.ckpt_every=2", "train.batch_size=4", "train.monitor_every=0")
    real_save = torch.save
    calls = []

    def save(obj, f, *args, **kwargs):
        calls.append(obj["step"])
        if len(calls) == 2:  # the step-4 checkpoint dies half-way
            return _half_written_save(obj, f)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(OSError, match="No space left"):
        pretrain(cfg, progress=False)
    ckpt_dir = Path(cfg.run.dir) / "checkpoints"
    assert calls == [2, 4]
    assert [p.name for p in ckpt_dir.iterdir()] == ["latest.pt"]  # no temporary file left behind
    assert load_checkpoint(ckpt_dir / "latest.pt")["step"] == 2


def test_atomic_save_replaces_only_on_success(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ckpt" / "latest.pt"
    atomic_save({"format": 1, "method": {}, "step": 1}, path)
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", _half_written_save)
    with pytest.raises(OSError):
        atomic_save({"format": 1, "method": {}, "step": 2}, path)
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["latest.pt"]
    monkeypatch.undo()
    atomic_save({"format": 1, "method": {}, "step": 3}, path)
    assert load_checkpoint(path)["step"] == 3


def test_resume_without_a_checkpoint(tiny_cfg) -> None:
    cfg = tiny_cfg()
    with pytest.raises(CheckpointError, match=r"no checkpoint at .*checkpoints/latest\.pt"):
        pretrain(cfg, resume=True, progress=False)


def _copy_run(trained_run, tiny_cfg, run_overrides, *overrides: str):
    _, source = trained_run
    cfg = tiny_cfg(*run_overrides, *overrides)
    latest = Path(cfg.run.dir) / "checkpoints" / "latest.pt"
    latest.parent.mkdir(parents=True)
    shutil.copy(source / "checkpoints" / "latest.pt", latest)
    return cfg, latest


def test_truncated_checkpoint(trained_run, tiny_cfg, run_overrides) -> None:
    cfg, latest = _copy_run(trained_run, tiny_cfg, run_overrides)
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable") as err:
        pretrain(cfg, resume=True, progress=False)
    assert str(latest) in str(err.value) and "step_<N>.pt" in str(err.value)


def test_foreign_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "latest.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match="not a tcjepa training checkpoint") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_incompatible_config(trained_run, tiny_cfg, run_overrides) -> None:
    cfg, latest = _copy_run(trained_run, tiny_cfg, run_overrides, "model.encoder.embed_dim=32")
    with pytest.raises(CheckpointError, match="different configuration") as err:
        pretrain(cfg, resume=True, progress=False)
    message = str(err.value)
    assert str(latest) in message and "model.encoder.embed_dim: checkpoint has 64, this command has 32" in message


def test_settings_that_do_not_change_the_result_may_differ(trained_run, tiny_cfg, run_overrides) -> None:
    cfg, latest = _copy_run(
        trained_run, tiny_cfg, run_overrides, "train.steps=21", "train.log_every=7", "text.cache_mb=8"
    )
    # A longer run changes the schedules, so it needs the explicit opt-in (refused without it: test_loop_regime).
    pretrain(cfg, resume=True, progress=False, allow_schedule_change=True)
    assert load_checkpoint(latest)["step"] == 21


def test_new_run_never_overwrites_an_existing_one(trained_run, tiny_cfg, run_overrides) -> None:
    cfg, latest = _copy_run(trained_run, tiny_cfg, run_overrides)
    before = latest.read_bytes()
    with pytest.raises(CheckpointError, match="already holds a run.*--resume"):
        pretrain(cfg, progress=False)
    assert latest.read_bytes() == before


def test_rng_state_round_trip() -> None:
    import random

    import numpy as np

    state = rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_keys_added_later_are_read_with_the_behaviour_old_runs_had() -> None:
    from tcjepa.config import load_config
    from tcjepa.train.checkpoint import config_differences

    current = load_config("tiny").to_dict()
    old = load_config("tiny").to_dict()
    del old["mask"]["draw"], old["mask"]["truncate"]
    # Before mask.draw existed, block sizes were drawn independently: not the reference draw of today.
    assert config_differences(old, current) == ["mask.draw: checkpoint has 'independent', this command has 'reference'"]
    old["mask"]["draw"] = "reference"  # saved after mask.draw, before mask.truncate: truncation was the only way
    assert config_differences(old, current) == []
    del old["data"]["path"]  # saved before data.path: the run read no files
    assert config_differences(old, current) == []
    del old["model"]["predictor"]["caption_fusion"]  # saved before the option: max over captions was the only one
    assert config_differences(old, current) == []
    current["model"]["predictor"]["caption_fusion"] = "mean"
    assert config_differences(old, current) == [
        "model.predictor.caption_fusion: checkpoint has 'max', this command has 'mean'"
    ]
    old["data"]["on_error"] = "raise"  # a finished run met no bad input under raise: skip trains the same
    current["model"]["predictor"]["caption_fusion"] = "max"
    assert config_differences(old, current) == []
